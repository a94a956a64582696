import Dispatch
import MambaTensors

/// A row-major Double matrix: the offline transforms do all weight arithmetic in Double and cast
/// to Float once at the end (docs/DESIGN.md section 2).
public struct Matrix: Sendable, Equatable {
    public let rows: Int
    public let cols: Int
    public var data: [Double]

    public init(rows: Int, cols: Int, data: [Double]) {
        precondition(data.count == rows * cols, "Matrix: \(data.count) values for [\(rows), \(cols)]")
        self.rows = rows; self.cols = cols; self.data = data
    }

    public init(_ t: Tensor) {
        let (rows, cols) = (t.rows, t.cols)
        precondition(t.storage.count == rows * cols, "Matrix: \(t.storage.count) values for [\(rows), \(cols)]")
        let data = t.storage.withUnsafeBufferPointer { src in
            [Double](unsafeUninitializedCapacity: rows * cols) { dst, initialized in
                Matrix.forEachRowChunk(rows, cols) { r in
                    for k in (r.lowerBound * cols)..<(r.upperBound * cols) { (dst.baseAddress! + k).initialize(to: Double(src[k])) }
                }
                initialized = rows * cols
            }
        }
        self.init(rows: rows, cols: cols, data: data)
    }

    public static func identity(_ n: Int) -> Matrix {
        var m = Matrix(rows: n, cols: n, data: [Double](repeating: 0, count: n * n))
        for i in 0..<n { m.data[i * n + i] = 1 }
        return m
    }

    /// diag(d).
    public static func diagonal(_ d: [Double]) -> Matrix {
        var m = Matrix(rows: d.count, cols: d.count, data: [Double](repeating: 0, count: d.count * d.count))
        for i in 0..<d.count { m.data[i * d.count + i] = d[i] }
        return m
    }

    public var tensor: Tensor {
        let (rows, cols) = (self.rows, self.cols)
        let storage = data.withUnsafeBufferPointer { src in
            [Float](unsafeUninitializedCapacity: rows * cols) { dst, initialized in
                Matrix.forEachRowChunk(rows, cols) { r in
                    for k in (r.lowerBound * cols)..<(r.upperBound * cols) { (dst.baseAddress! + k).initialize(to: Float(src[k])) }
                }
                initialized = rows * cols
            }
        }
        return Tensor(shape: [rows, cols], storage: storage)
    }

    public subscript(_ i: Int, _ j: Int) -> Double {
        get { data[i * cols + j] }
        set { data[i * cols + j] = newValue }
    }

    /// self * b.
    public func times(_ b: Matrix) -> Matrix {
        precondition(cols == b.rows, "Matrix product [\(rows), \(cols)] x [\(b.rows), \(b.cols)]")
        var out = [Double](repeating: 0, count: rows * b.cols)
        data.withUnsafeBufferPointer { a in
            b.data.withUnsafeBufferPointer { bp in
                out.withUnsafeMutableBufferPointer { c in
                    BLAS.dgemm(a.baseAddress!, bp.baseAddress!, into: c.baseAddress!, m: rows, k: cols, n: b.cols)
                }
            }
        }
        return Matrix(rows: rows, cols: b.cols, data: out)
    }

    /// self^T * b.
    public func transposedTimes(_ b: Matrix) -> Matrix {
        precondition(rows == b.rows, "Matrix product [\(cols), \(rows)] x [\(b.rows), \(b.cols)]")
        var out = [Double](repeating: 0, count: cols * b.cols)
        data.withUnsafeBufferPointer { a in
            b.data.withUnsafeBufferPointer { bp in
                out.withUnsafeMutableBufferPointer { c in
                    BLAS.dgemm(a.baseAddress!, bp.baseAddress!, into: c.baseAddress!, m: cols, k: rows, n: b.cols, transposeA: true)
                }
            }
        }
        return Matrix(rows: cols, cols: b.cols, data: out)
    }

    public var transposed: Matrix {
        var out = [Double](repeating: 0, count: rows * cols)
        for i in 0..<rows { for j in 0..<cols { out[j * rows + i] = data[i * cols + j] } }
        return Matrix(rows: cols, cols: rows, data: out)
    }

    /// Rows `range` as a new matrix, and writing them back.
    public func rowBlock(_ range: Range<Int>) -> Matrix {
        Matrix(rows: range.count, cols: cols, data: Array(data[(range.lowerBound * cols)..<(range.upperBound * cols)]))
    }

    public mutating func setRowBlock(_ range: Range<Int>, _ m: Matrix) {
        precondition(m.rows == range.count && m.cols == cols)
        data.replaceSubrange((range.lowerBound * cols)..<(range.upperBound * cols), with: m.data)
    }

    /// Row i scaled by s[i - range.lowerBound] for i in range (all rows by default).
    public mutating func scaleRows(_ s: [Double], in range: Range<Int>? = nil) {
        let r = range ?? 0..<rows
        precondition(s.count == r.count)
        let (cols, first) = (self.cols, r.lowerBound)
        data.withUnsafeMutableBufferPointer { d in
            s.withUnsafeBufferPointer { sp in
                Matrix.forEachRowChunk(r.count, cols) { chunk in
                    for k in chunk { let row = d.baseAddress! + (first + k) * cols; for j in 0..<cols { row[j] *= sp[k] } }
                }
            }
        }
    }

    /// Column j scaled by s[j].
    public mutating func scaleColumns(_ s: [Double]) {
        precondition(s.count == cols)
        let cols = self.cols
        data.withUnsafeMutableBufferPointer { d in
            s.withUnsafeBufferPointer { sp in
                Matrix.forEachRowChunk(rows, cols) { chunk in
                    for i in chunk { let row = d.baseAddress! + i * cols; for j in 0..<cols { row[j] *= sp[j] } }
                }
            }
        }
    }

    /// max_i |self[i, j]| per column j (the input channel's weight range). Threads take columns,
    /// so each maximum is one thread's and the result does not depend on their count.
    public var columnAbsMax: [Double] {
        let (rows, cols) = (self.rows, self.cols)
        var m = [Double](repeating: 0, count: cols)
        data.withUnsafeBufferPointer { d in
            m.withUnsafeMutableBufferPointer { mp in
                Parallelism.ofBLAS.forEachChunk(cols, minimumChunk: max(64, Matrix.parallelElements / max(1, rows))) { c in
                    for i in 0..<rows { let row = d.baseAddress! + i * cols; for j in c { mp[j] = max(mp[j], abs(row[j])) } }
                }
            }
        }
        return m
    }

    /// max |self^T self - I| (0 for an orthogonal matrix).
    public var orthogonalityError: Double {
        let g = transposedTimes(self)
        var e = 0.0
        for i in 0..<cols { for j in 0..<cols { e = max(e, abs(g[i, j] - (i == j ? 1 : 0))) } }
        return e
    }
}

/// v * m for a row vector v (a bias rotated with its output).
public func rowTimes(_ v: [Double], _ m: Matrix) -> [Double] {
    precondition(v.count == m.rows)
    var out = [Double](repeating: 0, count: m.cols)
    for i in 0..<m.rows { for j in 0..<m.cols { out[j] += v[i] * m[i, j] } }
    return out
}

// The elementwise loops over a layer's Double matrices (widening, narrowing, the smoothings'
// scalings) ran on one thread between the products, leaving the second core idle for about a
// tenth of a 7B quantize (docs/PERFORMANCE.md, "Big models: quantize time"). They run between
// OpenBLAS's calls, so they take its threads; each value is computed as before, so nothing
// depends on the thread count.
extension Matrix {
    /// Below about this many values a second thread costs more to wake than it saves.
    static let parallelElements = 1 << 16

    /// body(rows) over contiguous chunks of `0..<rows`, one per thread of OpenBLAS's budget when the matrix is big.
    static func forEachRowChunk(_ rows: Int, _ cols: Int, _ body: (Range<Int>) -> Void) {
        Parallelism.ofBLAS.forEachChunk(rows, minimumChunk: max(1, parallelElements / max(1, cols)), body)
    }
}

// R1 on the weights in float32. R1 is a dense D x D rotation of every residual reader's input
// and writer's output, and in Double its products were half of quantize's time (dgemm at D 4096:
// 825 GFLOP a layer at 7B; docs/PERFORMANCE.md, "Big models: quantize time"). sgemm runs at
// twice dgemm's rate, and the rounding it adds (about sqrt(D) float32 ulps of each weight) is far
// below what the weights' own float32 storage and int8 rounding leave. The products go a block at
// a time and overwrite the matrix: no second [rows, cols] Double alive at once.
//
// The checkpoint must not depend on the thread count, and OpenBLAS's sgemm does: on its Haswell
// and Zen kernels an output's last bits change with the threads of a call and with how many rows
// the call has (measured on a Zen 3, one thread: 0.6% to half of the outputs of a 1,537-row product
// differ from the same rows taken in pieces of 769 down to 7; single- against two-threaded calls
// differ too, 1,516 of the 3,840 outputs of a 40 x 96 x 96 product). So the blocks
// are fixed by the matrix's shape alone, every block is one single-threaded sgemm, and the
// threads (OpenBLAS's count when called: the command's budget) take whole blocks.
extension Matrix {
    /// self <- self R for an n x n R (a linear's input channels rotated: W -> W R), in float32,
    /// a block of rows (`blockElements` values) at a time.
    public mutating func rotateInputsFloat32(by r: Matrix, blockElements: Int = BLAS.float32BlockElements) {
        precondition(r.rows == cols && r.cols == cols, "rotation [\(r.rows), \(r.cols)] for a matrix of \(cols) columns")
        let n = cols, rowCount = rows
        guard rowCount > 0, n > 0 else { return }
        let block = Swift.max(1, Swift.min(rowCount, blockElements / n))
        let rf = r.data.map(Float.init)
        rf.withUnsafeBufferPointer { rp in
            Self.forEachFloat32Block((rowCount + block - 1) / block, elements: block * n, &data) { b, d, ap, cp in
                let i = b * block, m = Swift.min(block, rowCount - i), base = i * n
                for t in 0..<(m * n) { ap[t] = Float(d[base + t]) }
                BLAS.gemm(m: m, n: n, k: n, ap.baseAddress!, lda: n, rp.baseAddress!, ldb: n, transposeB: false, into: cp.baseAddress!, ldc: n)
                for t in 0..<(m * n) { d[base + t] = Double(cp[t]) }
            }
        }
    }

    /// self <- Rᵀ self for an n x n R (a writer's output channels rotated: W -> Rᵀ W), in float32,
    /// a block of columns (`blockElements` values) at a time.
    public mutating func rotateOutputsFloat32(by r: Matrix, blockElements: Int = BLAS.float32BlockElements) {
        precondition(r.rows == rows && r.cols == rows, "rotation [\(r.rows), \(r.cols)] for a matrix of \(rows) rows")
        let n = rows, width = cols
        guard n > 0, width > 0 else { return }
        let block = Swift.max(1, Swift.min(width, blockElements / n))
        let rf = r.data.map(Float.init)
        rf.withUnsafeBufferPointer { rp in
            Self.forEachFloat32Block((width + block - 1) / block, elements: n * block, &data) { b, d, ap, cp in
                let j = b * block, w = Swift.min(block, width - j)
                for i in 0..<n { for t in 0..<w { ap[i * w + t] = Float(d[i * width + j + t]) } }
                BLAS.gemmAccumulate(m: n, n: w, k: n, rp.baseAddress!, lda: n, transposeA: true, ap.baseAddress!, ldb: w,
                                    beta: 0, into: cp.baseAddress!, ldc: w)
                for i in 0..<n { for t in 0..<w { d[i * width + j + t] = Double(cp[i * w + t]) } }
            }
        }
    }

    /// body(block, data, a, c) for every block in `0..<blocks`, OpenBLAS single-threaded, the blocks
    /// dealt to as many threads as OpenBLAS had (each with its own two float32 buffers of
    /// `elements`). Blocks write disjoint parts of `data`.
    static func forEachFloat32Block(
        _ blocks: Int, elements: Int, _ data: inout [Double],
        _ body: (Int, UnsafeMutableBufferPointer<Double>, UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) -> Void
    ) {
        let threads = Swift.max(1, Swift.min(BLAS.threads, blocks))
        var buffers = [Float](repeating: 0, count: threads * 2 * elements)
        data.withUnsafeMutableBufferPointer { d in
            buffers.withUnsafeMutableBufferPointer { bp in
                let shared = UncheckedSendable((d, bp))
                BLAS.withThreads(1) {
                    withoutActuallyEscaping(body) { body in
                        let work = UncheckedSendable(body)
                        DispatchQueue.concurrentPerform(iterations: threads) { slot in
                            let (d, bp) = shared.value
                            let a = UnsafeMutableBufferPointer(rebasing: bp[(2 * slot * elements)..<((2 * slot + 1) * elements)])
                            let c = UnsafeMutableBufferPointer(rebasing: bp[((2 * slot + 1) * elements)..<((2 * slot + 2) * elements)])
                            for b in stride(from: slot, to: blocks, by: threads) { work.value(b, d, a, c) }
                        }
                    }
                }
            }
        }
    }
}
