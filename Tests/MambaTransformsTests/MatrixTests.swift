import MambaTensors
import MambaTransforms
import TestSupport
import XCTest

final class MatrixTests: XCTestCase {
    func random(_ rows: Int, _ cols: Int, _ rng: inout SeededRandom) -> Matrix {
        Matrix(rows: rows, cols: cols, data: (0..<(rows * cols)).map { _ in rng.nextGaussian() })
    }

    /// R1's float32 products (W R, Rᵀ W, in place, in blocks) against the Double ones, with a
    /// randomized Hadamard R (R1's kind) on odd sizes and blocks that do not divide the matrix.
    func testFloat32RotationsMatchDoubleProducts() throws {
        let seed = freshSeed()
        var rng = SeededRandom(seed: seed)
        for (n, other, blockElements) in [(12, 7, BLAS.float32BlockElements), (20, 33, 5 * 20), (40, 3, 40), (28, 61, 1)] {
            let (r, _) = try offlineRotation(n: n, secondMoment: nil, seed: seed)
            XCTAssertLessThan(r.orthogonalityError, 1e-12)
            let reader = random(other, n, &rng), writer = random(n, other, &rng)
            var a = reader, b = writer
            a.rotateInputsFloat32(by: r, blockElements: blockElements)
            b.rotateOutputsFloat32(by: r, blockElements: blockElements)
            for (got, want, what) in [(a, reader.times(r), "W R"), (b, r.transposedTimes(writer), "Rᵀ W")] {
                XCTAssertEqual(got.rows, want.rows)
                XCTAssertEqual(got.cols, want.cols)
                let scale = want.data.map(abs).max()!
                let worst = zip(got.data, want.data).map { abs($0 - $1) }.max()!
                // float32 inputs and sums of n terms: a few ulps of the largest value, far from 0.
                XCTAssertLessThan(worst, 1e-6 * scale, "\(what) n \(n) x \(other) block \(blockElements) seed \(seed)")
                XCTAssertGreaterThan(scale, 0.5)
            }
        }
    }

    /// The checkpoint must not depend on the thread count: R1's float32 products give the same bits
    /// on 1, 2 and 3 threads (OpenBLAS's own sgemm does not on every core: Matrix.swift).
    func testFloat32RotationsAreTheSameOnAnyThreadCount() throws {
        let seed = freshSeed()
        var rng = SeededRandom(seed: seed)
        let n = 96
        let (r, _) = try offlineRotation(n: n, secondMoment: nil, seed: seed)
        let reader = random(301, n, &rng), writer = random(n, 257, &rng)
        var want: (Matrix, Matrix)?
        for threads in [1, 2, 3] {
            var a = reader, b = writer
            BLAS.withThreads(threads) {
                a.rotateInputsFloat32(by: r, blockElements: 40 * n)
                b.rotateOutputsFloat32(by: r, blockElements: 33 * n)
            }
            if let (wa, wb) = want {
                XCTAssertEqual(a, wa, "W R on \(threads) threads, seed \(seed)")
                XCTAssertEqual(b, wb, "Rᵀ W on \(threads) threads, seed \(seed)")
            } else {
                want = (a, b)
                XCTAssertNotEqual(a, reader)
            }
        }
    }

    /// The elementwise loops that split a matrix over OpenBLAS's threads (widening a tensor,
    /// narrowing it back, the smoothings' scalings, the columns' ranges) give the plain loops'
    /// values bit for bit on 1, 2 and 3 threads. 701 x 263 is past Matrix.parallelElements
    /// twice over, so two threads do split it (rows for the loops, columns for the ranges).
    func testElementwiseLoopsAreThePlainLoopsOnAnyThreadCount() {
        let seed = freshSeed()
        var rng = SeededRandom(seed: seed)
        let (rows, cols, scaled) = (701, 263, 97..<650)
        let t = Tensor(shape: [rows, cols], storage: (0..<(rows * cols)).map { _ in Float(rng.nextGaussian()) })
        let s = (0..<cols).map { _ in exp(rng.nextGaussian()) }, sr = scaled.map { _ in exp(rng.nextGaussian()) }
        let wide = t.storage.map(Double.init)
        var byColumn = wide, byRow = wide, absMax = [Double](repeating: 0, count: cols)
        for i in 0..<rows {
            for j in 0..<cols {
                byColumn[i * cols + j] *= s[j]
                if scaled.contains(i) { byRow[i * cols + j] *= sr[i - scaled.lowerBound] }
                absMax[j] = max(absMax[j], abs(wide[i * cols + j]))
            }
        }
        for threads in [1, 2, 3] {
            BLAS.withThreads(threads) {
                let m = Matrix(t)
                XCTAssertEqual(m.data, wide, "widening on \(threads) threads")
                XCTAssertEqual(m.columnAbsMax, absMax, "column ranges on \(threads) threads")
                var a = m, b = m
                a.scaleColumns(s)
                b.scaleRows(sr, in: scaled)
                XCTAssertEqual(a.data, byColumn, "columns scaled on \(threads) threads, seed \(seed)")
                XCTAssertEqual(b.data, byRow, "rows scaled on \(threads) threads, seed \(seed)")
                XCTAssertEqual(a.tensor.storage, byColumn.map(Float.init), "narrowing on \(threads) threads")
                XCTAssertEqual(a.tensor.shape, [rows, cols])
            }
        }
        XCTAssertNotEqual(byColumn, wide)
    }

    /// A tied head's input matrix Rᵀ diag(w) R takes diag(w) R by scaling R's rows
    /// (MethodPlan.headInputTransform): the same bits as the dense product with the diagonal,
    /// whose other terms are exact zeros.
    func testScalingRowsIsTheProductWithADiagonal() throws {
        let seed = freshSeed()
        var rng = SeededRandom(seed: seed)
        let n = 97
        let (r, _) = try offlineRotation(n: n, secondMoment: nil, seed: seed)
        let w = (0..<n).map { _ in exp(rng.nextGaussian()) }
        var scaled = r
        scaled.scaleRows(w)
        XCTAssertEqual(scaled, Matrix.diagonal(w).times(r), "seed \(seed)")
        XCTAssertEqual(r.transposedTimes(scaled), r.transposedTimes(Matrix.diagonal(w).times(r)), "seed \(seed)")
    }
}
