import Dispatch
import MambaModel
import MambaTensors

/// The observer of one forward pass: every site the forward reports goes into its statistics.
final class SiteRecorder: ActivationObserver {
    var stats: CalibrationStats

    init(hiddenSize: Int) {
        stats = CalibrationStats(sites: [:], pooledResidual: Moments(channels: hiddenSize))
    }

    func observe(_ activation: Tensor, site: Site, layer: Int?) {
        let key = SiteKey(layer: layer, site: site)
        if stats.sites[key] == nil {
            let klt = layer != nil && KLTSite.perLayer.contains(site)
            stats.sites[key] = SiteStatistics(channels: activation.cols, moments: klt)
        }
        stats.sites[key]!.update(activation)
        if site == KLTSite.pooled { stats.pooledResidual.update(activation) }
    }
}

/// Runs calibration windows through a float model (the original or a transformed one, in memory)
/// and gathers every site's statistics.
public enum Calibrator {
    /// Progress after each finished window: (windows done, windows in all).
    public typealias Progress = (Int, Int) -> Void

    /// Windows run `threads` at a time, one thread each (both cores busy without 2 x 2 threads);
    /// each window's statistics are merged into the total in window order, so the result does not
    /// depend on the thread count and memory holds `threads` windows' activations at most.
    public static func run(
        model: MambaLM, windows: CalibrationWindows, parallelism: Parallelism, progress: Progress? = nil
    ) throws -> CalibrationStats {
        var total = CalibrationStats(sites: [:], pooledResidual: Moments(channels: model.config.hiddenSize))
        let serial = Parallelism(threads: 1)
        let all = windows.windows
        var done = 0
        while done < all.count {
            let batch = Array(all[done..<min(all.count, done + parallelism.threads)])
            var results = [Result<CalibrationStats, Error>?](repeating: nil, count: batch.count)
            results.withUnsafeMutableBufferPointer { slots in
                let out = UncheckedSendable(slots)   // each iteration writes its own slot
                DispatchQueue.concurrentPerform(iterations: batch.count) { i in
                    out.value[i] = Result {
                        let recorder = SiteRecorder(hiddenSize: model.config.hiddenSize)
                        var state = model.makeState()
                        _ = try model.forward(batch[i], state: &state, logits: .none, parallelism: serial, observer: recorder)
                        return recorder.stats
                    }
                }
            }
            for r in results { total.merge(try r!.get()) }
            done += batch.count
            progress?(done, all.count)
        }
        parallelism.applyToBLAS()
        return total
    }
}
