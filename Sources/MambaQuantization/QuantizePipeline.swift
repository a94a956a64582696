import Foundation
import MambaCalibration
import MambaModel
import MambaTensors
import MambaTransforms

// The quantize pipeline, a layer at a time (as GPTQ-style pipelines work): R1 is fixed from the
// first pass's pooled moments; the head and the embedding are transformed and quantized; then
// for each layer i the float weights are read (widened from the checkpoint's dtype), transformed
// in Double, their weights quantized, and the transformed float32 layer advances the calibration
// windows' residual streams (the second pass) so that layer i's static scales are known; the
// finished block goes to the caller and the layer is released. The whole model is never held in
// Double or float32, and the result is the same, bit for bit, as transforming the whole model
// at once and running the second pass over it, on any --threads (the eigendecompositions run
// single-threaded: Eigen.symmetric).

extension QuantizedModel {
    /// The pipeline into memory (tests, compare, bench): transforms of the recipe's method, the
    /// second calibration pass over the stats file's windows, weights quantized per output
    /// channel (or group) and static activation scales from that pass.
    public static func quantize(
        weights: some WeightSource, stats: StatsFile, recipe: QuantizationRecipe, parallelism: Parallelism,
        progress: Calibrator.Progress? = nil
    ) throws -> QuantizedModel {
        try quantizeKeepingTransformed(weights: weights, stats: stats, recipe: recipe, parallelism: parallelism, progress: progress,
                                       keepTransformed: false).quantized
    }

    /// `quantize`, also returning the transformed float model before rounding (what per-site SQNR
    /// compares the quantized model with).
    public static func quantizeKeepingTransformed(
        weights: some WeightSource, stats: StatsFile, recipe: QuantizationRecipe, parallelism: Parallelism,
        progress: Calibrator.Progress? = nil
    ) throws -> (quantized: QuantizedModel, transformed: MambaLM) {
        let r = try quantizeKeepingTransformed(weights: weights, stats: stats, recipe: recipe, parallelism: parallelism, progress: progress,
                                               keepTransformed: true)
        return (r.quantized, r.transformed!)
    }

    static func quantizeKeepingTransformed(
        weights: some WeightSource, stats: StatsFile, recipe: QuantizationRecipe, parallelism: Parallelism,
        progress: Calibrator.Progress?, keepTransformed: Bool
    ) throws -> (quantized: QuantizedModel, transformed: MambaLM?) {
        var embedding: QuantizedMatrix?
        var blocks: [QuantizedBlock] = []
        let r = try stream(weights: weights, stats: stats, recipe: recipe, parallelism: parallelism, progress: progress,
                           keepTransformed: keepTransformed, embedding: { embedding = $0 }, block: { blocks.append($1) })
        let q = QuantizedModel(config: r.config, recipe: recipe, embedding: embedding!, blocks: blocks, lmHead: r.lmHead, transforms: r.transforms,
                               headInput: r.headInput, tiedHead: r.tiedHead)
        return (q, r.transformed)
    }

    /// What `stream` hands back once every block has gone to the caller.
    public struct StreamResult {
        public let config: MambaConfig
        public let lmHead: QuantizedLayer
        public let transforms: [AppliedTransform]
        /// The transformed float model (only when asked for: it holds every layer in float32).
        public let transformed: MambaLM?
        /// A tied source's head-input matrix (QuantizedModel.headInput).
        public let headInput: Tensor?
        /// Whether the embedding handed out is also the head (QuantizedModel.tiedHead).
        public let tiedHead: Bool
        /// Seconds GPTQ spent rounding (0 when rounding to nearest).
        public var gptqSeconds = 0.0
    }

    /// The pipeline, handing out the quantized embedding first and then each finished block in
    /// layer order (a writer appends them to the checkpoint as they come); a tied table, which is
    /// also the head, is handed out after the blocks (GPTQ rounds it with the head's Hessian,
    /// known only once the windows have passed every layer).
    ///
    /// One loop over the layers, each step named: read layer i (widened from the checkpoint's
    /// dtype), transform it (the method's plan, in Double), round its weights (GPTQ's linears
    /// wait for their Hessians), advance the calibration windows through its transformed float
    /// block (the second pass), round GPTQ's linears and take the static scales from what the
    /// windows saw there, then hand the block out. Only the windows' residual streams and their
    /// statistics go from one iteration to the next.
    public static func stream(
        weights source: some WeightSource, stats: StatsFile, recipe: QuantizationRecipe, plan prepared: MethodPlan? = nil, parallelism: Parallelism,
        progress: Calibrator.Progress? = nil, keepTransformed: Bool = false,
        embedding onEmbedding: (QuantizedMatrix) throws -> Void, block onBlock: (Int, QuantizedBlock) throws -> Void
    ) throws -> StreamResult {
        try checkKeepFloat(recipe.keepFloat, source.config)
        let c = source.config
        if recipe.scanScales == .group, !c.distinctKinds.contains(where: { k in k.spec.scanInputs.contains { k.spec.scanScaleGroups($0.site, c) != nil } }) {
            throw MambaError(.badInput, "scan_scales group needs scan inputs with heads or groups (Mamba-2); this model's \(c.family) layers have none: use tensor")
        }
        // The second pass embeds the stats file's windows: an id outside the table (a stats file
        // of another model, or forged) would read outside it.
        if let bad = stats.windows.windows.joined().first(where: { $0 < 0 || $0 >= c.vocabSize }) {
            throw MambaError(.mismatchedInputs, "the stats file's calibration tokens include id \(bad), outside the model's vocabulary [0, \(c.vocabSize)): the stats file is from another model")
        }
        let threads = parallelism.threads
        let plan = try prepared ?? MethodPlan(recipe.method, stats: stats.stats, config: c, seed: recipe.seed, alpha: recipe.alpha)
        let quantizer = LayerQuantizer(recipe: recipe, threads: threads)
        var outer = try OuterWeights(source: source, plan: plan, quantizer: quantizer, keepTransformed: keepTransformed)
        if let embedding = outer.separateEmbedding { try onEmbedding(embedding) }

        let streams = WindowStreams(stats.windows.windows.map { outer.table.embed($0, c) }, config: c, parallelism: parallelism,
                                    hessianSites: quantizer.hessianSites(c).union(outer.headByGPTQ ? [.lmHeadInput] : []), kltMoments: false)
        var log = plan.globalLog, kept: [MambaBlock] = [], gptqSeconds = 0.0
        // Layer i's block is handed out (written) while layer i + 1 is read and transformed: the
        // writing is serial and left a core idle (docs/PERFORMANCE.md, "Big models: quantize
        // time"). The hand-outs keep their order and never overlap one another.
        var finished: (layer: Int, block: QuantizedBlock)? = nil
        for i in 0..<c.numLayers {
            var layer: LayerInProgress
            do {   // the float block lives only while the windows pass through it (unless kept)
                let (transformed, float) = try overlapping({ if let f = finished { try onBlock(f.layer, f.block) } }) {
                    try quantizer.transformAndRound(try source.readLayer(i), layer: i, config: c, plan: plan, stats: stats.stats, log: &log)
                }
                finished = nil
                layer = transformed
                if keepTransformed { kept.append(float) }
                try streams.advance(through: float, layer: i)
            }
            progress?((i + 1) * streams.count, c.numLayers * streams.count)
            gptqSeconds += try quantizer.roundAwaiting(&layer, layer: i, secondPass: streams.stats)
            finished = (i, try quantizer.withStaticScales(layer.block, layer: i, secondPass: streams.stats, config: c))
            streams.dropHessians(layer: i)
        }
        if let f = finished { try onBlock(f.layer, f.block) }
        try streams.observeHead(normF: nil, headInput: outer.headInputLinear)   // norm_f is folded into the head or the head-input matrix

        gptqSeconds += try outer.roundHeadByGPTQ(secondPass: streams.stats)
        if let table = outer.tiedTable { try onEmbedding(table) }
        var config = c
        config.json["tie_word_embeddings"] = .bool(outer.tiedHead)
        guard let head = outer.lmHead else { preconditionFailure("the head was not rounded") }
        let lmHead = head.with(input: try quantizer.activation(streams.stats, nil, .lmHeadInput))
        let transformed = outer.transformedHead.map { h in
            MambaLM(config: c, embedding: outer.table, blocks: kept, normF: nil, headInput: outer.headInputLinear, lmHead: FloatLinear(weight: h))
        }
        return StreamResult(config: config, lmHead: lmHead, transforms: log, transformed: transformed,
                            headInput: outer.headInput, tiedHead: outer.tiedHead, gptqSeconds: gptqSeconds)
    }
}

/// The weights outside the blocks, one V x D Double at a time: an untied head (norm_f folded in,
/// R1); the embedding (R1). A tied head stays tied: norm_f's weight becomes the head-input matrix
/// R1ᵀ diag(w) R1, and the embedding's table, quantized as the head (its bits and groups, per-row
/// scales), is both (docs/DESIGN.md section 2, "One table"). GPTQ rounds the head (a tied table
/// too) last, against its input's Hessian from the second pass; until then the transformed head
/// waits in float32.
struct OuterWeights {
    let quantizer: LayerQuantizer
    let headByGPTQ: Bool
    /// The transformed embedding in float32: the windows' residual streams start from it.
    let table: FloatEmbedding
    /// A tied source's head-input matrix [D, D] (QuantizedModel.headInput).
    let headInput: Tensor?
    /// Whether the table is also the head (QuantizedModel.tiedHead).
    let tiedHead: Bool
    /// The int8 embedding of its own, when the table is not the head.
    let separateEmbedding: QuantizedMatrix?
    /// The transformed head (kept for the transformed float model).
    let transformedHead: Tensor?
    /// The head's weights once rounded (a tied table's are `tiedTable`); nil while GPTQ waits.
    private(set) var lmHead: QuantizedLayer?
    private(set) var tiedTable: QuantizedMatrix?
    /// An untied head's transformed weights while GPTQ waits for their Hessian.
    private var awaitingHead: Tensor?

    init(source: some WeightSource, plan: MethodPlan, quantizer: LayerQuantizer, keepTransformed: Bool) throws {
        let recipe = quantizer.recipe
        self.quantizer = quantizer
        headByGPTQ = recipe.weightRounding == .gptq && !recipe.keepsFloat(module: QuantizedNames.lmHead)
        let normF = try source.readNormF().storage.map(Double.init)
        var lmHead: QuantizedLayer? = nil
        var transformedHead: Tensor? = nil
        if let untied = try source.readLMHead() {
            var head = Matrix(untied), folded: [Double]? = normF
            plan.transformHead(&head, normF: &folded)
            if headByGPTQ { awaitingHead = head.tensor } else {
                lmHead = try quantizer.weights(QuantizedNames.lmHead, head, bias: nil, groups: true)
            }
            if keepTransformed { transformedHead = head.tensor }
            headInput = nil
        } else {
            // Stored in F16 (format 4): rounded here, so the model in memory is the one written.
            let m = plan.headInputTransform(normF: normF).tensor.roundedToHalf()
            guard m.storage.allSatisfy(\.isFinite) else {
                throw MambaError(.badInput, "norm_f's weights reach \(normF.map(abs).max() ?? 0), past the 65504 an F16 head-input matrix holds")
            }
            headInput = m
        }
        var emb = Matrix(try source.readEmbedding())
        plan.transformEmbedding(&emb)
        tiedHead = headInput != nil && !recipe.keepsFloat(module: QuantizedNames.lmHead)
        if tiedHead {
            separateEmbedding = nil
            if !headByGPTQ {
                tiedTable = try QuantizedMatrix(quantizing: emb, bits: recipe.weightBits(module: QuantizedNames.lmHead), groupSize: recipe.groupSize,
                                                threads: quantizer.threads)
                    .checkedScales(QuantizedNames.embedding)
            }
        } else {
            separateEmbedding = try QuantizedMatrix(quantizing: emb, bits: 8, threads: quantizer.threads).checkedScales(QuantizedNames.embedding)
            // A tied head kept float: a float copy of the table beside the int8 embedding.
            if headInput != nil { lmHead = QuantizedLayer(weight: nil, floatWeight: emb.tensor, bias: nil, input: nil) }
        }
        if headInput != nil && keepTransformed { transformedHead = emb.tensor }
        self.transformedHead = transformedHead
        table = FloatEmbedding(table: emb.tensor)
        self.lmHead = lmHead ?? tiedTable.map { QuantizedLayer(weight: $0, floatWeight: nil, bias: nil, input: nil) }
    }

    var headInputLinear: (any LinearOp)? { headInput.map { FloatLinear(weight: $0) } }

    /// GPTQ's rounding of the head against its input's Hessian from the second pass (seconds spent).
    mutating func roundHeadByGPTQ(secondPass: CalibrationStats) throws -> Double {
        guard headByGPTQ else { return 0 }
        guard let h = try secondPass.site(nil, .lmHeadInput).moments?.symmetrized.sumOfProducts else {
            preconditionFailure("the second pass gathered no Hessian at the head's input")
        }
        let weights = Matrix(awaitingHead ?? table.table)
        awaitingHead = nil
        return try measureSeconds {
            let head = try quantizer.weights(QuantizedNames.lmHead, weights, bias: nil, groups: true, hessian: h)
            lmHead = head
            if tiedHead { tiedTable = head.weight }
        }
    }
}

/// One layer between its transform and its hand-out.
struct LayerInProgress {
    /// The quantized block, without its static scales until the second pass has seen the layer.
    var block: QuantizedBlock
    /// GPTQ's linears: their transformed weights wait for their inputs' Hessians.
    var awaitingGPTQ: [(module: ModuleSpec, weight: Matrix, bias: [Double]?)]
}

/// The recipe's rounding of weights and activations.
struct LayerQuantizer {
    let recipe: QuantizationRecipe
    /// For the Double products and the rounding loops (the second pass runs windows one thread each).
    let threads: Int

    /// A module's weights (or its float weights when kept float); the input quantizer comes later.
    /// With `hessian` (Xᵀ X of the module's input), rounded by GPTQ on the scales round-to-nearest
    /// would use.
    func weights(_ name: String, _ w: Matrix, bias: [Double]?, groups: Bool, hessian: [Double]? = nil) throws -> QuantizedLayer {
        let b = bias.map(floatVector)
        if recipe.keepsFloat(module: name) { return QuantizedLayer(weight: nil, floatWeight: w.tensor, bias: b, input: nil) }
        let (bits, group) = (recipe.weightBits(module: name), groups ? recipe.groupSize : nil)
        var q = try QuantizedMatrix(quantizing: w, bits: bits, groupSize: group, threads: threads).checkedScales(name)
        if let hessian {
            do {
                q.values = try BLAS.withThreads(threads) {
                    try GPTQ.round(w, hessian: hessian, bits: bits, groupSize: group, scales: q.scales, options: recipe.gptq, threads: threads)
                }
            } catch let e as MambaError { throw MambaError(e.kind, "\(name): \(e.message)") }
        }
        return QuantizedLayer(weight: q, floatWeight: nil, bias: b, input: nil)
    }

    /// Whether `module` of a mixer waits for its input's Hessian from the second pass (GPTQ).
    func roundsByGPTQ(_ module: ModuleSpec, name: String) -> Bool {
        recipe.weightRounding == .gptq && module.kind == .linear && !recipe.keepsFloat(module: name)
    }

    /// The inputs of the linears GPTQ rounds, over every layer kind: the second pass gathers their Hessians.
    func hessianSites(_ c: MambaConfig) -> Set<Site> {
        guard recipe.weightRounding == .gptq else { return [] }
        return c.distinctKinds.reduce(into: Set<Site>()) { $0.formUnion($1.spec.linearInputs) }
    }

    /// Layer `i` transformed by the plan (its log appended to `log`) and its weights rounded, but
    /// for GPTQ's linears; its Double parameters are released once its float block is built, and
    /// the float block is handed back apart so the caller can drop it after the second pass.
    func transformAndRound(_ read: BlockWeights, layer i: Int, config: MambaConfig, plan: MethodPlan, stats: CalibrationStats,
                           log: inout [AppliedTransform]) throws -> (LayerInProgress, float: MambaBlock) {
        var b = BlockParameters(read, config: config)
        log += try BLAS.withThreads(threads) { try plan.apply(layer: i, to: &b, stats: stats) }
        let (m, prefix) = (b.mixer, BlockNames.mixerPrefix(layer: i))
        var modules: [String: QuantizedLayer] = [:]
        var awaiting: [(module: ModuleSpec, weight: Matrix, bias: [Double]?)] = []
        for spec in m.spec.modules {
            if roundsByGPTQ(spec, name: prefix + spec.name) {
                awaiting.append((spec, m.weight(spec.name), m.module(spec.name).bias))
            } else {
                modules[spec.name] = try weights(prefix + spec.name, m.weight(spec.name), bias: m.module(spec.name).bias, groups: spec.allowsGroups)
            }
        }
        // The vectors and the transforms' artifacts go as they are, but for those stored in F16
        // (format 4), rounded here so the model in memory is the one written.
        let tensors = m.tensors.reduce(into: [String: Tensor]()) { $0[$1.key] = QuantizedNames.halfVectors.contains($1.key) ? $1.value.roundedToHalf() : $1.value }
        if let (key, _) = tensors.first(where: { QuantizedNames.halfVectors.contains($0.key) && !$0.value.storage.allSatisfy(\.isFinite) }) {
            throw MambaError(.badInput, "layer \(i)'s \(key) holds values past the 65504 an F16 tensor holds")
        }
        let block = QuantizedBlock(norm: b.norm.map(floatVector), mixer: QuantizedMixer(kind: m.kind, modules: modules, tensors: tensors))
        return (LayerInProgress(block: block, awaitingGPTQ: awaiting), b.floatBlock(layer: i))
    }

    /// GPTQ's linears of layer `i` rounded against their inputs' Hessians from the second pass
    /// (seconds spent: the Cholesky and the column loop, not the Hessians' accumulation).
    func roundAwaiting(_ layer: inout LayerInProgress, layer i: Int, secondPass: CalibrationStats) throws -> Double {
        let awaiting = layer.awaitingGPTQ
        layer.awaitingGPTQ = []
        return try measureSeconds {
            for (module, w, bias) in awaiting {
                guard let h = try secondPass.site(i, module.input).moments?.symmetrized.sumOfProducts else {
                    preconditionFailure("the second pass gathered no Hessian at \(module.input)")
                }
                layer.block.mixer.modules[module.name] = try weights(BlockNames.mixerPrefix(layer: i) + module.name, w, bias: bias,
                                                                     groups: module.allowsGroups, hessian: h)
            }
        }
    }

    /// Layer `i` with the quantizers of its module inputs and scan inputs: the recipe's dynamic
    /// scales, or static ones from what the second pass saw.
    func withStaticScales(_ block: QuantizedBlock, layer i: Int, secondPass: CalibrationStats, config: MambaConfig) throws -> QuantizedBlock {
        var b = block
        let spec = b.mixer.spec
        for module in spec.modules {
            b.mixer.modules[module.name] = b.mixer.modules[module.name]!.with(input: try activation(secondPass, i, module.input))
        }
        for (site, _) in spec.scanInputs where !recipe.keepsFloat(scanInput: site) {
            let groups = recipe.scanScales == .group ? spec.scanScaleGroups(site, config) : nil
            b.scanInputs[site] = try activation(secondPass, i, site, groups: groups)
        }
        return b
    }

    /// The activation quantizer of a site: dynamic, or static from the second pass's clip. With
    /// `groups`, one static scale per contiguous channel group: the group's own absmax, capped at
    /// the site's clip (so a group's scale is never coarser than the tensor's).
    func activation(_ stats: CalibrationStats, _ layer: Int?, _ site: Site, groups: Int? = nil) throws -> ActivationQuantizer {
        let ab = recipe.bits.activation
        if let scale = recipe.activationScale { return ActivationQuantizer(bits: ab, scale: scale) }
        let s = try stats.site(layer, site)
        let (clip, q) = (s.clip(recipe.clip.quantile), Float(qmax(bits: ab)))
        // A range past what a scale may hold (activations that overflow, a forged stats file) is
        // refused here rather than written as an Inf or NaN scale.
        guard QuantizedNames.isValidScale(clip / q) else {
            throw MambaError(.badInput, "the calibrated range at \(SiteKey(layer: layer, site: site)) is \(clip): activations there overflow what a scale may hold (at most \(QuantizedNames.maxScale))")
        }
        guard let groups, groups > 0, s.channels % groups == 0 else { return ActivationQuantizer(bits: ab, scale: .static(clip / q)) }
        let size = s.channels / groups
        return ActivationQuantizer(bits: ab, scale: .groups((0..<groups).map { g in
            min(clip, s.range.absmax[(g * size)..<((g + 1) * size)].max()!) / q
        }))
    }
}

extension QuantizedMatrix {
    /// Refuses weights whose scales pass what a checkpoint may hold (weights near float32's
    /// limit would be written, then refused by every reader).
    func checkedScales(_ name: String) throws -> QuantizedMatrix {
        if let big = scales.first(where: { !QuantizedNames.isValidScale($0) }) {
            throw MambaError(.badInput, "\(name)'s weights reach \(big * Float(qmax(bits: bits))): past what a scale may hold (at most \(QuantizedNames.maxScale))")
        }
        return self
    }
}

extension QuantizedLayer {
    /// The same weights with their input quantizer (none for a module kept in float).
    func with(input: ActivationQuantizer) -> QuantizedLayer {
        QuantizedLayer(weight: weight, floatWeight: floatWeight, bias: bias, input: weight == nil ? nil : input)
    }
}
