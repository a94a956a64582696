import CLapacke
import MambaTensors

/// The one file that calls LAPACKE (docs/DESIGN.md section 4): eigendecomposition (KLT) and GPTQ's Cholesky.
public enum Eigen {
    /// Eigendecomposition of a symmetric n x n matrix (row-major) by LAPACKE_dsyevd: eigenvalues in
    /// descending order and the eigenvectors as the columns of a row-major n x n matrix. Runs with
    /// OpenBLAS on one thread: dsyevd's last bits change with OpenBLAS's thread count (measured at
    /// n 384: another R1, so other checkpoint bytes on --threads 2 than on 1), dgemm's do not.
    public static func symmetric(_ a: [Double], n: Int) throws -> (values: [Double], vectors: [Double]) {
        precondition(a.count == n * n)
        var m = a
        var w = [Double](repeating: 0, count: n)
        let info = BLAS.singleThreaded {
            m.withUnsafeMutableBufferPointer { mp in
                w.withUnsafeMutableBufferPointer { wp in
                    LAPACKE_dsyevd(LAPACK_ROW_MAJOR, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "U")), Int32(n), mp.baseAddress!, Int32(n), wp.baseAddress!)
                }
            }
        }
        guard info == 0 else { throw MambaError(.badInput, "eigendecomposition failed (LAPACKE_dsyevd info \(info)); the statistics may hold NaN or Inf") }
        // dsyevd returns ascending values: reverse to descending, with their columns.
        var vectors = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { vectors[i * n + j] = m[i * n + (n - 1 - j)] } }
        return (w.reversed(), vectors)
    }

    /// The upper Cholesky factor U of the inverse of a symmetric positive definite n x n matrix
    /// (row-major), inverse(a) = Uᵀ U, with U's strict lower triangle zero: GPTQ's `Hinv`
    /// (dpotrf, dpotri, dpotrf). nil when `a` is not positive definite.
    public static func inverseCholeskyUpper(_ a: [Double], n: Int) -> [Double]? {
        precondition(a.count == n * n)
        var m = a
        let uplo = { (c: Character) in CChar(UInt8(ascii: c.unicodeScalars.first!)) }
        let ok: Bool = m.withUnsafeMutableBufferPointer { mp in
            guard LAPACKE_dpotrf(LAPACK_ROW_MAJOR, uplo("L"), Int32(n), mp.baseAddress!, Int32(n)) == 0,
                  LAPACKE_dpotri(LAPACK_ROW_MAJOR, uplo("L"), Int32(n), mp.baseAddress!, Int32(n)) == 0 else { return false }
            // dpotri leaves the inverse in the lower triangle: mirror it, then factor it from above.
            for i in 0..<n { for j in (i + 1)..<max(i + 1, n) { mp[i * n + j] = mp[j * n + i] } }
            return LAPACKE_dpotrf(LAPACK_ROW_MAJOR, uplo("U"), Int32(n), mp.baseAddress!, Int32(n)) == 0
        }
        guard ok else { return nil }
        for i in 0..<n { for j in 0..<i { m[i * n + j] = 0 } }
        return m
    }

    /// A seeded random orthogonal matrix (the eigenvectors of a random symmetric Gaussian matrix,
    /// Haar-like), for sizes with no Hadamard construction.
    public static func randomOrthogonal(n: Int, seed: UInt64) throws -> [Double] {
        var rng = SeededRandom(seed: seed)
        var g = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0...i { let v = rng.nextGaussian(); g[i * n + j] = v; g[j * n + i] = v } }
        return try symmetric(g, n: n).vectors
    }
}
