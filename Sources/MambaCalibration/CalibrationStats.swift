import MambaModel
import MambaTensors

/// Where a statistic was taken: a site of block `layer`, or a site outside the blocks (layer nil).
public struct SiteKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let layer: Int?
    public let site: Site

    public init(layer: Int?, site: Site) {
        self.layer = layer
        self.site = site
    }

    /// The stats file's tensor-name prefix (docs/DESIGN.md section 5).
    public var description: String { layer.map { "layers.\($0).\(site.rawValue)" } ?? site.rawValue }

    public static func < (a: SiteKey, b: SiteKey) -> Bool {
        let (la, lb) = (a.layer ?? Int.max, b.layer ?? Int.max)
        if la != lb { return la < lb }
        return Site.precedes(a.site, b.site)
    }
}

/// Which sites carry second-moment sums (the KLT sites of docs/DESIGN.md section 2): the dt path input
/// of each layer, and the residual stream's block inputs pooled over layers.
public enum KLTSite {
    /// Every mixer's bottlenecks (MixerDescription.bottlenecks): Mamba-1's dt path, both of Vim's.
    public static let perLayer: Set<Site> = [.dtLow, BranchSites.backward.dtLow]
    public static let pooled: Site = .residual
}

/// Everything calibration learns about one site.
public struct SiteStatistics: Sendable, Equatable {
    public var range: ChannelRange
    public var histogram: MagnitudeHistogram
    public var sum: [Double]
    public var count: Int
    /// Present only at per-layer KLT sites.
    public var moments: Moments?

    public init(channels: Int, moments: Bool) {
        range = ChannelRange(channels: channels)
        histogram = MagnitudeHistogram()
        sum = [Double](repeating: 0, count: channels)
        count = 0
        self.moments = moments ? Moments(channels: channels) : nil
    }

    public init(range: ChannelRange, histogram: MagnitudeHistogram, sum: [Double], count: Int, moments: Moments?) {
        self.range = range; self.histogram = histogram; self.sum = sum; self.count = count; self.moments = moments
    }

    public var channels: Int { range.channels }
    /// Largest |x| over all channels.
    public var absmax: Float { range.absmax.max() ?? 0 }

    /// The clipping threshold of a static activation scale: a percentile of |x| or the maximum.
    public func clip(_ q: Double?) -> Float {
        guard let q else { return absmax }
        return histogram.quantile(q, absmax: absmax)
    }

    public mutating func update(_ x: Tensor) {
        range.update(x)
        histogram.update(x)
        let c = channels
        x.storage.withUnsafeBufferPointer { xs in
            sum.withUnsafeMutableBufferPointer { s in
                for r in 0..<x.rows { for j in 0..<c { s[j] += Double(xs[r * c + j]) } }
            }
        }
        count += x.rows
        moments?.update(x)
    }

    public mutating func merge(_ o: SiteStatistics) {
        range.merge(o.range)
        histogram.merge(o.histogram)
        for j in 0..<channels { sum[j] += o.sum[j] }
        count += o.count
        if let om = o.moments { moments?.merge(om) }
    }
}

/// The statistics of every site, plus the pooled residual-stream moments.
public struct CalibrationStats: Sendable, Equatable {
    public var sites: [SiteKey: SiteStatistics]
    public var pooledResidual: Moments

    public init(sites: [SiteKey: SiteStatistics], pooledResidual: Moments) {
        self.sites = sites
        self.pooledResidual = pooledResidual
    }

    /// The statistics of one site, or an error naming what is missing (a stats file may lack a
    /// site that a method needs).
    public func site(_ layer: Int?, _ site: Site) throws -> SiteStatistics {
        let key = SiteKey(layer: layer, site: site)
        guard let s = sites[key] else { throw MambaError(.missingTensor, "the statistics have no site \(key)") }
        return s
    }

    public mutating func merge(_ o: CalibrationStats) {
        merge(sites: o.sites)
        pooledResidual.merge(o.pooledResidual)
    }

    /// Each site's statistics merged into this one's (the sites are independent of each other).
    public mutating func merge(sites other: [SiteKey: SiteStatistics]) {
        for (k, v) in other {
            if sites[k] == nil { sites[k] = v } else { sites[k]!.merge(v) }
        }
    }

    public var tokens: Int { sites[SiteKey(layer: nil, site: .lmHeadInput)]?.count ?? 0 }
}
