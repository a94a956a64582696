import MambaCalibration
import MambaModel
import MambaTensors
import MambaTransforms

// MambaQuant on a Vision Mamba (docs/DESIGN.md section 9): the blocks go through the same
// per-layer plan, rounding and second pass as a language model's (LayerQuantizer, WindowStreams);
// what differs is outside them. The residual stream starts at the patch embedding, the cls token
// and the position embedding, so R1 turns each of them into x R1 (the patch embedding's output
// rows: W -> R1ᵀ W, b -> b R1); norm_f folds into the head's columns and R1 follows (W -> W R1), as
// for an untied lm_head. The patch embedding stays float32 (it reads the pixels, about 2% of a
// Vim-T forward); the head is quantized like lm_head (`--keep-float head` keeps it float).

/// A quantized Vision Mamba, in memory.
public struct QuantizedVisionMamba: Sendable {
    public static let headModule = "head"

    public var config: MambaConfig
    public var recipe: QuantizationRecipe
    /// The transformed float patch embedding [D, C p p], its bias [D], cls token [D] and position
    /// embedding [T, D].
    public var patchWeight: Tensor
    public var patchBias: Tensor
    public var classToken: Tensor?
    public var positionEmbedding: Tensor?
    public var blocks: [QuantizedBlock]
    public var head: QuantizedLayer
    public var transforms: [AppliedTransform]

    /// The model with its leaf ops quantized on `runtime` (the same forward as float).
    public func model(runtime: QuantizedRuntime = .int8) -> VisionMamba {
        VisionMamba(config: config, patchEmbed: FloatLinear(weight: patchWeight, bias: patchBias), classToken: classToken,
                    positionEmbedding: positionEmbedding, blocks: blocks.enumerated().map { i, b in b.block(runtime: runtime, config: config, layer: i) },
                    normF: nil, head: head.linear(runtime))
    }

    /// Bytes of the weights as stored (the float tensors outside the blocks included).
    public var weightBytes: Int {
        4 * (patchWeight.count + patchBias.count + (classToken?.count ?? 0) + (positionEmbedding?.count ?? 0))
            + blocks.reduce(0) { $0 + $1.weightBytes } + head.storedBytes
    }

    /// The pipeline: the recipe's method on the float model's weights, its weights rounded, and
    /// the static scales from a second pass of the calibration images through the transformed
    /// float model, a layer at a time. With `keepTransformed`, also hands back that transformed
    /// float model (for the tests that every transform keeps the logits; it holds every layer in
    /// float32, so it is not kept otherwise).
    public static func quantize(weights source: CheckpointWeights, stats: CalibrationStats, images: Tensor, recipe: QuantizationRecipe,
                                parallelism: Parallelism, progress: Calibrator.Progress? = nil,
                                keepTransformed: Bool = false) throws -> (quantized: QuantizedVisionMamba, transformed: VisionMamba?) {
        try quantize(outer: try VisionOuterWeights(checkpoint: source), layers: source, stats: stats, images: images, recipe: recipe,
                     parallelism: parallelism, progress: progress, keepTransformed: keepTransformed)
    }

    /// The pipeline on the tensors around the blocks and a source of the blocks' weights (a
    /// checkpoint read a layer at a time, or weights in memory).
    public static func quantize(outer o: VisionOuterWeights, layers source: some WeightSource, stats: CalibrationStats, images: Tensor,
                                recipe: QuantizationRecipe, parallelism: Parallelism, progress: Calibrator.Progress? = nil,
                                keepTransformed: Bool = false) throws -> (quantized: QuantizedVisionMamba, transformed: VisionMamba?) {
        let c = o.config
        guard let v = c.vision else { preconditionFailure("a Vision Mamba's outer weights without a vision config") }
        try QuantizedModel.checkKeepFloat(recipe.keepFloat.filter { $0 != headModule }, c)
        let plan = try MethodPlan(recipe.method, stats: stats, config: c, seed: recipe.seed, alpha: recipe.alpha)
        let quantizer = LayerQuantizer(recipe: recipe, threads: parallelism.threads)
        let d = c.hiddenSize

        // Outside the blocks: every vector that lands in the residual stream times R1 (the patch
        // embedding's weight as its transpose [C p p, D], whose rows are such vectors).
        func rotated(_ t: Tensor, rows: Int) -> Tensor {
            var m = Matrix(t.reshaped([rows, d]))
            plan.transformEmbedding(&m)
            return m.tensor
        }
        let patchWeight = rotated(Matrix(o.patchWeight).transposed.tensor, rows: v.patchFeatures)
        let transformedPatch = Matrix(patchWeight).transposed.tensor                      // [D, C p p]
        let patchBias = rotated(o.patchBias, rows: 1).reshaped([d])
        let classToken = o.classToken.map { rotated($0, rows: 1).reshaped([d]) }
        let positionEmbedding = o.positionEmbedding.map { rotated($0, rows: v.tokens) }
        var head = Matrix(o.headWeight), normF: [Double]? = o.normF.storage.map(Double.init)
        plan.transformHead(&head, normF: &normF)
        let headBias = o.headBias
        let headByGPTQ = recipe.weightRounding == .gptq && !recipe.keepsFloat(module: headModule)

        let outer = VisionMamba(config: c, patchEmbed: FloatLinear(weight: transformedPatch, bias: patchBias), classToken: classToken,
                                positionEmbedding: positionEmbedding, blocks: [], normF: nil, head: FloatLinear(weight: head.tensor, bias: headBias))
        let streams = WindowStreams(outer.embedAll(images, parallelism), config: c, parallelism: parallelism,
                                    hessianSites: quantizer.hessianSites(c).union(headByGPTQ ? [.lmHeadInput] : []), kltMoments: false)
        var log = plan.globalLog.map { $0.step == "fold_norms" ? AppliedTransform(step: $0.step, layer: nil, detail: "block norms into in_proj; norm_f into the head") : $0 }
        var blocks: [QuantizedBlock] = [], floatBlocks: [MambaBlock] = []
        for i in 0..<c.numLayers {
            var (layer, block) = try quantizer.transformAndRound(try source.readLayer(i), layer: i, config: c, plan: plan, stats: stats, log: &log)
            try streams.advance(through: block, layer: i)
            if keepTransformed { floatBlocks.append(block) }
            progress?((i + 1) * streams.count, c.numLayers * streams.count)
            _ = try quantizer.roundAwaiting(&layer, layer: i, secondPass: streams.stats)
            blocks.append(try quantizer.withStaticScales(layer.block, layer: i, secondPass: streams.stats, config: c))
            streams.dropHessians(layer: i)
        }
        var transformed = outer
        transformed.blocks = floatBlocks
        try streams.observeHead { [outer] u in outer.headInput(u) }     // norm_f folded: the head's input needs no block
        let hessian = headByGPTQ ? try streams.stats.site(nil, .lmHeadInput).moments?.symmetrized.sumOfProducts : nil
        let quantizedHead = try quantizer.weights(headModule, head, bias: headBias.storage.map(Double.init), groups: true, hessian: hessian)
            .with(input: try quantizer.activation(streams.stats, nil, .lmHeadInput))
        log.append(.init(step: "outside the blocks", layer: nil,
                         detail: "patch embedding, cls token and position embedding" + (plan.residualRotation == nil ? "" : " times R1") + ", kept float32; head " + (recipe.keepsFloat(module: headModule) ? "kept float32" : "quantized")))
        let q = QuantizedVisionMamba(config: c, recipe: recipe, patchWeight: transformedPatch, patchBias: patchBias, classToken: classToken,
                                     positionEmbedding: positionEmbedding, blocks: blocks, head: quantizedHead, transforms: log)
        return (q, keepTransformed ? transformed : nil)
    }
}

extension QuantizedVisionMamba {
    /// Writes the checkpoint directory (FORMAT.md "Vision Mamba"): the blocks under the tool's
    /// names as a language model's, the tensors around them in Vim's names.
    public func write(directory: String, sourceDirectory: String, provenance: QuantizationProvenance) throws {
        let w = try QuantizedCheckpointWriter(directory: directory, sourceDirectory: sourceDirectory)
        do {
            for (i, b) in blocks.enumerated() { try w.add(block: b, layer: i, config: config) }
            try w.finishVision(self, provenance: provenance)
        } catch {
            w.abandon()
            throw error
        }
    }

    /// Reads a quantized Vision Mamba; every tensor is checked for presence, dtype and shape, and
    /// one the format does not use is refused.
    public static func load(directory: String) throws -> QuantizedVisionMamba {
        let config = try MambaConfig.load(directory: directory)
        guard let v = config.vision else { throw MambaError(.unsupportedModel, "\(directory) is not a Vision Mamba") }
        guard let json = config.json["quantization"], json.object != nil else {
            throw MambaError(.badConfig, "\(directory)/config.json has no \"quantization\" object: not a quantized checkpoint")
        }
        let object = try QuantizationObject(json: json, source: directory + "/config.json")
        let reader = QuantizedCheckpointReader(directory: directory, store: try TensorStore(directory: directory), object: object, config: config)
        let d = config.hiddenSize
        let patchWeight = try reader.floats(VisionParameter.patchWeight.name, [d, v.channels, v.patchSize, v.patchSize]).reshaped([d, v.patchFeatures])
        let patchBias = try reader.floats(VisionParameter.patchBias.name, [d])
        let classToken = v.classToken == .none ? nil : try reader.floats(VisionParameter.classToken.name, [1, 1, d]).reshaped([d])
        let positionEmbedding = v.positionEmbedding ? try reader.floats(VisionParameter.positionEmbedding.name, [1, v.tokens, d]).reshaped([v.tokens, d]) : nil
        let blocks = try (0..<config.numLayers).map(reader.block)
        _ = try reader.floats(QuantizedNames.normF, [d])
        let head = try reader.layer(headModule, rows: v.classes, cols: d, bias: true)
        if let extra = reader.store.names.first(where: { !reader.used.contains($0) }) {
            throw MambaError(.unusedTensor, "\(directory) has tensor \(extra), which this quantized format does not use")
        }
        return QuantizedVisionMamba(config: config, recipe: object.recipe, patchWeight: patchWeight, patchBias: patchBias, classToken: classToken,
                                    positionEmbedding: positionEmbedding, blocks: blocks, head: head,
                                    transforms: object.transforms.map { AppliedTransform(step: $0, layer: nil, detail: "") })
    }

    /// A float or a quantized Vision Mamba checkpoint, by its config: what `classify` runs.
    public static func loadAny(directory: String, runtime: QuantizedRuntime = .int8) throws -> VisionMamba {
        QuantizedModel.isQuantized(directory: directory) ? try load(directory: directory).model(runtime: runtime) : try VisionMamba.load(directory: directory)
    }
}
