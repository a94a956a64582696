import Foundation
import MambaModel
import MambaTensors

// The quantized checkpoint, format version 1 (DESIGN.md section 5 and FORMAT.md): config.json with a
// "quantization" object, model.safetensors with the float names plus suffixes, the source's
// tokenizer files. The names outside the mixers live in this file; each mixer's come from its
// description (MixerDescription.swift) plus the suffixes below.

/// Where a quantized checkpoint came from (written into its config).
public struct QuantizationProvenance: Sendable, Equatable {
    public var sourceSHA256: String
    public var statsSHA256: String

    public init(sourceSHA256: String, statsSHA256: String) {
        self.sourceSHA256 = sourceSHA256
        self.statsSHA256 = statsSHA256
    }
}

enum QuantizedNames {
    static let formatVersion = 1
    static let embedding = "backbone.embeddings"
    static let lmHead = "lm_head"
    static let normF = "backbone.norm_f.weight"
    /// S-SiLU's s, under the mixer's prefix.
    static let gateSmoothing = "gate_smooth"
    /// The online Hadamard's signs, after the name of the module whose input it rotates.
    static func hadamardSigns(_ module: String) -> String { module + ".hadamard_signs" }
    static let tokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
}

extension QuantizedModel {
    /// Tensors in a fixed order (byte-identical output for identical inputs).
    func tensors(into w: inout SafeTensorsWriter) {
        func layer(_ prefix: String, _ l: QuantizedLayer, shape: [Int]? = nil) {
            if let q = l.weight {
                w.add(prefix + ".weight", shape: shape ?? [q.rows, q.cols], int8s: q.values)
                w.add(prefix + ".weight_scale", shape: q.scaleShape, floats: q.scales)
                if let s = l.input?.scale.staticScale { w.add(prefix + ".input_scale", shape: [], floats: [s]) }
            } else {
                let t = l.floatWeight!
                w.add(prefix + ".weight", dtype: .f32, shape: shape ?? t.shape, floats: t.storage)
            }
            if let b = l.bias { w.add(prefix + ".bias", b) }
        }
        w.add(QuantizedNames.embedding + ".weight", shape: [embedding.rows, embedding.cols], int8s: embedding.values)
        w.add(QuantizedNames.embedding + ".weight_scale", shape: [embedding.rows], floats: embedding.scales)
        let d = config.hiddenSize
        for (i, b) in blocks.enumerated() {
            let m = b.mixer, p = BlockNames.mixerPrefix(layer: i)
            w.add(BlockNames.norm(layer: i), b.norm ?? Tensor(repeating: 1, shape: [d]))
            for (spec, _) in m.spec.presentParameters(config) {
                switch spec.role {
                case .weight(let module): layer(p + module, m.modules[module]!, shape: spec.diskShape(config))
                case .bias: break   // written with its module
                case .vector: w.add(p + spec.key, m.tensors[spec.key]!)
                }
            }
            for (site, key) in m.spec.scanInputs {
                if let s = m.scanInputs[site]?.scale.staticScale { w.add(p + key, shape: [], floats: [s]) }
            }
            if let s = m.gateSmoothing { w.add(p + QuantizedNames.gateSmoothing, shape: [s.count], floats: s) }
            for module in m.spec.modules {
                if let s = m.hadamardSigns[module.name] { w.add(p + QuantizedNames.hadamardSigns(module.name), shape: [s.count], floats: s) }
            }
        }
        w.add(QuantizedNames.normF, Tensor(repeating: 1, shape: [d]))
        layer(QuantizedNames.lmHead, lmHead)
    }

    /// The "quantization" object of config.json.
    func quantizationJSON(_ provenance: QuantizationProvenance) -> JSONValue {
        var kept = recipe.keepFloat.sorted().map(JSONValue.string)
        if kept.isEmpty { kept = [] }
        return .object([
            "format_version": .number(Double(QuantizedNames.formatVersion)),
            "tool_version": .string(MambaQuantVersion.current),
            "method": .string(recipe.method.rawValue),
            "weight_bits": .number(Double(recipe.bits.weight)),
            "activation_bits": .number(Double(recipe.bits.activation)),
            "group_size": recipe.groupSize.map { .number(Double($0)) } ?? .null,
            "activation_scale": .string(recipe.dynamicActivations ? "dynamic" : "static"),
            "act_clip": .string(recipe.clip.rawValue),
            "alpha": .number(recipe.alpha),
            "seed": .number(Double(recipe.seed)),
            "source_sha256": .string(provenance.sourceSHA256),
            "stats_sha256": .string(provenance.statsSHA256),
            "kept_float": .array(kept),
            "int4_storage": .string("one value per byte, unpacked"),
            "transforms": .array(transforms.map { t in .string((t.layer.map { "layer \($0): " } ?? "") + t.step + ": " + t.detail) }),
        ])
    }

    /// Writes the checkpoint directory: into a temporary directory beside it, then renamed into
    /// place, so `directory` is either absent, the old checkpoint or the whole new one.
    public func write(directory: String, sourceDirectory: String, provenance: QuantizationProvenance) throws {
        let fm = FileManager.default
        let url = URL(fileURLWithPath: directory).standardizedFileURL
        let parent = url.deletingLastPathComponent().path
        guard fm.fileExists(atPath: parent) else {
            throw MambaError(.missingFile, "cannot write \(directory): directory \(parent) does not exist")
        }
        if fm.fileExists(atPath: directory) {
            let isQuantized = (try? MambaConfig.load(directory: directory))?.json["quantization"] != nil
            let empty = (try? fm.contentsOfDirectory(atPath: directory))?.isEmpty ?? false
            guard isQuantized || empty else {
                throw MambaError(.badInput, "refusing to replace \(directory): it exists and is not a mambaquant quantized checkpoint")
            }
        }
        let temp = parent + "/.\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)"
        try? fm.removeItem(atPath: temp)
        try fm.createDirectory(atPath: temp, withIntermediateDirectories: false)
        do {
            var w = SafeTensorsWriter(metadata: ["format": "pt", "mambaquant": "quantized checkpoint format 1"])
            tensors(into: &w)
            try w.write(to: temp + "/" + TensorStore.singleFileName)
            var json = config.json
            json["quantization"] = quantizationJSON(provenance)
            try writeAtomically(try JSONValue.object(json).prettyData(), to: temp + "/" + MambaConfig.fileName)
            for f in QuantizedNames.tokenizerFiles where fm.fileExists(atPath: sourceDirectory + "/" + f) {
                try fm.copyItem(atPath: sourceDirectory + "/" + f, toPath: temp + "/" + f)
            }
            if fm.fileExists(atPath: directory) {
                let old = temp + ".old"
                try fm.moveItem(atPath: directory, toPath: old)
                try fm.moveItem(atPath: temp, toPath: directory)
                try? fm.removeItem(atPath: old)
            } else {
                try fm.moveItem(atPath: temp, toPath: directory)
            }
        } catch {
            try? fm.removeItem(atPath: temp)
            throw error
        }
    }

    /// Whether `directory` holds a quantized checkpoint (its config has a "quantization" object).
    public static func isQuantized(directory: String) -> Bool {
        (try? MambaConfig.load(directory: directory))?.json["quantization"] != nil
    }

    /// The source checkpoint and stats file a quantized checkpoint was made from.
    public static func provenance(directory: String) throws -> QuantizationProvenance {
        let q = try MambaConfig.load(directory: directory).json["quantization"]
        guard let source = q?["source_sha256"]?.string, let stats = q?["stats_sha256"]?.string else {
            throw MambaError(.badConfig, "\(directory)/config.json: no \"quantization\" object with source_sha256 and stats_sha256")
        }
        return QuantizationProvenance(sourceSHA256: source, statsSHA256: stats)
    }

    /// Reads a quantized checkpoint; every tensor is checked for presence, dtype and shape.
    /// `mixer` overrides the mixer that config.json's model_type implies (a caller's own mixer type).
    public static func load(directory: String, mixer: MixerKind? = nil) throws -> QuantizedModel {
        var config = try MambaConfig.load(directory: directory)
        if let mixer { config.mixer = mixer }
        guard let q = config.json["quantization"]?.object else {
            throw MambaError(.badConfig, "\(directory)/config.json has no \"quantization\" object: not a quantized checkpoint")
        }
        guard q["format_version"]?.int == QuantizedNames.formatVersion else {
            throw MambaError(.badConfig, "\(directory) is quantized checkpoint format \(q["format_version"]?.description ?? "?"); this mambaquant reads format \(QuantizedNames.formatVersion)")
        }
        guard let method = q["method"]?.string.flatMap(QuantizationMethod.init(rawValue:)),
              let wb = q["weight_bits"]?.int, let ab = q["activation_bits"]?.int else {
            throw MambaError(.badConfig, "\(directory)/config.json: \"quantization\" lacks method, weight_bits or activation_bits")
        }
        let dynamic = q["activation_scale"]?.string == "dynamic"
        let recipe = QuantizationRecipe(
            method: method, bits: BitWidths(weight: wb, activation: ab), groupSize: q["group_size"]?.int, dynamicActivations: dynamic,
            clip: q["act_clip"]?.string.flatMap(ActivationClip.init(rawValue:)) ?? .max, seed: UInt64(q["seed"]?.int ?? 0),
            keepFloat: Set(q["kept_float"]?.array?.compactMap(\.string) ?? []), alpha: q["alpha"]?.double ?? 0.5)
        let store = try TensorStore(directory: directory)
        var used = Set<String>()

        func view(_ name: String, _ dtype: DType, _ shape: [Int]) throws -> TensorView {
            guard store.contains(name) else { throw MambaError(.missingTensor, "\(directory) lacks tensor \(name)") }
            let v = try store.view(name)
            guard v.dtype == dtype else { throw MambaError(.dtypeMismatch, "\(directory): \(name) is \(v.dtype.rawValue), expected \(dtype.rawValue)") }
            guard v.shape == shape else { throw MambaError(.shapeMismatch, "\(directory): \(name) has shape \(shapeString(v.shape)), expected \(shapeString(shape))") }
            used.insert(name)
            return v
        }
        func floats(_ name: String, _ shape: [Int]) throws -> Tensor { Tensor(shape: shape, storage: try view(name, .f32, shape).floats()) }
        func scalar(_ name: String) throws -> Float { try view(name, .f32, []).floats()[0] }
        func matrix(_ prefix: String, rows: Int, cols: Int, diskShape: [Int]? = nil, groups: Bool) throws -> QuantizedMatrix {
            let g = groups ? recipe.groupSize : nil
            let values = try view(prefix + ".weight", .i8, diskShape ?? [rows, cols]).int8s()
            let m = QuantizedMatrix(rows: rows, cols: cols, bits: wb, groupSize: g, values: values, scales: [])
            let scales = try floats(prefix + ".weight_scale", m.scaleShape).storage
            return QuantizedMatrix(rows: rows, cols: cols, bits: wb, groupSize: g, values: values, scales: scales)
        }
        func layer(_ prefix: String, rows: Int, cols: Int, bias: Bool, diskShape: [Int]? = nil, groups: Bool = true) throws -> QuantizedLayer {
            let b = bias ? try floats(prefix + ".bias", [rows]) : nil
            if recipe.keepFloat.contains(prefix) {
                let t = try floats(prefix + ".weight", diskShape ?? [rows, cols])
                return QuantizedLayer(weight: nil, floatWeight: t.reshaped([rows, cols]), bias: b, input: nil)
            }
            let input = ActivationQuantizer(bits: ab, scale: dynamic ? .dynamic : .static(try scalar(prefix + ".input_scale")))
            return QuantizedLayer(weight: try matrix(prefix, rows: rows, cols: cols, diskShape: diskShape, groups: groups), floatWeight: nil, bias: b, input: input)
        }

        let (d, v) = (config.hiddenSize, config.vocabSize)
        let embValues = try view(QuantizedNames.embedding + ".weight", .i8, [v, d]).int8s()
        let embedding = QuantizedMatrix(rows: v, cols: d, bits: 8, groupSize: nil, values: embValues,
                                        scales: try floats(QuantizedNames.embedding + ".weight_scale", [v]).storage)
        var blocks: [QuantizedBlock] = []
        for i in 0..<config.numLayers {
            let kind = config.mixer, spec = kind.spec, p = BlockNames.mixerPrefix(layer: i)
            let norm = try floats(BlockNames.norm(layer: i), [d])
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
            for (site, key) in spec.scanInputs {
                scan[site] = ActivationQuantizer(bits: ab, scale: dynamic ? .dynamic : .static(try scalar(p + key)))
            }
            // S-SiLU scales the gate's input z channel by channel.
            let gateName = p + QuantizedNames.gateSmoothing
            var gate: [Float]? = nil
            if store.contains(gateName) {
                guard let z = spec.producer(of: .z, config) else {
                    throw MambaError(.unusedTensor, "\(directory) has tensor \(gateName), but a \(spec.name) mixer has no SiLU gate")
                }
                gate = try floats(gateName, [z.rows.count]).storage
            }
            var signs: [String: [Float]] = [:]
            for module in spec.modules where store.contains(p + QuantizedNames.hadamardSigns(module.name)) {
                let n = modules[module.name]!.inFeatures
                if Hadamard(size: n) == nil {
                    throw MambaError(.badFile, "\(directory): layer \(i) has an online rotation of size \(n), for which there is no Hadamard transform")
                }
                signs[module.name] = try floats(p + QuantizedNames.hadamardSigns(module.name), [n]).storage
            }
            blocks.append(QuantizedBlock(
                norm: norm.storage.allSatisfy { $0 == 1 } ? nil : norm,
                mixer: QuantizedMixer(kind: kind, modules: modules, tensors: tensors, scanInputs: scan, gateSmoothing: gate, hadamardSigns: signs)))
        }
        _ = try floats(QuantizedNames.normF, [d])
        let lmHead = try layer(QuantizedNames.lmHead, rows: v, cols: d, bias: false)
        if let extra = store.names.first(where: { !used.contains($0) }) {
            throw MambaError(.unusedTensor, "\(directory) has tensor \(extra), which this quantized format does not use")
        }
        let transforms = (q["transforms"]?.array ?? []).compactMap(\.string).map { AppliedTransform(step: $0, layer: nil, detail: "") }
        return QuantizedModel(config: config, recipe: recipe, embedding: embedding, blocks: blocks, lmHead: lmHead, transforms: transforms)
    }
}
