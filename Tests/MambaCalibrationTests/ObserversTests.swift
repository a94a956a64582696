import MambaCalibration
import MambaTensors
import TestSupport
import XCTest

/// Observers against brute force on random data, and merge = one pass.
final class ObserversTests: XCTestCase {
    func randomTensor(rows: Int, cols: Int, seed: UInt64, scale: Float = 3) -> Tensor {
        var rng = SeededRandom(seed: seed)
        // Heavy-ish tails and an outlier channel, so percentiles and maxima differ.
        return Tensor(shape: [rows, cols], storage: (0..<(rows * cols)).map { i in
            let g = Float(rng.nextGaussian()) * scale
            return i % cols == 3 ? g * 20 : g * g * g / 10
        })
    }

    func testChannelRangeMatchesBruteForce() {
        let x = randomTensor(rows: 37, cols: 11, seed: freshSeed(in: 1...1000))
        var r = ChannelRange(channels: 11)
        r.update(x)
        for j in 0..<11 {
            let col = (0..<37).map { x.storage[$0 * 11 + j] }
            XCTAssertEqual(r.min[j], col.min()!)
            XCTAssertEqual(r.max[j], col.max()!)
            XCTAssertEqual(r.absmax[j], col.map(abs).max()!)
        }
    }

    func testHistogramQuantileIsWithinOneBinOfSorting() {
        let x = randomTensor(rows: 301, cols: 13, seed: freshSeed(in: 1...1000))
        var h = MagnitudeHistogram()
        h.update(x)
        XCTAssertEqual(h.total, Double(x.count))
        let sorted = x.storage.map(abs).sorted()
        for q in [0.5, 0.9, 0.999, 1.0] {
            let exact = sorted[min(sorted.count - 1, Int((q * Double(sorted.count)).rounded(.up)) - 1)]
            let got = h.quantile(q, absmax: sorted.last!)
            XCTAssertGreaterThanOrEqual(got, exact, "q \(q)")
            // Within one bin: a bin is 1/16 of its octave wide.
            XCTAssertLessThanOrEqual(got, exact * (1 + 1.0 / 16) * 1.0001, "q \(q)")
        }
        XCTAssertEqual(h.quantile(1, absmax: sorted.last!), sorted.last!)
    }

    func testHistogramBinsAreLogSpaced() {
        for v: Float in [1e-30, 0.001, 0.5, 1, 3.3, 1e6] {
            let b = MagnitudeHistogram.bin(of: v)
            XCTAssertEqual(MagnitudeHistogram.bin(of: -v), b)
            XCTAssertLessThan(v, MagnitudeHistogram.upperEdge(b))
            XCTAssertGreaterThanOrEqual(v, b == 0 ? 0 : MagnitudeHistogram.upperEdge(b - 1))
        }
        // 16 bins per octave.
        XCTAssertEqual(MagnitudeHistogram.bin(of: 2) - MagnitudeHistogram.bin(of: 1), 16)
    }

    func testMomentsMatchTwoPassDouble() {
        let x = randomTensor(rows: 53, cols: 9, seed: freshSeed(in: 1...1000))
        var m = Moments(channels: 9)
        m.update(x.rows(0..<20))
        m.update(x.rows(20..<53))
        // Two-pass reference in Double.
        let n = 53.0
        let xd = x.storage.map(Double.init)
        let mean = (0..<9).map { j in (0..<53).reduce(0.0) { $0 + xd[$1 * 9 + j] } / n }
        let cov = m.covariance, second = m.secondMoment
        for i in 0..<9 {
            for j in 0..<9 {
                let c = (0..<53).reduce(0.0) { $0 + (xd[$1 * 9 + i] - mean[i]) * (xd[$1 * 9 + j] - mean[j]) } / n
                let s = (0..<53).reduce(0.0) { $0 + xd[$1 * 9 + i] * xd[$1 * 9 + j] } / n
                XCTAssertEqual(cov[i * 9 + j], c, accuracy: 1e-9 * max(1, abs(c)))
                XCTAssertEqual(second[i * 9 + j], s, accuracy: 1e-9 * max(1, abs(s)))
            }
        }
        XCTAssertEqual(m.count, 53)
    }

    func testMergeEqualsOnePass() {
        let x = randomTensor(rows: 41, cols: 7, seed: freshSeed(in: 1...1000))
        var whole = SiteStatistics(channels: 7, moments: true)
        whole.update(x)
        var a = SiteStatistics(channels: 7, moments: true), b = SiteStatistics(channels: 7, moments: true)
        a.update(x.rows(0..<17))
        b.update(x.rows(17..<41))
        a.merge(b)
        XCTAssertEqual(a.range, whole.range)
        XCTAssertEqual(a.histogram, whole.histogram)
        XCTAssertEqual(a.count, whole.count)
        XCTAssertLessThan(zip(a.sum, whole.sum).map { abs($0 - $1) }.max()!, 1e-9)
        let (ma, mw) = (a.moments!.secondMoment, whole.moments!.secondMoment)
        XCTAssertLessThan(zip(ma, mw).map { abs($0 - $1) }.max()!, 1e-9)
    }
}
