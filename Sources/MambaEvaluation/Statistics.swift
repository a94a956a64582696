import Foundation
import MambaTensors

/// A two-sided 95% interval.
public struct Interval: Sendable, Equatable, Codable {
    public var low: Double
    public var high: Double

    public init(low: Double, high: Double) {
        self.low = low
        self.high = high
    }
}

/// Wilson score interval (95%) of a proportion: well behaved at small n and near 0 or 1, unlike
/// the normal approximation.
public func wilsonInterval(successes: Int, trials: Int) -> Interval {
    guard trials > 0 else { return Interval(low: 0, high: 1) }
    let z = 1.959963984540054
    let n = Double(trials), p = Double(successes) / n
    let denom = 1 + z * z / n
    let center = (p + z * z / (2 * n)) / denom
    let half = z * (p * (1 - p) / n + z * z / (4 * n * n)).squareRoot() / denom
    return Interval(low: max(0, center - half), high: min(1, center + half))
}

/// Paired bootstrap (Efron and Tibshirani 1993; Koehn 2004 for paired system comparisons) of the
/// difference of a ratio statistic sum(a)/sum(w) - sum(b)/sum(w) over units (evaluation windows or
/// task items) resampled with replacement, `resamples` times with a seeded generator: the 2.5th and
/// 97.5th percentiles of the difference. Both models see the same resampled units, which is what
/// makes small differences visible above the noise of the text.
public func pairedBootstrap(_ a: [Double], _ b: [Double], weights w: [Double], resamples: Int = 1000, seed: UInt64 = 0) -> Interval {
    precondition(a.count == b.count && a.count == w.count, "paired bootstrap: sizes differ")
    let n = a.count
    guard n > 1 else {
        let d = n == 1 ? (a[0] - b[0]) / w[0] : 0
        return Interval(low: d, high: d)
    }
    var rng = SeededRandom(seed: seed)
    var diffs: [Double] = []
    diffs.reserveCapacity(resamples)
    for _ in 0..<resamples {
        var sa = 0.0, sb = 0.0, sw = 0.0
        for _ in 0..<n {
            let i = Int(rng.next() % UInt64(n))
            sa += a[i]; sb += b[i]; sw += w[i]
        }
        diffs.append((sa - sb) / sw)
    }
    diffs.sort()
    return Interval(low: diffs[Int(0.025 * Double(resamples - 1))], high: diffs[Int((0.975 * Double(resamples - 1)).rounded())])
}

/// Mean and sample standard deviation.
public func meanAndSpread(_ xs: [Double]) -> (mean: Double, std: Double) {
    guard !xs.isEmpty else { return (0, 0) }
    let m = xs.reduce(0, +) / Double(xs.count)
    guard xs.count > 1 else { return (m, 0) }
    let v = xs.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(xs.count - 1)
    return (m, v.squareRoot())
}
