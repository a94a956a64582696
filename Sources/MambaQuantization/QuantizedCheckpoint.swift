import CMambaKernels
import Foundation
import MambaModel
import MambaTensors

// The quantized checkpoint, format version 1 (docs/DESIGN.md section 5 and FORMAT.md): config.json with a
// "quantization" object, model.safetensors with the float names plus suffixes, the source's
// tokenizer files. The names outside the mixers live in this file; each mixer's come from its
// description (MixerDescription.swift) plus the suffixes below.

enum QuantizedNames {
    /// The safetensors header's metadata, naming the format version config.json's
    /// "quantization" object gives.
    static func metadata(formatVersion: Int) -> [String: String] { ["format": "pt", "mambaquant": "quantized checkpoint format \(formatVersion)"] }
    static let embedding = "backbone.embeddings"
    static let lmHead = "lm_head"
    static let normF = "backbone.norm_f.weight"
    /// The head-input matrix [D, D] (format 3).
    static let headInput = "lm_head.input_transform"
    /// A mixer's float vectors stored in F16 from format 4: A_log (A = -exp(A_log)), the largest
    /// ([E, N] on Mamba-1: 5% of a bard-mamba-sized w4a8 file in F32); a half's 2^-11 relative
    /// step moves A by at most 0.2%, well under the 8-bit rounding of the scan's inputs, and the
    /// BF16 checkpoints many Mamba models ship already hold it coarser.
    static let halfVectors: Set<String> = ["A_log", "A_b_log"]   // A_b_log: Vim's backward branch
    static let tokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    /// The largest weight or activation scale a checkpoint may hold: 127 x 1e30 x a float32 input
    /// summed over any K stays finite only for far smaller scales, but no trained model comes near
    /// (a scale is max|x| / 127), and past it a hand-edited file would run to Inf and NaN.
    static let maxScale: Float = 1e30

    /// Whether a weight or activation scale may be written and read: finite, non-negative (0 is an
    /// all-zero row's or a dead site's: q = 0, FORMAT.md) and at most maxScale. One rule for the
    /// writer's checks and the reader's.
    static func isValidScale(_ s: Float) -> Bool { s >= 0 && s <= maxScale }
}

extension QuantizedModel {
    /// Whether `directory` holds a quantized checkpoint (its config has a "quantization" object).
    public static func isQuantized(directory: String) -> Bool {
        (try? MambaConfig.load(directory: directory))?.json["quantization"] != nil
    }

    /// The source checkpoint and stats file a quantized checkpoint was made from.
    public static func provenance(directory: String) throws -> QuantizationProvenance {
        guard let q = try MambaConfig.load(directory: directory).json["quantization"],
              let p = try? JSONDecoder().decode(QuantizationProvenance.self, from: JSONEncoder().encode(q)) else {
            throw MambaError(.badConfig, "\(directory)/config.json: no \"quantization\" object with source_sha256 and stats_sha256")
        }
        return p
    }

    /// Refuses a quantized checkpoint that was not made from the float checkpoint `model` (whose
    /// sha256 is `sha`): its tensors would not fit the model, or fit and mean something else.
    public static func checkSource(directory: String, model: String, sha: String) throws {
        let p = try provenance(directory: directory)
        guard p.sourceSHA256 == sha else {
            throw MambaError(.mismatchedInputs, "\(directory) was quantized from another checkpoint (sha256 \(p.sourceSHA256.prefix(12))…), not \(model) (sha256 \(sha.prefix(12))…)")
        }
    }

    /// Reads a quantized checkpoint; every tensor is checked for presence, dtype and shape.
    /// `layerKinds` overrides the kinds that config.json implies (a caller's own mixer types).
    public static func load(directory: String, layerKinds: [MixerKind]? = nil) throws -> QuantizedModel {
        var blocks: [QuantizedBlock] = []
        var q = try load(directory: directory, layerKinds: layerKinds) { _, b, _ in blocks.append(b) }
        q.blocks = blocks
        return q
    }

    /// The runnable model, built a block at a time as the checkpoint is read: each block's
    /// integers are packed for the GEMM and dropped, and its pages of the mapped file released,
    /// so loading holds about one copy of the weights, not the file, the integers and the panels.
    public static func loadModel(directory: String, runtime: QuantizedRuntime = .int8, layerKinds: [MixerKind]? = nil) throws -> MambaLM {
        var blocks: [MambaBlock] = []
        let q = try load(directory: directory, layerKinds: layerKinds) { i, b, config in
            blocks.append(b.block(runtime: runtime, config: config, layer: i))
        }
        return q.outerModel(blocks: blocks, runtime: runtime)
    }

    /// Reads the checkpoint, handing each block (with the config) to `onBlock` in layer order
    /// instead of keeping it (the returned model has no blocks).
    static func load(directory: String, layerKinds: [MixerKind]?, onBlock: (Int, QuantizedBlock, MambaConfig) throws -> Void) throws -> QuantizedModel {
        var config = try MambaConfig.load(directory: directory)
        if config.vision != nil {
            throw MambaError(.unsupportedModel, "\(directory) is a quantized Vision Mamba (model_type vim), not a language model: `mambaquant classify` runs it")
        }
        if let layerKinds {
            guard layerKinds.count == config.numLayers else {
                throw MambaError(.mismatchedInputs, "\(layerKinds.count) layer kinds given for \(directory), whose config has \(config.numLayers) layers")
            }
            config.layerKinds = layerKinds
        }
        guard let json = config.json["quantization"], json.object != nil else {
            throw MambaError(.badConfig, "\(directory)/config.json has no \"quantization\" object: not a quantized checkpoint")
        }
        let q = try QuantizationObject(json: json, source: directory + "/config.json")
        let (d, v) = (config.hiddenSize, config.vocabSize)
        if q.tiedHead && q.recipe.keepsFloat(module: QuantizedNames.lmHead) {
            throw MambaError(.badConfig, "\(directory)/config.json: \"quantization\" has tied_head true and lm_head kept float; a tied table is quantized")
        }
        let reader = QuantizedCheckpointReader(directory: directory, store: try TensorStore(directory: directory), object: q, config: config)
        // A tied table takes the head's bits and groups; an embedding of its own is int8 per row.
        let embedding = q.tiedHead ? try reader.matrix(QuantizedNames.embedding, rows: v, cols: d, groups: true, module: QuantizedNames.lmHead)
            : QuantizedMatrix(rows: v, cols: d, bits: 8, groupSize: nil, values: try reader.int8s(QuantizedNames.embedding + ".weight", [v, d]),
                              scales: try reader.floats(QuantizedNames.embedding + ".weight_scale", [v]).storage)
        for i in 0..<config.numLayers { try onBlock(i, try reader.block(i), config) }
        _ = try reader.floats(QuantizedNames.normF, [d])
        let lmHead = q.tiedHead ? QuantizedLayer(weight: embedding, floatWeight: nil, bias: nil, input: try reader.input(QuantizedNames.lmHead))
            : try reader.layer(QuantizedNames.lmHead, rows: v, cols: d, bias: false)
        let headInput = !reader.store.contains(QuantizedNames.headInput) ? nil
            : try reader.floats(QuantizedNames.headInput, [d, d])
        if q.formatVersion < 3 && (q.tiedHead || headInput != nil) {
            throw MambaError(.badConfig, "\(directory) is format \(q.formatVersion) but has a tied head or \(QuantizedNames.headInput), which need format 3")
        }
        // Format 3 is a tied source's, and so is a tied head in format 4: norm_f's weight lives in
        // the head-input matrix, without which the model would run with other logits.
        if (q.formatVersion == 3 || q.tiedHead) && headInput == nil {
            throw MambaError(.missingTensor, "\(directory) is format \(q.formatVersion)\(q.tiedHead ? " with a tied head" : "") but lacks tensor \(QuantizedNames.headInput)")
        }
        if let stray = q.recipe.moduleWeightBits.keys.sorted().first(where: { !reader.bitsRead.contains($0) }) {
            throw MambaError(.badConfig, "\(directory)/config.json: \"quantization\" module_weight_bits names \(stray), which is not a quantized module of this model")
        }
        if let extra = reader.store.names.first(where: { !reader.used.contains($0) }) {
            throw MambaError(.unusedTensor, "\(directory) has tensor \(extra), which this quantized format does not use")
        }
        let transforms = q.transforms.map { AppliedTransform(step: $0, layer: nil, detail: "") }
        var model = QuantizedModel(config: config, recipe: q.recipe, embedding: embedding, blocks: [], lmHead: lmHead, transforms: transforms,
                              headInput: headInput, tiedHead: q.tiedHead)
        model.halfTensors = q.formatVersion >= QuantizationObject.halfTensorsVersion
        return model
    }
}

/// Reads a quantized checkpoint's tensors by the names FORMAT.md gives, checking each one's
/// presence, dtype and shape, and remembers which it read (a tensor left over is refused).
final class QuantizedCheckpointReader {
    let directory: String
    let store: TensorStore
    let recipe: QuantizationRecipe
    let formatVersion: Int
    let config: MambaConfig
    private(set) var used = Set<String>()
    /// The modules whose weight bits were looked up (a module_weight_bits entry outside them is refused).
    private(set) var bitsRead = Set<String>()

    init(directory: String, store: TensorStore, object: QuantizationObject, config: MambaConfig) {
        (self.directory, self.store, recipe, formatVersion, self.config) = (directory, store, object.recipe, object.formatVersion, config)
    }

    func view(_ name: String, _ dtype: DType, _ shape: [Int]) throws -> TensorView {
        guard store.contains(name) else { throw MambaError(.missingTensor, "\(directory) lacks tensor \(name)") }
        let v = try store.view(name)
        guard v.dtype == dtype else { throw MambaError(.dtypeMismatch, "\(directory): \(name) is \(v.dtype.rawValue), expected \(dtype.rawValue)") }
        guard v.shape == shape else { throw MambaError(.shapeMismatch, "\(directory): \(name) has shape \(shapeString(v.shape)), expected \(shapeString(shape))") }
        used.insert(name)
        return v
    }

    /// A float32 tensor (from format 4 also F16, widened), refused when it holds NaN or Inf (it
    /// would run and print NaN).
    func floats(_ name: String, _ shape: [Int]) throws -> Tensor {
        let half = try formatVersion >= QuantizationObject.halfTensorsVersion && store.contains(name) && store.view(name).dtype == .f16
        let v = try view(name, half ? .f16 : .f32, shape)
        defer { v.releasePages() }
        let t = Tensor(shape: shape, storage: try v.floats())
        if let bad = t.storage.first(where: { !$0.isFinite }) {
            throw MambaError(.badInput, "\(directory): \(name) holds \(bad); a checkpoint's tensors must be finite")
        }
        return t
    }

    func int8s(_ name: String, _ shape: [Int]) throws -> [Int8] {
        let v = try view(name, .i8, shape)
        defer { v.releasePages() }
        return try v.int8s()
    }

    func scalar(_ name: String) throws -> Float { try view(name, .f32, []).floats()[0] }

    /// Integer weights (int4 two per byte from format 2 on) and their scales, at the bits of
    /// `module` (default: the prefix's; a tied table goes by the head's).
    func matrix(_ prefix: String, rows: Int, cols: Int, diskShape: [Int]? = nil, groups: Bool, module: String? = nil) throws -> QuantizedMatrix {
        let name = module ?? prefix
        let (g, wb) = (groups ? recipe.groupSize : nil, recipe.weightBits(module: name))
        bitsRead.insert(name)
        let values: [Int8]
        if formatVersion >= 2 && wb == 4 {
            var packedShape = diskShape ?? [rows, cols]
            packedShape[packedShape.count - 1] = QuantizedMatrix.packedInt4Columns(packedShape[packedShape.count - 1])
            let v = try view(prefix + ".weight", .u8, packedShape)
            defer { v.releasePages() }
            values = QuantizedMatrix.unpackInt4(Array(v.bytes.bindMemory(to: UInt8.self)), rows: rows, cols: cols)
            // -8 is a valid nibble but never written (|q| <= qmax = 7): refuse it rather than run it.
            if values.contains(-8) { throw MambaError(.badInput, "\(directory): \(prefix).weight holds the int4 value -8, which mambaquant never writes (|q| <= 7)") }
        } else {
            values = try int8s(prefix + ".weight", diskShape ?? [rows, cols])
            // 4-bit weights stored a value per byte (format 1) must fit the int4 panels.
            if wb == 4, let bad = values.first(where: { $0 < -7 || $0 > 7 }) {
                throw MambaError(.badInput, "\(directory): \(prefix).weight holds \(bad), outside the 4-bit range -7...7 of weight_bits 4")
            }
        }
        let m = QuantizedMatrix(rows: rows, cols: cols, bits: wb, groupSize: g, values: values, scales: [])
        let scales = try floats(prefix + ".weight_scale", m.scaleShape).storage
        // A scale NaN, infinite, negative or past 1e30 (the weights' products would overflow
        // float32) is refused: it would run and print NaN.
        if let bad = scales.first(where: { !QuantizedNames.isValidScale($0) }) {
            throw MambaError(.badInput, "\(directory): \(prefix).weight_scale holds \(bad); scales must be finite, non-negative and at most \(QuantizedNames.maxScale)")
        }
        return QuantizedMatrix(rows: rows, cols: cols, bits: wb, groupSize: g, values: values, scales: scales)
    }

    /// A static activation scale stored under `name` (finite, non-negative, at most maxScale), or the
    /// recipe's dynamic one.
    func activation(_ name: String) throws -> ActivationQuantizer {
        if let dynamic = recipe.activationScale { return ActivationQuantizer(bits: recipe.bits.activation, scale: dynamic) }
        return ActivationQuantizer(bits: recipe.bits.activation, scale: .static(try checkedScales(name, [scalar(name)])[0]))
    }

    func checkedScales(_ name: String, _ scales: [Float]) throws -> [Float] {
        if let bad = scales.first(where: { !QuantizedNames.isValidScale($0) }) {
            throw MambaError(.badInput, "\(directory): \(name) holds \(bad); activation scales must be finite, non-negative and at most \(QuantizedNames.maxScale)")
        }
        return scales
    }

    /// A module's input quantizer.
    func input(_ prefix: String) throws -> ActivationQuantizer { try activation(prefix + ".input_scale") }

    /// A module: quantized with its input quantizer, or float where the recipe keeps it float.
    func layer(_ prefix: String, rows: Int, cols: Int, bias: Bool, diskShape: [Int]? = nil, groups: Bool = true) throws -> QuantizedLayer {
        let b = bias ? try floats(prefix + ".bias", [rows]) : nil
        if recipe.keepsFloat(module: prefix) {
            let t = try floats(prefix + ".weight", diskShape ?? [rows, cols])
            return QuantizedLayer(weight: nil, floatWeight: t.reshaped([rows, cols]), bias: b, input: nil)
        }
        return QuantizedLayer(weight: try matrix(prefix, rows: rows, cols: cols, diskShape: diskShape, groups: groups), floatWeight: nil, bias: b,
                              input: try input(prefix))
    }

    /// Layer `i`: its norm, its kind's modules and vectors, its scan-input scales and the
    /// transforms' artifacts.
    func block(_ i: Int) throws -> QuantizedBlock {
        let kind = config.layerKinds[i], spec = kind.spec, p = BlockNames.mixerPrefix(layer: i)
        let norm = try floats(BlockNames.norm(layer: i), [config.hiddenSize])
        let present = spec.presentParameters(config)
        let hasBias = Set(present.compactMap { if case .bias(let m) = $0.spec.role { m } else { nil } })
        var modules: [String: QuantizedLayer] = [:]
        var tensors: [String: Tensor] = [:]
        for (param, shape) in present {
            switch param.role {
            case .weight(let module):
                modules[module] = try layer(p + module, rows: shape[0], cols: shape[1], bias: hasBias.contains(module),
                                            diskShape: param.diskShape(config), groups: spec.module(module)!.allowsGroups)
            case .bias: break   // read with its module
            case .vector: tensors[param.key] = try floats(p + param.key, shape)
            }
        }
        var scan: [Site: ActivationQuantizer] = [:]
        for (site, key) in spec.scanInputs where !recipe.keepsFloat(scanInput: site) {
            if let groups = recipe.scanScales == .group ? spec.scanScaleGroups(site, config) : nil, !recipe.activations.isDynamic {
                scan[site] = ActivationQuantizer(bits: recipe.bits.activation, scale: .groups(try checkedScales(p + key, try floats(p + key, [groups]).storage)))
            } else {
                scan[site] = try activation(p + key)
            }
        }
        // S-SiLU scales the gate's input z channel by channel.
        let gateName = p + LayerArtifact.gateSmoothing
        if store.contains(gateName) {
            // Only where S-SiLU is exact: a SiLU gate right before out_proj (not Mamba-2's, whose
            // group norm sits between; docs/DESIGN.md section 2).
            guard let z = spec.producer(of: .z, config), spec.consumer(of: .outProjInput) != nil, !spec.isNormalized(.outProjInput) else {
                throw MambaError(.unusedTensor, "\(directory) has tensor \(gateName), but a \(spec.name) mixer has no SiLU gate to smooth")
            }
            tensors[LayerArtifact.gateSmoothing] = try floats(gateName, [z.rows.count])
        }
        for module in spec.modules where store.contains(p + LayerArtifact.hadamardSigns(module.name)) {
            let n = modules[module.name]!.inFeatures
            if Hadamard(size: n) == nil {
                throw MambaError(.badFile, "\(directory): layer \(i) has an online rotation of size \(n), for which there is no Hadamard transform")
            }
            tensors[LayerArtifact.hadamardSigns(module.name)] = try floats(p + LayerArtifact.hadamardSigns(module.name), [n])
        }
        return QuantizedBlock(norm: norm.storage.allSatisfy { $0 == 1 } ? nil : norm,
                              mixer: QuantizedMixer(kind: kind, modules: modules, tensors: tensors), scanInputs: scan)
    }
}

extension QuantizedModel {
    /// A float or a quantized checkpoint, by its config: the model `generate` and `evaluate` run.
    public static func loadAny(directory: String, runtime: QuantizedRuntime = .int8) throws -> MambaLM {
        isQuantized(directory: directory) ? try loadModel(directory: directory, runtime: runtime) : try MambaLM.load(directory: directory)
    }
}
