import COpenBLAS

/// The few CBLAS calls the float path needs. Weights are [out, in] row-major (docs/DESIGN.md section 1),
/// so a linear layer is C = A * W^T: sgemm with W transposed, or sgemv for one row.
public enum BLAS {
    /// Runs `body` with OpenBLAS on `threads` threads, then restores its thread count.
    public static func withThreads<T>(_ threads: Int, _ body: () throws -> T) rethrows -> T {
        let before = openblas_get_num_threads()
        openblas_set_num_threads(Int32(max(1, threads)))
        defer { openblas_set_num_threads(before) }
        return try body()
    }

    /// OpenBLAS's thread count now (the command's budget, `Parallelism.applyToBLAS`, or 1 inside
    /// work that runs its own threads).
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// `withThreads(1, body)`: for LAPACK routines whose results depend on OpenBLAS's thread count.
    public static func singleThreaded<T>(_ body: () throws -> T) rethrows -> T { try withThreads(1, body) }

    /// c[m, n] = a[m, k] * w[n, k]^T (+ c if accumulate); c's rows are `ldc` apart (default n).
    public static func matmulTransposed(
        _ a: UnsafePointer<Float>, rows m: Int, inner k: Int,
        _ w: UnsafePointer<Float>, outputs n: Int,
        into c: UnsafeMutablePointer<Float>, ldc: Int? = nil, accumulate: Bool = false
    ) {
        guard m > 0, n > 0 else { return }
        if m == 1 {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), 1, w, Int32(k), a, 1, accumulate ? 1 : 0, c, 1)
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k),
                        1, a, Int32(k), w, Int32(k), accumulate ? 1 : 0, c, Int32(ldc ?? n))
        }
    }

    /// x [m, k] * w[n, k]^T as a new tensor [m, n].
    public static func linear(_ x: Tensor, _ w: Tensor) -> Tensor {
        precondition(x.cols == w.cols, "linear: input has \(x.cols) columns, weight \(shapeString(w.shape))")
        var out = Tensor(zeros: [x.rows, w.rows])
        x.storage.withUnsafeBufferPointer { a in
            w.storage.withUnsafeBufferPointer { b in
                out.storage.withUnsafeMutableBufferPointer { c in
                    matmulTransposed(a.baseAddress!, rows: x.rows, inner: x.cols, b.baseAddress!, outputs: w.rows, into: c.baseAddress!)
                }
            }
        }
        return out
    }

    /// `linear(x, w)` under a thread budget: with spinning workers (decode steps, OpenBLAS held to
    /// one thread) the output columns are split between them, each part one single-threaded
    /// product over its rows of w; otherwise OpenBLAS's own threads split it.
    public static func linear(_ x: Tensor, _ w: Tensor, _ parallelism: Parallelism) -> Tensor {
        guard parallelism.workers != nil, x.rows > 0, x.rows * w.rows * w.cols >= 2 * parallelism.minimumWorkPerThread else { return linear(x, w) }
        precondition(x.cols == w.cols, "linear: input has \(x.cols) columns, weight \(shapeString(w.shape))")
        let (m, n, k) = (x.rows, w.rows, w.cols)
        var out = Tensor(zeros: [m, n])
        x.storage.withUnsafeBufferPointer { a in
            w.storage.withUnsafeBufferPointer { b in
                out.storage.withUnsafeMutableBufferPointer { c in
                    let (ap, bp, cp) = (UncheckedSendable(a.baseAddress!), UncheckedSendable(b.baseAddress!), UncheckedSendable(c.baseAddress!))
                    parallelism.forEachChunk(n, minimumChunk: max(1, parallelism.minimumWorkPerThread / (m * k))) { cols in
                        // Disjoint columns of c: each part writes its own.
                        matmulTransposed(ap.value, rows: m, inner: k, bp.value + cols.lowerBound * k, outputs: cols.count,
                                         into: cp.value + cols.lowerBound, ldc: n)
                    }
                }
            }
        }
        return out
    }
}

extension BLAS {
    /// c[m, n] = alpha a[m, k] b[n, k]^T (transposeB) or alpha a[m, k] b[k, n], every operand with its
    /// own row stride (heads inside wider rows: attention's scores and values).
    /// With `beta`, c = alpha a b + beta c.
    public static func gemm(m: Int, n: Int, k: Int, alpha: Float = 1, _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                            transposeB: Bool, beta: Float = 0, into c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0, n > 0, k > 0 else { return }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

extension BLAS {
    /// c[m, n] = a[k, m]^T b[k, n] (transposeA) or a[m, k] b[k, n], plus beta c; row strides given.
    public static func gemmAccumulate(m: Int, n: Int, k: Int, _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool,
                                      _ b: UnsafePointer<Float>, ldb: Int, beta: Float = 1, into c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0, n > 0, k > 0 else { return }
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

extension BLAS {
    /// s[c, c] += x[l, c]^T * x[l, c] in Double, upper triangle only (dsyrk): the second-moment
    /// sums of calibration. The lower triangle is left as it was.
    public static func accumulateGramUpper(_ x: UnsafePointer<Double>, rows l: Int, cols c: Int, into s: UnsafeMutablePointer<Double>) {
        guard l > 0, c > 0 else { return }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(c), Int32(l), 1, x, Int32(c), 1, s, Int32(c))
    }
}

extension BLAS {
    /// Elements of each float32 block of R1's products (input and output alike, Matrix.
    /// rotateInputsFloat32; each thread holds two): large enough that OpenBLAS's packing of R, once
    /// per call, stays a few percent of the product, small enough that a layer's matrices give every
    /// thread blocks; MemoryEstimate.quantize counts them.
    public static let float32BlockElements = 1 << 22

    /// c[m, n] -= a[m, k] * b[k, n] in Double with row strides (GPTQ's lazy block update).
    public static func dgemmSubtract(_ a: UnsafePointer<Double>, lda: Int, _ b: UnsafePointer<Double>, ldb: Int,
                                     into c: UnsafeMutablePointer<Double>, ldc: Int, m: Int, k: Int, n: Int) {
        guard m > 0, n > 0, k > 0 else { return }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), -1, a, Int32(lda), b, Int32(ldb), 1, c, Int32(ldc))
    }

    /// c[m, n] = a[m, k] * b[k, n] in Double (the offline transforms' arithmetic).
    public static func dgemm(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, into c: UnsafeMutablePointer<Double>, m: Int, k: Int, n: Int, transposeA: Bool = false) {
        guard m > 0, n > 0, k > 0 else { return }
        cblas_dgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(transposeA ? m : k), b, Int32(n), 0, c, Int32(n))
    }
}

extension BLAS {
    /// x[i] *= factor for i < count (sscal).
    public static func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        guard count > 0 else { return }
        cblas_sscal(Int32(count), factor, x, 1)
    }
}
