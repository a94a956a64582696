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
    public static func stream(
        weights source: some WeightSource, stats: StatsFile, recipe: QuantizationRecipe, parallelism: Parallelism,
        progress: Calibrator.Progress? = nil, keepTransformed: Bool = false,
        embedding onEmbedding: (QuantizedMatrix) throws -> Void, block onBlock: (Int, QuantizedBlock) throws -> Void
    ) throws -> StreamResult {
        try checkKeepFloat(recipe.keepFloat, source.config)
        let c = source.config
        let plan = try MethodPlan(recipe.method, stats: stats.stats, config: c, seed: recipe.seed, alpha: recipe.alpha)
        let quantizer = LayerQuantizer(recipe: recipe)

        // Outside the blocks, one V x D Double at a time: an untied head (norm_f folded in, R1);
        // the embedding (R1). A tied head stays tied: norm_f's weight becomes the head-input
        // matrix R1ᵀ diag(w) R1, and the embedding's table, quantized as the head (its bits and
        // groups, per-row scales), is both (docs/DESIGN.md section 2, "One table").
        // GPTQ rounds the head (a tied table too) last, against its input's Hessian from the
        // second pass; until then the transformed head waits in float32.
        let headByGPTQ = recipe.weightRounding == .gptq && !recipe.keepsFloat(module: QuantizedNames.lmHead)
        let normF = try source.readNormF().storage.map(Double.init)
        var lmHeadWeights: QuantizedLayer? = nil
        var pendingHead: Tensor? = nil
        var transformedHead: Tensor? = nil
        var headInput: Tensor? = nil
        if let untied = try source.readLMHead() {
            var head = Matrix(untied), folded: [Double]? = normF
            plan.transformHead(&head, normF: &folded)
            if headByGPTQ { pendingHead = head.tensor } else {
                lmHeadWeights = try quantizer.weights(QuantizedNames.lmHead, head, bias: nil, groups: true, threads: parallelism.threads)
            }
            if keepTransformed { transformedHead = head.tensor }
        } else {
            headInput = plan.headInputTransform(normF: normF).tensor
        }
        var emb = Matrix(try source.readEmbedding())
        plan.transformEmbedding(&emb)
        let tiedHead = headInput != nil && !recipe.keepsFloat(module: QuantizedNames.lmHead)
        var tiedTable: QuantizedMatrix? = nil
        if tiedHead {
            if !headByGPTQ { tiedTable = QuantizedMatrix(quantizing: emb, bits: recipe.bits.weight, groupSize: recipe.groupSize, threads: parallelism.threads) }
        } else {
            try onEmbedding(QuantizedMatrix(quantizing: emb, bits: 8, threads: parallelism.threads))
            // A tied head kept float: a float copy of the table beside the int8 embedding.
            if headInput != nil { lmHeadWeights = QuantizedLayer(weight: nil, floatWeight: emb.tensor, bias: nil, input: nil) }
        }
        if headInput != nil && keepTransformed { transformedHead = emb.tensor }
        let table = FloatEmbedding(table: emb.tensor)
        emb = Matrix(rows: 0, cols: 0, data: [])

        // The blocks: transformed and their weights quantized when the second pass asks for
        // layer i, given their static scales once the windows have passed through it.
        let layers = TransformedLayers(source: source, plan: plan, stats: stats.stats, quantizer: quantizer, table: table, keep: keepTransformed,
                                       threads: parallelism.threads)
        layers.headInput = headInput.map { FloatLinear(weight: $0) }
        let final = try Calibrator.run(source: layers, windows: stats.windows, parallelism: parallelism, progress: progress,
                                       hessianSites: layers.hessianSites.union(headByGPTQ ? [.lmHeadInput] : [])) { i, secondPass in
            try onBlock(i, try layers.finish(layer: i, secondPass: secondPass))
        }
        if headByGPTQ {
            guard let h = try final.site(nil, .lmHeadInput).moments?.symmetrized.sumOfProducts else {
                preconditionFailure("the second pass gathered no Hessian at the head's input")
            }
            let weights = Matrix(pendingHead ?? table.table)
            pendingHead = nil
            try layers.timeGPTQ {
                let head = try quantizer.weights(QuantizedNames.lmHead, weights, bias: nil, groups: true, hessian: h, threads: parallelism.threads)
                if tiedHead { tiedTable = head.weight } else { lmHeadWeights = head }
            }
        }
        if let tiedTable {
            try onEmbedding(tiedTable)
            lmHeadWeights = QuantizedLayer(weight: tiedTable, floatWeight: nil, bias: nil, input: nil)
        }
        var config = c
        config.json["tie_word_embeddings"] = .bool(tiedHead)
        let lmHead = lmHeadWeights!.with(input: try quantizer.activation(final, nil, .lmHeadInput))
        let transformed = transformedHead.map { h in
            MambaLM(config: c, embedding: table, blocks: layers.kept, normF: nil, headInput: layers.headInput, lmHead: FloatLinear(weight: h))
        }
        return StreamResult(config: config, lmHead: lmHead, transforms: plan.globalLog + layers.log, transformed: transformed,
                            headInput: headInput, tiedHead: tiedHead, gptqSeconds: layers.gptqSeconds)
    }
}

/// The recipe's rounding of weights and activations.
struct LayerQuantizer {
    let recipe: QuantizationRecipe

    /// A module's weights (or its float weights when kept float); the input quantizer comes later.
    /// With `hessian` (Xᵀ X of the module's input), rounded by GPTQ on the scales round-to-nearest
    /// would use.
    func weights(_ name: String, _ w: Matrix, bias: [Double]?, groups: Bool, hessian: [Double]? = nil, threads: Int = 1) throws -> QuantizedLayer {
        let b = bias.map(floatVector)
        if recipe.keepsFloat(module: name) { return QuantizedLayer(weight: nil, floatWeight: w.tensor, bias: b, input: nil) }
        let (bits, group) = (recipe.bits.weight, groups ? recipe.groupSize : nil)
        var q = QuantizedMatrix(quantizing: w, bits: bits, groupSize: group, threads: threads)
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

    /// The activation quantizer of a site: dynamic, or static from the second pass's clip. With
    /// `groups`, one static scale per contiguous channel group: the group's own absmax, capped at
    /// the site's clip (so a group's scale is never coarser than the tensor's).
    func activation(_ stats: CalibrationStats, _ layer: Int?, _ site: Site, groups: Int? = nil) throws -> ActivationQuantizer {
        let ab = recipe.bits.activation
        if let scale = recipe.activationScale { return ActivationQuantizer(bits: ab, scale: scale) }
        let s = try stats.site(layer, site)
        let (clip, q) = (s.clip(recipe.clip.quantile), Float(qmax(bits: ab)))
        guard let groups, groups > 0, s.channels % groups == 0 else { return ActivationQuantizer(bits: ab, scale: .static(clip / q)) }
        let size = s.channels / groups
        return ActivationQuantizer(bits: ab, scale: .groups((0..<groups).map { g in
            min(clip, s.range.absmax[(g * size)..<((g + 1) * size)].max()!) / q
        }))
    }
}

extension QuantizedLayer {
    /// The same weights with their input quantizer (none for a module kept in float).
    func with(input: ActivationQuantizer) -> QuantizedLayer {
        QuantizedLayer(weight: weight, floatWeight: floatWeight, bias: bias, input: weight == nil ? nil : input)
    }
}

/// The second pass's layer source: layer i transformed on demand and quantized at once; the
/// quantized block (without its activation scales) waits for the second pass, while the layer's
/// Double parameters are released as soon as its float block is built.
final class TransformedLayers<Source: WeightSource>: LayerSource {
    let source: Source
    let plan: MethodPlan
    let stats: CalibrationStats
    let quantizer: LayerQuantizer
    let table: FloatEmbedding
    let keep: Bool
    let threads: Int
    var pending: (layer: Int, block: QuantizedBlock)?
    /// GPTQ's linears of the pending layer: their transformed weights wait for the second pass's Hessians.
    var pendingWeights: [String: (weight: Matrix, bias: [Double]?, groups: Bool)] = [:]
    var log: [AppliedTransform] = []
    /// Transformed float blocks, when the caller keeps the transformed model.
    var kept: [MambaBlock] = []
    /// A tied head's input matrix: the second pass observes the head's input after it.
    var headInput: (any LinearOp)?
    /// Wall time of GPTQ's rounding (Cholesky and column loop; not the Hessians' accumulation).
    var gptqSeconds = 0.0

    init(source: Source, plan: MethodPlan, stats: CalibrationStats, quantizer: LayerQuantizer, table: FloatEmbedding, keep: Bool, threads: Int) {
        (self.source, self.plan, self.stats, self.quantizer, self.table, self.keep, self.threads) = (source, plan, stats, quantizer, table, keep, threads)
    }

    /// Runs `body`, adding its wall time to `gptqSeconds`.
    func timeGPTQ(_ body: () throws -> Void) throws {
        gptqSeconds += try measureSeconds { try body() }
    }

    /// The inputs of the linears GPTQ rounds: the second pass gathers their Hessians.
    var hessianSites: Set<Site> {
        guard quantizer.recipe.weightRounding == .gptq else { return [] }
        return config.distinctKinds.reduce(into: Set<Site>()) { $0.formUnion($1.spec.linearInputs) }
    }

    var config: MambaConfig { source.config }

    func embed(_ windows: [[Int]]) throws -> [Tensor] { windows.map { table.forward($0) } }

    func block(_ i: Int) throws -> MambaBlock {
        var b = BlockParameters(try source.readLayer(i), config: config)
        // The second pass runs windows one thread each with OpenBLAS single-threaded; the layer's
        // Double products get the whole budget.
        log += try BLAS.withThreads(threads) { try plan.apply(layer: i, to: &b, stats: stats) }
        let (m, prefix) = (b.mixer, BlockNames.mixerPrefix(layer: i))
        var modules: [String: QuantizedLayer] = [:]
        for spec in m.spec.modules {
            if quantizer.roundsByGPTQ(spec, name: prefix + spec.name) {
                pendingWeights[spec.name] = (m.weight(spec.name), m.biases[spec.name], spec.allowsGroups)
                continue
            }
            modules[spec.name] = try quantizer.weights(prefix + spec.name, m.weight(spec.name), bias: m.biases[spec.name], groups: spec.allowsGroups,
                                                       threads: threads)
        }
        pending = (i, QuantizedBlock(
            norm: b.norm.map(floatVector),
            mixer: QuantizedMixer(
                kind: m.kind, modules: modules, tensors: m.tensors, scanInputs: [:],
                gateSmoothing: m.gateSmoothing.map { $0.map(Float.init) },
                hadamardSigns: m.onlineRotations.mapValues { $0.signs.map(Float.init) })))
        let float = b.floatBlock(layer: i)
        if keep { kept.append(float) }
        return float
    }

    func finalNorm() throws -> Tensor? { nil }   // folded into the head or the head-input matrix
    func headInputLinear() throws -> (any LinearOp)? { headInput }

    /// Layer i with the static scales of its module inputs and scan inputs from the second pass.
    func finish(layer i: Int, secondPass: CalibrationStats) throws -> QuantizedBlock {
        guard let (layer, built) = pending, layer == i else { preconditionFailure("layer \(i) finished before it was built") }
        pending = nil
        var b = built
        let spec = b.mixer.spec
        for module in spec.modules {
            guard let (w, bias, groups) = pendingWeights.removeValue(forKey: module.name) else { continue }
            guard let h = try secondPass.site(i, module.input).moments?.symmetrized.sumOfProducts else {
                preconditionFailure("the second pass gathered no Hessian at \(module.input)")
            }
            try timeGPTQ {
                b.mixer.modules[module.name] = try quantizer.weights(BlockNames.mixerPrefix(layer: i) + module.name, w, bias: bias, groups: groups,
                                                                     hessian: h, threads: threads)
            }
        }
        for module in spec.modules {
            b.mixer.modules[module.name] = b.mixer.modules[module.name]!.with(input: try quantizer.activation(secondPass, i, module.input))
        }
        for (site, _) in spec.scanInputs where !quantizer.recipe.keepsFloat(scanInput: site) {
            let groups = quantizer.recipe.scanScales == .group ? spec.scanScaleGroups(site, config) : nil
            b.mixer.scanInputs[site] = try quantizer.activation(secondPass, i, site, groups: groups)
        }
        return b
    }
}
