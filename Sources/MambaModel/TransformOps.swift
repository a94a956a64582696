import CMambaKernels
import MambaTensors

// Ops that the MambaQuant transforms introduce into the forward (docs/DESIGN.md section 2); the float
// transformed model and the quantized model both use them.

/// S-SiLU gating: y * z * sigmoid(s * z) per channel. With z = z_orig / s this equals
/// y * SiLU(z_orig) / s: the smoothing divisor of out_proj's input, absorbed by the gate.
public struct SmoothSiLUGate: GateOp {
    public let s: [Float]      // [E]

    public init(s: [Float]) { self.s = s }

    public func forward(y: Tensor, z: Tensor, _ parallelism: Parallelism) -> Tensor {
        precondition(z.cols == s.count)
        return gateRows(y: y, z: z, smoothing: s, parallelism)   // silu(s z) / s = z * sigmoid(s z)
    }

    public func forward(y: Tensor, z: Tensor, normalizedBy norm: GroupRMSNorm, _ parallelism: Parallelism) -> Tensor {
        precondition(z.cols == s.count)
        return gateRows(y: y, z: z, smoothing: s, normalizedBy: norm, parallelism)
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
    public func rotate(_ x: Tensor, _ parallelism: Parallelism = .serial) -> Tensor {
        precondition(x.cols == size)
        var r = x
        let (n, p, m) = (size, Int32(hadamard.powerOfTwo), Int32(hadamard.factorSize))
        r.storage.withUnsafeMutableBufferPointer { xp in
            factor.withUnsafeBufferPointer { fp in
                signs.withUnsafeBufferPointer { sp in
                    let (xv, fv, sv) = (UncheckedSendable(xp.baseAddress!), UncheckedSendable(fp.baseAddress!), UncheckedSendable(sp.baseAddress!))
                    parallelism.forEachChunk(x.rows, minimumChunk: 8) { rows in
                        var scratch = [Float](repeating: 0, count: n)
                        mq_hadamard_rows_f32(xv.value + rows.lowerBound * n, Int32(rows.count), Int32(n), p, m, fv.value, sv.value, &scratch)
                    }
                }
            }
        }
        return r
    }

    /// `rotate` of `rows` rows of `size` floats in place (row stride `size`); `scratch` holds
    /// `size` floats. For a caller that fuses the rotation into its next pass over the rows
    /// (Int8Linear's input quantization).
    public func rotateRows(_ x: UnsafeMutablePointer<Float>, rows: Int, scratch: UnsafeMutablePointer<Float>) {
        factor.withUnsafeBufferPointer { f in
            signs.withUnsafeBufferPointer { s in
                mq_hadamard_rows_f32(x, Int32(rows), Int32(size), Int32(hadamard.powerOfTwo), Int32(hadamard.factorSize), f.baseAddress, s.baseAddress, scratch)
            }
        }
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
