import CMambaKernels
import MambaTensors

// Ops that the MambaQuant transforms introduce into the forward (DESIGN.md section 2); the float
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

/// An online rotation of a linear layer's input: x -> (x * signs) H / sqrt(n) (a randomized
/// Hadamard by the fast transform), then the layer, whose weight was multiplied by the same
/// rotation offline (DESIGN.md section 2, R2 at out_proj's input).
public struct HadamardInputLinear: LinearOp {
    public let signs: [Float]
    public let hadamard: Hadamard
    public let inner: any LinearOp

    public init(signs: [Float], hadamard: Hadamard, inner: any LinearOp) {
        precondition(signs.count == hadamard.size && inner.inFeatures == hadamard.size)
        self.signs = signs; self.hadamard = hadamard; self.inner = inner
    }

    public var inFeatures: Int { inner.inFeatures }
    public var outFeatures: Int { inner.outFeatures }

    public func forward(_ x: Tensor, _ parallelism: Parallelism) -> Tensor {
        inner.forward(rotate(x), parallelism)
    }

    public func rotate(_ x: Tensor) -> Tensor {
        var r = x
        let n = hadamard.size
        var scratch = [Double](repeating: 0, count: n)
        r.storage.withUnsafeMutableBufferPointer { p in
            for row in 0..<x.rows {
                let base = p.baseAddress! + row * n
                for j in 0..<n { base[j] *= signs[j] }
                hadamard.apply(base, scratch: &scratch)
            }
        }
        return r
    }
}
