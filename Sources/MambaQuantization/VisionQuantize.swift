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
    /// float model, a layer at a time. Also hands back that transformed float model (for per-site
    /// SQNR and the tests that every transform keeps the logits).
    public static func quantize(weights source: CheckpointWeights, stats: CalibrationStats, images: Tensor, recipe: QuantizationRecipe,
                                parallelism: Parallelism, progress: Calibrator.Progress? = nil) throws -> (quantized: QuantizedVisionMamba, transformed: VisionMamba) {
        let c = source.config
        guard let v = c.vision else { throw MambaError(.unsupportedModel, "\(source.store.directory) is not a Vision Mamba") }
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
        let float = try VisionMamba(checkpoint: source)
        let patch = (float.patchEmbed as! FloatLinear)
        let patchWeight = rotated(Matrix(patch.weight).transposed.tensor, rows: v.patchFeatures)
        let transformedPatch = Matrix(patchWeight).transposed.tensor                      // [D, C p p]
        let patchBias = rotated(patch.bias!, rows: 1).reshaped([d])
        let classToken = float.classToken.map { rotated($0, rows: 1).reshaped([d]) }
        let positionEmbedding = float.positionEmbedding.map { rotated($0, rows: v.tokens) }
        var head = Matrix(try source.tensor(VisionParameter.headWeight.name)), normF: [Double]? = try source.readNormF().storage.map(Double.init)
        plan.transformHead(&head, normF: &normF)
        let headBias = try source.tensor(VisionParameter.headBias.name)
        let headByGPTQ = recipe.weightRounding == .gptq && !recipe.keepsFloat(module: headModule)

        let outer = VisionMamba(config: c, patchEmbed: FloatLinear(weight: transformedPatch, bias: patchBias), classToken: classToken,
                                positionEmbedding: positionEmbedding, blocks: [], normF: nil, head: FloatLinear(weight: head.tensor, bias: headBias))
        let streams = WindowStreams(outer.embedAll(images, parallelism), config: c, parallelism: parallelism,
                                    hessianSites: quantizer.hessianSites(c).union(headByGPTQ ? [.lmHeadInput] : []))
        var log = plan.globalLog, blocks: [QuantizedBlock] = [], floatBlocks: [MambaBlock] = []
        for i in 0..<c.numLayers {
            var (layer, block) = try quantizer.transformAndRound(try source.readLayer(i), layer: i, config: c, plan: plan, stats: stats, log: &log)
            try streams.advance(through: block, layer: i)
            floatBlocks.append(block)
            progress?((i + 1) * streams.count, c.numLayers * streams.count)
            _ = try quantizer.roundAwaiting(&layer, layer: i, secondPass: streams.stats)
            blocks.append(try quantizer.withStaticScales(layer.block, layer: i, secondPass: streams.stats, config: c))
            streams.dropHessians(layer: i)
        }
        var transformed = outer
        transformed.blocks = floatBlocks
        try streams.observeHead { [transformed] u in transformed.headInput(u) }
        let hessian = headByGPTQ ? try streams.stats.site(nil, .lmHeadInput).moments?.symmetrized.sumOfProducts : nil
        let quantizedHead = try quantizer.weights(headModule, head, bias: headBias.storage.map(Double.init), groups: true, hessian: hessian)
            .with(input: try quantizer.activation(streams.stats, nil, .lmHeadInput))
        log.append(.init(step: "outside the blocks", layer: nil,
                         detail: "patch embedding, cls token and position embedding" + (plan.residualRotation == nil ? "" : " times R1") + ", kept float32; head " + (recipe.keepsFloat(module: headModule) ? "kept float32" : "quantized")))
        let q = QuantizedVisionMamba(config: c, recipe: recipe, patchWeight: transformedPatch, patchBias: patchBias, classToken: classToken,
                                     positionEmbedding: positionEmbedding, blocks: blocks, head: quantizedHead, transforms: log)
        return (q, transformed)
    }
}
