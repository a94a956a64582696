import MambaCalibration
import MambaTensors
import MambaTransforms
import TestSupport
import XCTest

final class KLTTests: XCTestCase {
    /// Correlated activations with an outlier channel: x = g A, g Gaussian.
    func correlated(rows: Int, cols: Int, seed: UInt64) -> Tensor {
        var rng = SeededRandom(seed: seed)
        let a = (0..<(cols * cols)).map { _ in rng.nextGaussian() }
        var x = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            let g = (0..<cols).map { _ in rng.nextGaussian() }
            for j in 0..<cols {
                var v = 0.0
                for k in 0..<cols { v += g[k] * a[k * cols + j] }
                x[r * cols + j] = Float(j == 5 ? v * 12 : v)
            }
        }
        return Tensor(shape: [rows, cols], storage: x)
    }

    func testKLTIsOrthonormalEigenbasis() throws {
        let n = 24
        var m = Moments(channels: n)
        m.update(correlated(rows: 400, cols: n, seed: UInt64.random(in: 1...1000)))
        let sigma = m.secondMoment
        let (k, values) = try kltBasis(secondMoment: sigma, n: n)
        XCTAssertLessThan(k.orthogonalityError, 1e-10)
        XCTAssertEqual(values, values.sorted(by: >))
        // |Sigma K - K Lambda| small.
        let s = Matrix(rows: n, cols: n, data: sigma)
        let sk = s.times(k)
        var worst = 0.0
        for i in 0..<n { for j in 0..<n { worst = max(worst, abs(sk[i, j] - k[i, j] * values[j])) } }
        XCTAssertLessThan(worst, 1e-9 * values[0])
    }

    /// absmax/rms of x K H on held-out activations is no worse than x H (DESIGN.md section 2).
    func testKLTThenHadamardFlattensNoWorseThanHadamard() throws {
        let n = 24
        let seed = UInt64.random(in: 1...1000)
        var m = Moments(channels: n)
        let train = correlated(rows: 2000, cols: n, seed: seed)
        m.update(train)
        // Held out: same distribution (same A), other rows.
        let all = correlated(rows: 3000, cols: n, seed: seed)
        let held = all.rows(2000..<3000)
        let (kh, kind) = try offlineRotation(n: n, secondMoment: m.secondMoment, seed: 3)
        let (h, _) = try offlineRotation(n: n, secondMoment: nil, seed: 3)
        XCTAssertEqual(kind, .kltHadamard)
        func peakToRMS(_ r: Matrix) -> Double {
            let y = Matrix(held).times(r)
            // per-channel mean squares: the worst channel's absmax over the overall rms
            let rms = (y.data.reduce(0) { $0 + $1 * $1 } / Double(y.data.count)).squareRoot()
            return y.data.map(abs).max()! / rms
        }
        XCTAssertLessThanOrEqual(peakToRMS(kh), peakToRMS(h) * 1.05)
        // And the KLT equalizes per-channel mean squares of x K H (within sampling noise).
        let y = Matrix(held).times(kh)
        let ms = (0..<n).map { j in (0..<y.rows).reduce(0.0) { $0 + y[$1, j] * y[$1, j] } / Double(y.rows) }
        XCTAssertLessThan(ms.max()! / ms.min()!, 1.6)
    }

    func testRandomOrthogonalFallback() throws {
        let (r, kind) = try offlineRotation(n: 7, secondMoment: nil, seed: 1)
        XCTAssertEqual(kind, .randomOrthogonal)
        XCTAssertLessThan(r.orthogonalityError, 1e-10)
        XCTAssertEqual(try offlineRotation(n: 7, secondMoment: nil, seed: 1).0, r)
    }
}
