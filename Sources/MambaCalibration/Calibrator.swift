import Dispatch
import Foundation
import MambaModel
import MambaTensors

/// The observer of one window's pass through one layer: every site it reports goes into its
/// statistics; the pooled residual activations are kept as they are (one [L, D] tensor), so that
/// no window needs a D x D accumulator of its own (134 MB at D 4096).
final class SiteRecorder: ActivationObserver {
    var sites: [SiteKey: SiteStatistics] = [:]
    var pooled: [Tensor] = []
    /// Sites that also carry second-moment sums besides the KLT sites (GPTQ's Hessians).
    let hessianSites: Set<Site>
    /// Whether the KLT sites' second moments are gathered (WindowStreams.kltMoments).
    let kltMoments: Bool

    init(hessianSites: Set<Site> = [], kltMoments: Bool = true) { (self.hessianSites, self.kltMoments) = (hessianSites, kltMoments) }

    func observe(_ activation: Tensor, site: Site, layer: Int?) {
        let key = SiteKey(layer: layer, site: site)
        if sites[key] == nil {
            let moments = (kltMoments && layer != nil && KLTSite.perLayer.contains(site)) || hessianSites.contains(site)
            sites[key] = SiteStatistics(channels: activation.cols, moments: moments)
        }
        sites[key]!.update(activation)
        if kltMoments && site == KLTSite.pooled { pooled.append(activation) }
    }

    /// Into the running total, in the order the caller merges windows.
    func merge(into total: inout CalibrationStats) {
        total.merge(sites: sites)
        for x in pooled { total.pooledResidual.update(x) }
    }
}

/// Where a layer-streamed pass gets its float model, one part at a time: an in-memory model, a
/// memory-mapped checkpoint widened a layer at a time, or the quantize pipeline's transformed layers.
public protocol LayerSource {
    var config: MambaConfig { get }
    /// The residual stream's start for each window: [tokens, D] each.
    func embed(_ windows: [[Int]]) throws -> [Tensor]
    /// Layer `i`'s float block (asked once per layer, in order; free to build it on demand).
    func block(_ i: Int) throws -> MambaBlock
    /// norm_f's weight (nil: folded into the head).
    func finalNorm() throws -> Tensor?
    /// The linear between norm_f and the head (MambaLM.headInput; nil: none).
    func headInputLinear() throws -> (any LinearOp)?
}

extension LayerSource {
    public func headInputLinear() throws -> (any LinearOp)? { nil }
}

extension MambaLM: LayerSource {
    public func embed(_ windows: [[Int]]) throws -> [Tensor] { windows.map { embedding.embed($0, config) } }
    public func block(_ i: Int) throws -> MambaBlock { blocks[i] }
    public func finalNorm() throws -> Tensor? { normF }
    public func headInputLinear() throws -> (any LinearOp)? { headInput }
}

/// The float checkpoint, widened a layer at a time.
extension CheckpointWeights: LayerSource {
    public func embed(_ windows: [[Int]]) throws -> [Tensor] {
        let table = FloatEmbedding(table: try readEmbedding())   // widened once, dropped after the lookups
        return windows.map { table.embed($0, config) }
    }
    public func block(_ i: Int) throws -> MambaBlock { MambaBlock(float: try readLayer(i), config: config, layer: i) }
    public func finalNorm() throws -> Tensor? { try readNormF() }
}

/// The calibration windows' residual streams ([tokens, D] float32 each, all held), advanced a
/// layer at a time, as GPTQ-style pipelines do: every window passes layer i (`threads` windows at
/// once, one thread each, the mixers single-threaded) before any passes layer i + 1, and each
/// window's sites merge into `stats` in window order, so the statistics do not depend on the
/// thread count; the pooled residual moments take each (layer, window) activation in that order.
public final class WindowStreams {
    private var residual: [Tensor]
    private let parallelism: Parallelism
    private let config: MambaConfig
    /// Sites that also gather second moments (x xᵀ sums: GPTQ's H) besides the KLT sites.
    private let hessianSites: Set<Site>
    /// Whether the KLT sites' second moments are gathered: the pooled residual's D x D and each
    /// layer's bottleneck. Calibration needs them (R1 and R5 come from them); quantize's second
    /// pass does not (its transforms are already fixed by the stats file), and the pooled one is
    /// a Double rank update that the window merge runs one window at a time: 4.4 TFLOP at the
    /// falcon-mamba-7b shape over 16 x 256 tokens (docs/PERFORMANCE.md, "Big models: quantize
    /// time").
    public let kltMoments: Bool
    public private(set) var stats: CalibrationStats

    /// `residual`: each window's embedded tokens.
    public init(_ residual: [Tensor], config: MambaConfig, parallelism: Parallelism, hessianSites: Set<Site> = [], kltMoments: Bool = true) {
        self.residual = residual
        (self.parallelism, self.config, self.hessianSites, self.kltMoments) = (parallelism, config, hessianSites, kltMoments)
        stats = CalibrationStats(sites: [:], pooledResidual: Moments(channels: kltMoments ? config.hiddenSize : 0))
    }

    public var count: Int { residual.count }

    /// Every window through layer `i`'s block, its sites recorded.
    public func advance(through block: MambaBlock, layer i: Int) throws {
        let (config, serial) = (config, Parallelism.serial)
        try forEachWindow { u, recorder in
            var state: any LayerState = block.mixer.makeState()
            block.step(&u, state: &state, layer: i, config: config, serial, observer: recorder)
        }
    }

    /// Layer `i`'s x xᵀ sums dropped once used (a [C, C] Double per site and layer would not fit
    /// for big models), except at the KLT sites when they are gathered.
    public func dropHessians(layer i: Int) {
        for site in kltMoments ? hessianSites.subtracting(KLTSite.perLayer) : hessianSites { stats.sites[SiteKey(layer: i, site: site)]?.moments = nil }
    }

    /// lm_head's input recorded after the last layer: norm_f, then the head-input linear if any.
    public func observeHead(normF: Tensor?, headInput: (any LinearOp)?) throws {
        let (eps, serial, headInput) = (config.layerNormEpsilon, Parallelism.serial, UncheckedSendable(headInput))   // read-only, shared by the windows
        try observeHead { u in
            let h = rmsNorm(u, weight: normF, eps: eps)
            return headInput.value.map { $0.forward(h, serial) } ?? h
        }
    }

    /// The head's input, made from each window's last residual stream by `input` (a Vision
    /// Mamba's norm_f and cls-token row or pooling), recorded at .lmHeadInput.
    public func observeHead(_ input: @escaping @Sendable (Tensor) -> Tensor) throws {
        try forEachWindow { u, recorder in recorder.observe(input(u), site: .lmHeadInput, layer: nil) }
        parallelism.applyToBLAS()
    }

    /// Runs `body` for every window, `threads` at a time, merging each window's recorder in window order.
    ///
    /// In calibration a batch's merge runs on a thread of its own while the next batch runs. The
    /// merge is serial (window order) and the pooled residual's Gram update in it is one
    /// single-threaded dsyrk per window (the same calls in the same order on any thread count, so
    /// the statistics do not depend on it); inline, it left every core but one idle while it ran.
    /// Quantize's second pass merges inline: its merge is small (no KLT moments), and a batch
    /// held back would keep its GPTQ Hessians alive beside the next batch's.
    private func forEachWindow(_ body: @escaping @Sendable (inout Tensor, SiteRecorder) throws -> Void) throws {
        let (hessianSites, kltMoments) = (hessianSites, kltMoments)
        let overlapMerges = kltMoments && parallelism.threads > 1
        var total = stats
        try withUnsafeMutablePointer(to: &total) { total in
            var (start, pending) = (0, [SiteRecorder]())
            while start < residual.count {
                let batch = start..<min(residual.count, start + parallelism.threads)
                var results = [Result<SiteRecorder, Error>?](repeating: nil, count: batch.count)
                let merging = pending   // the merge alone writes the total while the batch runs
                try overlapping({ for r in merging { r.merge(into: &total.pointee) } }) {
                    results.withUnsafeMutableBufferPointer { slots in
                        residual.withUnsafeMutableBufferPointer { streams in
                            let (out, u) = (UncheckedSendable(slots), UncheckedSendable(streams))   // each iteration its own slots
                            DispatchQueue.concurrentPerform(iterations: batch.count) { k in
                                out.value[k] = Result {
                                    let recorder = SiteRecorder(hessianSites: hessianSites, kltMoments: kltMoments)
                                    try body(&u.value[batch.lowerBound + k], recorder)
                                    return recorder
                                }
                            }
                        }
                    }
                }
                pending = try results.map { try $0!.get() }
                if !overlapMerges {
                    for r in pending { r.merge(into: &total.pointee) }
                    pending = []
                }
                start = batch.upperBound
            }
            for r in pending { r.merge(into: &total.pointee) }
        }
        stats = total
    }
}

/// Runs calibration windows through a float model and gathers every site's statistics.
public enum Calibrator {
    /// Progress after each finished (layer, window batch): (steps done, steps in all), one step
    /// per window per layer.
    public typealias Progress = (Int, Int) -> Void

    public static func run(
        model: MambaLM, windows: CalibrationWindows, parallelism: Parallelism, progress: Progress? = nil
    ) throws -> CalibrationStats {
        try run(source: model, windows: windows, parallelism: parallelism, progress: progress)
    }

    /// The layer loop: layer i is built once, every window advances through it, and it is
    /// released before layer i + 1 is built.
    public static func run(source: some LayerSource, windows: CalibrationWindows, parallelism: Parallelism, progress: Progress? = nil) throws -> CalibrationStats {
        let c = source.config
        let streams = WindowStreams(try source.embed(windows.windows), config: c, parallelism: parallelism)
        for i in 0..<c.numLayers {
            try streams.advance(through: try source.block(i), layer: i)
            progress?((i + 1) * streams.count, c.numLayers * streams.count)
        }
        try streams.observeHead(normF: try source.finalNorm(), headInput: try source.headInputLinear())
        return streams.stats
    }
}

/// Tokenizes the data, draws the seeded windows, runs the float model over them and ties the
/// result to the checkpoint and data it came from (shared by `calibrate` and `compare`).
public func calibrateStats(
    _ model: some LayerSource, modelDirectory modelDir: String, dataFiles: [String], samples: Int, seqLen: Int, seed: UInt64,
    parallelism par: Parallelism, progress: Calibrator.Progress?
) throws -> StatsFile {
    guard let tokenizer = try loadTokenizer(modelDirectory: modelDir) else {
        throw MambaError(.missingFile, "\(modelDir) has no tokenizer.json: calibration text cannot be tokenized")
    }
    try MemoryEstimate.layerStreamed(model.config, windows: samples, seqLength: seqLen, threads: par.threads)
        .check(job: "calibration", lower: "--samples, --seq-len or --threads")
    let texts = try dataFiles.map { path -> (name: String, tokens: [Int]) in (path, tokenizer.encode(try readText(path))) }
    let windows = try CalibrationWindows.draw(from: texts, samples: samples, seqLength: seqLen, seed: seed)
    let vocab = model.config.vocabSize
    if let bad = windows.windows.joined().first(where: { $0 >= vocab }) {
        throw MambaError(.mismatchedInputs, "the tokenizer of \(modelDir) gives id \(bad), outside the model's vocabulary [0, \(vocab))")
    }
    // The checkpoint's hash takes one core for about 17 s at the 7B shape: it runs beside the
    // calibration instead of after it.
    var sha = ""
    let stats = try overlapping({ sha = try checkpointSHA256(directory: modelDir) }) {
        try Calibrator.run(source: model, windows: windows, parallelism: par, progress: progress)
    }
    let provenance = StatsFile.Provenance(
        checkpointSHA256: sha, dataSHA256: try SHA256.hex(ofFiles: dataFiles),
        dataFiles: dataFiles.map { URL(fileURLWithPath: $0).lastPathComponent }, seed: seed)
    return StatsFile(stats: stats, windows: windows, provenance: provenance)
}
