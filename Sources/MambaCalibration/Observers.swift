import MambaTensors

// The three statistics of one activation site (docs/DESIGN.md section 5), each with update / merge.
// Merging two partial runs gives what one run over both gives: exactly for the ranges and the
// histogram (max, min, integer counts), up to Double summation order for the moments.

/// Per-channel absmax, min and max.
public struct ChannelRange: Sendable, Equatable {
    public private(set) var absmax: [Float]
    public private(set) var min: [Float]
    public private(set) var max: [Float]

    public init(channels: Int) {
        absmax = [Float](repeating: 0, count: channels)
        min = [Float](repeating: .infinity, count: channels)
        max = [Float](repeating: -.infinity, count: channels)
    }

    public init(absmax: [Float], min: [Float], max: [Float]) {
        self.absmax = absmax; self.min = min; self.max = max
    }

    public var channels: Int { absmax.count }

    public mutating func update(_ x: Tensor) {
        precondition(x.cols == channels, "ChannelRange: \(x.cols) channels, expected \(channels)")
        let c = channels
        x.storage.withUnsafeBufferPointer { xs in
            absmax.withUnsafeMutableBufferPointer { am in
                min.withUnsafeMutableBufferPointer { lo in
                    max.withUnsafeMutableBufferPointer { hi in
                        for r in 0..<x.rows {
                            let row = xs.baseAddress! + r * c
                            for j in 0..<c {
                                let v = row[j]
                                lo[j] = Swift.min(lo[j], v)
                                hi[j] = Swift.max(hi[j], v)
                            }
                        }
                        for j in 0..<c { am[j] = Swift.max(-lo[j], hi[j], am[j]) }
                    }
                }
            }
        }
    }

    public mutating func merge(_ o: ChannelRange) {
        precondition(o.channels == channels)
        for j in 0..<channels {
            absmax[j] = Swift.max(absmax[j], o.absmax[j])
            min[j] = Swift.min(min[j], o.min[j])
            max[j] = Swift.max(max[j], o.max[j])
        }
    }
}

/// Counts of |x| over fixed bins: the float's exponent and its top 4 mantissa bits, so 16 bins per
/// octave (log-spaced octaves, each cut in 16 equal parts), 4096 bins covering every float. The
/// edges never depend on the data, so merging is adding counts, and a percentile read from the
/// histogram is within one bin of the sorted value.
public struct MagnitudeHistogram: Sendable, Equatable {
    public static let bins = 4096
    static let shift: UInt32 = 19   // 31 magnitude bits - 12 bin bits

    public private(set) var counts: [Double]

    public init() { counts = [Double](repeating: 0, count: Self.bins) }

    public init(counts: [Double]) {
        precondition(counts.count == Self.bins, "a histogram has \(Self.bins) bins, got \(counts.count)")
        self.counts = counts
    }

    public static func bin(of value: Float) -> Int { Int((value.bitPattern & 0x7fff_ffff) >> shift) }
    /// The largest magnitude in bin `b` (its upper edge, exclusive, as a float).
    public static func upperEdge(_ b: Int) -> Float { Float(bitPattern: UInt32(b + 1) << shift) }

    public var total: Double { counts.reduce(0, +) }

    public mutating func update(_ x: Tensor) {
        x.storage.withUnsafeBufferPointer { xs in
            counts.withUnsafeMutableBufferPointer { h in
                for v in xs { h[Int((v.bitPattern & 0x7fff_ffff) >> Self.shift)] += 1 }
            }
        }
    }

    public mutating func merge(_ o: MagnitudeHistogram) {
        for b in 0..<Self.bins { counts[b] += o.counts[b] }
    }

    /// The `q` quantile of |x| (q in (0, 1]) as the upper edge of the bin that reaches it, capped
    /// at `absmax` (the exact maximum), so `quantile(1)` is the maximum itself.
    public func quantile(_ q: Double, absmax: Float) -> Float {
        let target = q * total
        var cumulative = 0.0
        for b in 0..<Self.bins {
            cumulative += counts[b]
            if cumulative >= target && counts[b] > 0 { return Swift.min(Self.upperEdge(b), absmax) }
        }
        return absmax
    }
}

/// Sums of x and of x*x^T in Double with the row count: the mean and second-moment matrix a KLT
/// rotation is computed from (docs/DESIGN.md section 2: uncentered by choice, centered on request).
public struct Moments: Sendable, Equatable {
    public let channels: Int
    public private(set) var sum: [Double]
    /// [C, C] row-major; kept upper-triangular while accumulating, symmetric once `symmetrized`.
    public private(set) var sumOfProducts: [Double]
    public private(set) var count: Int

    public init(channels: Int) {
        self.channels = channels
        sum = [Double](repeating: 0, count: channels)
        sumOfProducts = [Double](repeating: 0, count: channels * channels)
        count = 0
    }

    public init(sum: [Double], sumOfProducts: [Double], count: Int) {
        precondition(sumOfProducts.count == sum.count * sum.count)
        let c = sum.count
        channels = c
        self.sum = sum
        // Canonical form while accumulating: the upper triangle (a file stores the full matrix).
        var upper = sumOfProducts
        for i in 0..<c { for j in 0..<i { upper[i * c + j] = 0 } }
        self.sumOfProducts = upper
        self.count = count
    }

    public mutating func update(_ x: Tensor) {
        precondition(x.cols == channels, "Moments: \(x.cols) channels, expected \(channels)")
        let (l, c) = (x.rows, channels)
        let xd = x.storage.map(Double.init)          // products exact in Double
        xd.withUnsafeBufferPointer { xp in
            sum.withUnsafeMutableBufferPointer { s in
                for r in 0..<l { for j in 0..<c { s[j] += xp[r * c + j] } }
            }
            sumOfProducts.withUnsafeMutableBufferPointer { m in
                BLAS.accumulateGramUpper(xp.baseAddress!, rows: l, cols: c, into: m.baseAddress!)
            }
        }
        count += l
    }

    public mutating func merge(_ o: Moments) {
        precondition(o.channels == channels)
        for j in 0..<channels { sum[j] += o.sum[j] }
        for k in 0..<(channels * channels) { sumOfProducts[k] += o.sumOfProducts[k] }
        count += o.count
    }

    /// The full symmetric matrix (the lower triangle copied from the upper).
    public var symmetrized: Moments {
        var m = self
        let c = channels
        for i in 0..<c { for j in 0..<i { m.sumOfProducts[i * c + j] = m.sumOfProducts[j * c + i] } }
        return m
    }

    /// E[x x^T] (uncentered), [C, C].
    public var secondMoment: [Double] {
        let s = symmetrized.sumOfProducts
        let n = Double(Swift.max(count, 1))
        return s.map { $0 / n }
    }

    /// E[(x - mean)(x - mean)^T], [C, C].
    public var covariance: [Double] {
        let c = channels
        let n = Double(Swift.max(count, 1))
        let mean = sum.map { $0 / n }
        var m = secondMoment
        for i in 0..<c { for j in 0..<c { m[i * c + j] -= mean[i] * mean[j] } }
        return m
    }
}
