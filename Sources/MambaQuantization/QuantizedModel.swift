import Foundation
import MambaCalibration
import MambaModel
import MambaTensors
import MambaTransforms

/// A linear (or conv) layer of the quantized model: integer weights with their scales and the
/// static scale of its input, or float weights for a module kept in float.
public struct QuantizedLayer: Sendable {
    public var weight: QuantizedMatrix?    // nil: kept float
    public var floatWeight: Tensor?
    public var bias: Tensor?
    public var input: ActivationQuantizer?

    /// The int8 GEMM where the weights have one scale per output channel; group-wise weights (w4
    /// with --group-size) run on the reference path.
    public func linear(_ runtime: QuantizedRuntime = .int8) -> any LinearOp {
        if let weight, let input {
            if runtime == .int8 && weight.groupSize == nil { return Int8Linear(weight: weight, bias: bias, input: input) }
            return ReferenceQuantizedLinear(weight: weight, bias: bias, input: input)
        }
        return FloatLinear(weight: floatWeight!, bias: bias)
    }

    public func conv(_ runtime: QuantizedRuntime = .int8) -> any ConvOp {
        if let weight, let input {
            if runtime == .int8 && input.scale.staticScale != nil && weight.groupSize == nil {
                return Int8Conv(weight: weight, bias: bias, input: input)
            }
            return ReferenceQuantizedConv(weight: weight, bias: bias, input: input)
        }
        return FloatConv(weight: floatWeight!, bias: bias)
    }

    public var weightBytes: Int { weight.map { $0.values.count + 4 * $0.scales.count } ?? 4 * (floatWeight?.count ?? 0) }
}

public struct QuantizedMixer: Sendable {
    public var inProj, conv, xProj, dtProj, outProj: QuantizedLayer
    public var aLog: Tensor
    public var dSkip: Tensor
    /// Static quantizers of the SSM inputs x (conv output), dt, B, C.
    public var scanInputs: [Site: ActivationQuantizer]
    public var gateSmoothing: [Float]?
    public var hadamardSigns: [Float]?
}

public struct QuantizedBlock: Sendable {
    public var norm: Tensor?               // nil: all ones (folded)
    public var mixer: QuantizedMixer
}

/// The quantized model: what `quantize` writes and `generate`, `evaluate` and `compare` run.
public struct QuantizedModel: Sendable {
    public var config: MambaConfig
    public var recipe: QuantizationRecipe
    public var embedding: QuantizedMatrix  // int8 per row
    public var blocks: [QuantizedBlock]
    public var lmHead: QuantizedLayer
    public var transforms: [AppliedTransform]

    /// The model with its leaf ops swapped for quantized ones (the same forward as float). On the
    /// int8 runtime the linears run int8 GEMMs and the conv sums integers; the SSM inputs take the
    /// same integer grids on both runtimes and the recurrence runs in float32.
    public func model(runtime: QuantizedRuntime = .int8) -> MambaLM {
        MambaLM(config: config, embedding: QuantizedEmbedding(table: embedding), blocks: blocks.map { b in
            let m = b.mixer
            return MambaBlock(norm: b.norm, mixer: MambaMixer(
                inProj: m.inProj.linear(runtime), conv: m.conv.conv(runtime), xProj: m.xProj.linear(runtime), dtProj: m.dtProj.linear(runtime),
                scanInput: ReferenceQuantizedScanInput(quantizers: m.scanInputs),
                scan: SelectiveScan(aLog: m.aLog, dSkip: m.dSkip),
                gate: m.gateSmoothing.map { SmoothSiLUGate(s: $0) } ?? SiLUGate(),
                outProjRotation: m.hadamardSigns.map { OnlineHadamard(signs: $0, hadamard: Hadamard(size: $0.count)!) },
                outProj: m.outProj.linear(runtime)))
        }, normF: nil, lmHead: lmHead.linear(runtime))
    }

    /// Bytes of the weights as stored (integers one per byte, scales, float tensors).
    public var weightBytes: Int {
        var n = embedding.values.count + 4 * embedding.scales.count + lmHead.weightBytes
        for b in blocks {
            let m = b.mixer
            n += [m.inProj, m.conv, m.xProj, m.dtProj, m.outProj].reduce(0) { $0 + $1.weightBytes }
            n += 4 * (m.aLog.count + m.dSkip.count + (b.norm?.count ?? 0) + (m.gateSmoothing?.count ?? 0) + (m.hadamardSigns?.count ?? 0))
            n += 4 * ([m.inProj.bias, m.conv.bias, m.dtProj.bias, m.outProj.bias].compactMap { $0?.count }.reduce(0, +))
        }
        return n + 4 * config.hiddenSize
    }
}

extension QuantizedModel {
    /// The whole pipeline: transforms of the recipe's method on the float parameters (Double), a
    /// second calibration pass of the transformed float model over the stats file's token windows,
    /// then weights quantized per output channel and static activation scales from that pass.
    public static func quantize(
        weights: MambaWeights, stats: StatsFile, recipe: QuantizationRecipe, parallelism: Parallelism,
        progress: Calibrator.Progress? = nil
    ) throws -> QuantizedModel {
        try quantizeKeepingTransformed(weights: weights, stats: stats, recipe: recipe, parallelism: parallelism, progress: progress).quantized
    }

    /// `quantize`, also returning the transformed float model before rounding (what per-site SQNR
    /// compares the quantized model with).
    public static func quantizeKeepingTransformed(
        weights: MambaWeights, stats: StatsFile, recipe: QuantizationRecipe, parallelism: Parallelism,
        progress: Calibrator.Progress? = nil
    ) throws -> (quantized: QuantizedModel, transformed: MambaLM) {
        var p = ModelParameters(weights: weights)
        let log = try applyPlan(recipe.method, to: &p, stats: stats.stats, seed: recipe.seed, alpha: recipe.alpha)
        let transformed = p.floatModel()
        let final = try Calibrator.run(model: transformed, windows: stats.windows, parallelism: parallelism, progress: progress)
        let (wb, ab) = (recipe.bits.weight, recipe.bits.activation)

        func activation(_ layer: Int?, _ site: Site) throws -> ActivationQuantizer {
            if recipe.dynamicActivations { return ActivationQuantizer(bits: ab, scale: .dynamic) }
            let clip = try final.site(layer, site).clip(recipe.clip.quantile)
            return ActivationQuantizer(bits: ab, scale: .static(clip / Float(qmax(bits: ab))))
        }
        func layer(_ name: String, _ w: Matrix, bias: [Double]?, input: ActivationQuantizer, groups: Bool = true) -> QuantizedLayer {
            let b = bias.map { Tensor(shape: [$0.count], storage: $0.map(Float.init)) }
            if recipe.keepFloat.contains(name) { return QuantizedLayer(weight: nil, floatWeight: w.tensor, bias: b, input: nil) }
            return QuantizedLayer(weight: QuantizedMatrix(quantizing: w, bits: wb, groupSize: groups ? recipe.groupSize : nil), floatWeight: nil, bias: b, input: input)
        }

        var blocks: [QuantizedBlock] = []
        for (i, b) in p.blocks.enumerated() {
            let m = b.mixer
            let prefix = "backbone.layers.\(i).mixer."
            let xq = try activation(i, .convOutput)
            blocks.append(QuantizedBlock(norm: b.norm.map { Tensor(shape: [$0.count], storage: $0.map(Float.init)) }, mixer: QuantizedMixer(
                inProj: layer(prefix + "in_proj", m.inProj, bias: m.inProjBias, input: try activation(i, .inProjInput)),
                conv: layer(prefix + "conv1d", m.conv, bias: m.convBias, input: try activation(i, .x), groups: false),
                xProj: layer(prefix + "x_proj", m.xProj, bias: nil, input: xq),
                dtProj: layer(prefix + "dt_proj", m.dtProj, bias: m.dtProjBias, input: try activation(i, .dtLow)),
                outProj: layer(prefix + "out_proj", m.outProj, bias: m.outProjBias, input: try activation(i, .outProjInput)),
                aLog: m.aLog, dSkip: m.dSkip,
                scanInputs: [.convOutput: xq, .dt: try activation(i, .dt), .B: try activation(i, .B), .C: try activation(i, .C)],
                gateSmoothing: m.gateSmoothing.map { $0.map(Float.init) },
                hadamardSigns: m.outProjRotation.map { $0.signs.map(Float.init) })))
        }
        var config = p.config
        config.json["tie_word_embeddings"] = .bool(false)
        let q = QuantizedModel(
            config: config, recipe: recipe, embedding: QuantizedMatrix(quantizing: p.embedding, bits: 8),
            blocks: blocks, lmHead: layer("lm_head", p.lmHead!, bias: nil, input: try activation(nil, .lmHeadInput)),
            transforms: log)
        return (q, transformed)
    }
}
