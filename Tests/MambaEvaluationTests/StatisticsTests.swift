import MambaEvaluation
import MambaTensors
import TestSupport
import XCTest

final class StatisticsTests: XCTestCase {
    func testWilsonIntervalKnownValues() {
        let ci = wilsonInterval(successes: 8, trials: 10)       // textbook: [0.490, 0.943]
        XCTAssertEqual(ci.low, 0.490, accuracy: 1e-3)
        XCTAssertEqual(ci.high, 0.943, accuracy: 1e-3)
        let zero = wilsonInterval(successes: 0, trials: 50)
        XCTAssertEqual(zero.low, 0, accuracy: 1e-12)
        XCTAssertEqual(zero.high, 0.0714, accuracy: 1e-3)
        XCTAssertEqual(wilsonInterval(successes: 0, trials: 0), Interval(low: 0, high: 1))
    }

    func testPairedBootstrap() {
        var rng = SeededRandom(seed: freshSeed(in: 0...1_000_000))
        let n = 37
        let w = (0..<n).map { _ in Double(100 + rng.next() % 50) }
        let b = (0..<n).map { w[$0] * (2 + rng.nextGaussian()) }      // noisy across windows
        // A constant per-unit shift is seen exactly, however noisy the units are.
        let shifted = (0..<n).map { b[$0] + 0.01 * w[$0] }
        let ci = pairedBootstrap(shifted, b, weights: w, resamples: 500, seed: 3)
        XCTAssertEqual(ci.low, 0.01, accuracy: 1e-12)
        XCTAssertEqual(ci.high, 0.01, accuracy: 1e-12)
        // Noise around a shift: the interval brackets the point estimate and is seeded.
        let noisy = (0..<n).map { shifted[$0] + 0.05 * w[$0] * rng.nextGaussian() }
        let point = (noisy.reduce(0, +) - b.reduce(0, +)) / w.reduce(0, +)
        let a = pairedBootstrap(noisy, b, weights: w, seed: 9)
        XCTAssertLessThan(a.low, point)
        XCTAssertGreaterThan(a.high, point)
        XCTAssertEqual(a, pairedBootstrap(noisy, b, weights: w, seed: 9))
    }

    func testMeanAndSpread() {
        let (m, s) = meanAndSpread([1, 2, 3, 4])
        XCTAssertEqual(m, 2.5)
        XCTAssertEqual(s, (5.0 / 3).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(meanAndSpread([7]).std, 0)
    }
}
