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

    public init(weight: QuantizedMatrix?, floatWeight: Tensor?, bias: Tensor?, input: ActivationQuantizer?) {
        self.weight = weight; self.floatWeight = floatWeight; self.bias = bias; self.input = input
    }

    /// The int8 GEMM (blocked where the weights have groups or the input block scales); the
    /// reference path where the kernels cannot take the combination (groups not a multiple of 4,
    /// groups and input blocks of different sizes).
    public func linear(_ runtime: QuantizedRuntime = .int8) -> any LinearOp {
        if let weight, let input {
            if runtime == .int8 && PackedInt8Matrix.supports(weight, inputBlock: input.scale.block) {
                return Int8Linear(weight: weight, bias: bias, input: input)
            }
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

    /// Input channels: a linear's columns, a depthwise conv's taps.
    public var inFeatures: Int { weight?.cols ?? floatWeight!.cols }

    public var weightBytes: Int { weight?.storedBytes ?? 4 * (floatWeight?.count ?? 0) }

    /// The weights and the bias as stored.
    public var storedBytes: Int { weightBytes + 4 * (bias?.count ?? 0) }
}

extension QuantizedMatrix {
    /// Integers (int4 two per byte, int8 one) and float32 scales, as stored.
    public var storedBytes: Int {
        (bits == 4 ? rows * Self.packedInt4Columns(cols) : values.count) + 4 * scales.count
    }
}

/// One quantized mixer: the quantized stage of the layer store (modules quantized or kept float,
/// vectors and artifacts in float32).
public typealias QuantizedMixer = LayerStore<QuantizedLayer>

public struct QuantizedBlock: Sendable {
    public var norm: Tensor?               // nil: all ones (folded)
    public var mixer: QuantizedMixer
    /// Static quantizers of the scan inputs, by site (none when kept float or dynamic).
    public var scanInputs: [Site: ActivationQuantizer]

    public init(norm: Tensor?, mixer: QuantizedMixer, scanInputs: [Site: ActivationQuantizer] = [:]) {
        (self.norm, self.mixer, self.scanInputs) = (norm, mixer, scanInputs)
    }

    /// Bytes as stored: the modules, the float tensors (vectors and artifacts) and the norm.
    public var weightBytes: Int {
        let floats = mixer.tensors.values.reduce(0) { $0 + $1.count } + (norm?.count ?? 0)
        return mixer.modules.values.reduce(0) { $0 + $1.storedBytes } + 4 * floats
    }

    /// The block with its leaf ops swapped for quantized ones on `runtime`.
    public func block(runtime: QuantizedRuntime, config: MambaConfig, layer: Int) -> MambaBlock {
        let ops = LayerOpSource(mixer, linear: { $0.linear(runtime) }, conv: { $0.conv(runtime) },
                                scanInput: ReferenceQuantizedScanInput(quantizers: scanInputs))
        return MambaBlock(norm: norm, mixer: mixer.spec.makeMixer(ops, config, layer: layer))
    }
}

/// The quantized model: what `quantize` writes and `generate`, `evaluate` and `compare` run.
public struct QuantizedModel: Sendable {
    public var config: MambaConfig
    public var recipe: QuantizationRecipe
    public var embedding: QuantizedMatrix  // int8 per row
    public var blocks: [QuantizedBlock]
    public var lmHead: QuantizedLayer
    public var transforms: [AppliedTransform]
    /// [D, D] float32 between norm_f and the head: a tied source's norm_f weight, rotated with R1
    /// (MambaLM.headInput); nil when norm_f was folded into an untied head.
    public var headInput: Tensor? = nil
    /// One table for the embedding and the head: `lmHead.weight` is `embedding` (the head's bits and
    /// groups, per-row scales = the head's per-output-channel scales), stored and held once.
    public var tiedHead = false
    /// Whether the head-input matrix and A_log go to disk in F16 (format 4; their values are halves:
    /// the pipeline rounded them). A checkpoint read from an older format keeps F32 when written again.
    public var halfTensors = true

    /// The model with its leaf ops swapped for quantized ones (the same forward as float). On the
    /// int8 runtime the linears run int8 GEMMs and the conv sums integers; the SSM inputs take the
    /// same integer grids on both runtimes and the recurrence runs in float32.
    public func model(runtime: QuantizedRuntime = .int8) -> MambaLM {
        outerModel(blocks: blocks.enumerated().map { i, b in b.block(runtime: runtime, config: config, layer: i) }, runtime: runtime)
    }

    /// The language model around `blocks`: the embedding, norm_f's head-input matrix and the head;
    /// a tied head's embedding reads the head's packed panels on the int8 runtime (one table in
    /// memory; the reference runtime shares the integers' storage).
    func outerModel(blocks: [MambaBlock], runtime: QuantizedRuntime) -> MambaLM {
        let head = lmHead.linear(runtime)
        let table: any EmbeddingOp = tiedHead ? ((head as? Int8Linear).map { PackedTableEmbedding(table: $0.weight) } ?? QuantizedEmbedding(table: embedding))
            : QuantizedEmbedding(table: embedding)
        // The matrix is symmetric (R1ᵀ diag(w) R1), so the linear's x Mᵀ is x M.
        return MambaLM(config: config, embedding: table, blocks: blocks, normF: nil, headInput: headInput.map { FloatLinear(weight: $0) }, lmHead: head)
    }

    /// Bytes of the weights as stored (int4 two per byte, int8 one, scales, float tensors), a tied
    /// table once.
    public var weightBytes: Int {
        embedding.storedBytes + blocks.reduce(0) { $0 + $1.weightBytes } + (tiedHead ? 0 : lmHead.storedBytes)
            + 4 * ((headInput?.count ?? 0) + config.hiddenSize)
    }

    /// The head's module name (for --keep-float and the error budget).
    public static let lmHeadModule = QuantizedNames.lmHead

    /// Every module name `--keep-float` may list for this config: lm_head and each layer's
    /// quantizable modules (backbone.layers.N.mixer.NAME).
    public static func quantizableModules(_ c: MambaConfig) -> [String] {
        [QuantizedNames.lmHead] + (0..<c.numLayers).flatMap { i in c.mixer(layer: i).modules.map { BlockNames.mixerPrefix(layer: i) + $0.name } }
    }

    /// Every name `--keep-float` takes: the modules, their short names (every layer that has one),
    /// and the scan inputs.
    public static func keepFloatNames(_ c: MambaConfig) -> Set<String> {
        Set(quantizableModules(c) + c.moduleNames + c.moduleGroups + [QuantizationRecipe.allScanInputs] + c.scanInputSites.map(QuantizationRecipe.scanInputName))
    }

    /// Refuses a keep-float name that is not a quantizable module (a typo would otherwise quantize everything).
    public static func checkKeepFloat(_ names: Set<String>, _ c: MambaConfig) throws {
        let known = keepFloatNames(c)
        if let bad = names.sorted().first(where: { !known.contains($0) }) {
            let modules = c.moduleGroups.joined(separator: ",")
            let scan = c.scanInputSites.map(QuantizationRecipe.scanInputName).joined(separator: ", ")
            throw MambaError(.badInput, "keep-float names \(bad), which is not a quantized module or scan input (lm_head, {\(modules)} in every layer that has them, backbone.layers.N.mixer.{\(modules)} with N < \(c.numLayers), \(QuantizationRecipe.allScanInputs), or one of \(scan))")
        }
    }
}
