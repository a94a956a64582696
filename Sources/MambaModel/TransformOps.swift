import CMambaKernels
import MambaTensors

// Ops that the MambaQuant transforms introduce into the forward (docs/DESIGN.md section 2); the float
// transformed model and the quantized model both use them.

/// S-SiLU gating: y * z * sigmoid(s * z) per channel. With z = z_orig / s this equals
/// y * SiLU(z_orig) / s: the smoothing divisor of out_proj's input, absorbed by the gate.
public struct SmoothSiLUGate: GateOp {
    public let s: [Float]      // [E]

    public init(s: [Float]) { self.s = s }

    public func forward(y: Tensor, z: Tensor) -> Tensor {
        let e = s.count
        precondition(z.cols == e && y.shape == z.shape)
        var sz = z
        sz.storage.withUnsafeMutableBufferPointer { p in
            s.withUnsafeBufferPointer { sp in
                for r in 0..<z.rows { for j in 0..<e { p[r * e + j] *= sp[j] } }
            }
        }
        // silu(s z) / s = z * sigmoid(s z)
        var g = silu(sz)
        g.storage.withUnsafeMutableBufferPointer { gp in
            y.storage.withUnsafeBufferPointer { yp in
                s.withUnsafeBufferPointer { sp in
                    for r in 0..<z.rows { for j in 0..<e { gp[r * e + j] *= yp[r * e + j] / sp[j] } }
                }
            }
        }
        return g
    }
}

/// The online rotation of out_proj's input (docs/DESIGN.md section 2, R2): g -> (g * signs) H / sqrt(n)
/// by the fast transform; out_proj's weight was multiplied by the same rotation offline.
public struct OnlineHadamard: Sendable {
    public let signs: [Float]
    public let hadamard: Hadamard
    let factor: [Float]

    public init(signs: [Float], hadamard: Hadamard) {
        precondition(signs.count == hadamard.size)
        self.signs = signs
        self.hadamard = hadamard
        factor = hadamard.factor.map(Float.init)
    }

    public var size: Int { hadamard.size }

    /// In float32 (CMambaKernels/hadamard.c); `rotateReference` is the double-precision definition.
    public func rotate(_ x: Tensor) -> Tensor {
        precondition(x.cols == size)
        var r = x
        var scratch = [Float](repeating: 0, count: size)
        r.storage.withUnsafeMutableBufferPointer { p in
            mq_hadamard_rows_f32(p.baseAddress, Int32(x.rows), Int32(size), Int32(hadamard.powerOfTwo), Int32(hadamard.factorSize),
                                 factor, signs, &scratch)
        }
        return r
    }

    public func rotateReference(_ x: Tensor) -> Tensor {
        precondition(x.cols == size)
        var r = x
        let n = size
        var scratch = [Double](repeating: 0, count: n)
        r.storage.withUnsafeMutableBufferPointer { p in
            signs.withUnsafeBufferPointer { sg in
                for row in 0..<x.rows {
                    let base = p.baseAddress! + row * n
                    for j in 0..<n { base[j] *= sg[j] }
                    hadamard.apply(base, scratch: &scratch)
                }
            }
        }
        return r
    }
}
