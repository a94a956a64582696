import CMambaKernels
import MambaTensors

// Float ops over weights kept in the checkpoint's 16-bit type (BF16 or F16): the float model of a
// 16-bit checkpoint holds its matrices as stored, half the bytes of float32 (a 7B BF16 model is
// 14 GB stored and would be 28 GB widened). The math is float32 throughout: every 16-bit value
// is exactly a float32, so only the summation order differs from widening the whole matrix first.
// Kernels: CMambaKernels/half.c (scalar reference and AVX2 path, compared in HalfOpsTests).

/// A 16-bit float format and its kernel constant.
public enum HalfFormat: Sendable, Equatable {
    case bf16, f16

    public init?(_ dtype: DType) {
        switch dtype {
        case .bf16: self = .bf16
        case .f16: self = .f16
        default: return nil
        }
    }

    var kernelFormat: Int32 { self == .bf16 ? Int32(MQ_HALF_BF16) : Int32(MQ_HALF_F16) }
    public var dtype: DType { self == .bf16 ? .bf16 : .f16 }
}

/// A row-major [rows, cols] matrix of 16-bit floats.
public struct HalfMatrix: Sendable {
    public let format: HalfFormat
    public let rows: Int
    public let cols: Int
    public let bits: [UInt16]

    public init(format: HalfFormat, rows: Int, cols: Int, bits: [UInt16]) {
        precondition(bits.count == rows * cols, "a [\(rows), \(cols)] matrix needs \(rows * cols) values, got \(bits.count)")
        (self.format, self.rows, self.cols, self.bits) = (format, rows, cols, bits)
    }

    /// Every value widened to float32 (the reference the fast paths are tested against).
    public func widened() -> Tensor {
        var out = Tensor(zeros: [rows, cols])
        bits.withUnsafeBufferPointer { w in
            out.storage.withUnsafeMutableBufferPointer { o in
                mq_widen_half(w.baseAddress!, format.kernelFormat, o.baseAddress!, w.count)
            }
        }
        return out
    }

    public var byteCount: Int { 2 * bits.count }
}

/// y = x W^T (+ b) with W in 16 bits. Up to `gemvRows` input rows (decode) run the GEMV kernel,
/// which reads each weight once per call; longer inputs widen a panel of weight rows at a time
/// (about 4 MB of float32) into a scratch buffer and hand it to OpenBLAS's sgemm, so prefill
/// keeps sgemm's speed while the model stays in 16 bits.
public struct HalfLinear: LinearOp {
    public let weight: HalfMatrix   // [out, in]
    public let bias: Tensor?        // [out]
    /// Inputs of at most this many rows take the GEMV kernel (four rows share a weight load).
    public static let gemvRows = 8
    /// Scratch of a widened panel, in floats.
    static let panelFloats = 1 << 20

    public init(weight: HalfMatrix, bias: Tensor? = nil) {
        self.weight = weight
        self.bias = bias
    }

    public var inFeatures: Int { weight.cols }
    public var outFeatures: Int { weight.rows }

    public func forward(_ x: Tensor, _ parallelism: Parallelism) -> Tensor {
        precondition(x.cols == weight.cols, "linear: input has \(x.cols) columns, weight [\(weight.rows), \(weight.cols)]")
        let (m, k, n) = (x.rows, weight.cols, weight.rows)
        var y = Tensor(zeros: [m, n])
        guard m > 0, n > 0 else { return y }
        let format = weight.format.kernelFormat
        x.storage.withUnsafeBufferPointer { xp in
            weight.bits.withUnsafeBufferPointer { wp in
                y.storage.withUnsafeMutableBufferPointer { yp in
                    let (xb, wb, yb) = (xp.baseAddress!, wp.baseAddress!, yp.baseAddress!)
                    if m <= Self.gemvRows {
                        // Each chunk writes its own output columns.
                        parallelism.forEachChunk(n, minimumChunk: 64) { rows in
                            mq_gemv_half(xb, Int32(m), Int32(k), wb, format,
                                         Int32(rows.lowerBound), Int32(rows.upperBound), yb, Int32(n))
                        }
                    } else {
                        let panelRows = min(n, max(16, Self.panelFloats / max(k, 1)))
                        var panel = [Float](repeating: 0, count: panelRows * k)
                        panel.withUnsafeMutableBufferPointer { pp in
                            for start in stride(from: 0, to: n, by: panelRows) {
                                let r = min(panelRows, n - start)
                                mq_widen_half(wb + start * k, format, pp.baseAddress!, r * k)
                                BLAS.matmulTransposed(xb, rows: m, inner: k, pp.baseAddress!, outputs: r, into: yb + start, ldc: n)
                            }
                        }
                    }
                }
            }
        }
        if let bias { addRowVector(&y, bias) }
        return y
    }
}

/// Token ids -> rows of a 16-bit table, widened on lookup.
public struct HalfEmbedding: EmbeddingOp {
    public let table: HalfMatrix    // [V, D]

    public init(table: HalfMatrix) { self.table = table }
    public var vocabSize: Int { table.rows }

    public func forward(_ tokens: [Int]) -> Tensor {
        let d = table.cols
        var out = Tensor(zeros: [tokens.count, d])
        table.bits.withUnsafeBufferPointer { src in
            out.storage.withUnsafeMutableBufferPointer { dst in
                for (i, t) in tokens.enumerated() {
                    mq_widen_half(src.baseAddress! + t * d, table.format.kernelFormat, dst.baseAddress! + i * d, d)
                }
            }
        }
        return out
    }
}

/// A matrix as the float runtime holds it: float32, or 16 bits as the checkpoint stores it.
public enum StoredMatrix: Sendable {
    case float(Tensor)
    case half(HalfMatrix)

    public func linear(bias: Tensor?) -> any LinearOp {
        switch self {
        case .float(let t): FloatLinear(weight: t, bias: bias)
        case .half(let h): HalfLinear(weight: h, bias: bias)
        }
    }

    public func embedding() -> any EmbeddingOp {
        switch self {
        case .float(let t): FloatEmbedding(table: t)
        case .half(let h): HalfEmbedding(table: h)
        }
    }
}
