import Foundation
import MambaModel
import MambaTensors

// The quantized checkpoint, format version 1 (DESIGN.md section 5 and FORMAT.md): config.json with a
// "quantization" object, model.safetensors with the float names plus suffixes, the source's
// tokenizer files. The tensor names of a quantized model live in this file.

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
    static func mixer(_ i: Int) -> String { "backbone.layers.\(i).mixer" }
    static func norm(_ i: Int) -> String { "backbone.layers.\(i).norm.weight" }
    static let normF = "backbone.norm_f.weight"
    static let scanInputs: [(Site, String)] = [(.convOutput, "x_scale"), (.dt, "dt_scale"), (.B, "B_scale"), (.C, "C_scale")]
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
            let m = b.mixer, p = QuantizedNames.mixer(i)
            w.add(QuantizedNames.norm(i), b.norm ?? Tensor(repeating: 1, shape: [d]))
            layer(p + ".in_proj", m.inProj)
            layer(p + ".conv1d", m.conv, shape: [config.innerSize, 1, config.convKernel])
            layer(p + ".x_proj", m.xProj)
            layer(p + ".dt_proj", m.dtProj)
            w.add(p + ".A_log", m.aLog)
            w.add(p + ".D", m.dSkip)
            layer(p + ".out_proj", m.outProj)
            for (site, name) in QuantizedNames.scanInputs {
                if let s = m.scanInputs[site]?.scale.staticScale { w.add(p + "." + name, shape: [], floats: [s]) }
            }
            if let s = m.gateSmoothing { w.add(p + ".gate_smooth", shape: [s.count], floats: s) }
            if let s = m.hadamardSigns { w.add(p + ".out_proj.hadamard_signs", shape: [s.count], floats: s) }
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
    public static func load(directory: String) throws -> QuantizedModel {
        let config = try MambaConfig.load(directory: directory)
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

        let (d, e, n, r, k, v) = (config.hiddenSize, config.innerSize, config.stateSize, config.timeStepRank, config.convKernel, config.vocabSize)
        let embValues = try view(QuantizedNames.embedding + ".weight", .i8, [v, d]).int8s()
        let embedding = QuantizedMatrix(rows: v, cols: d, bits: 8, groupSize: nil, values: embValues,
                                        scales: try floats(QuantizedNames.embedding + ".weight_scale", [v]).storage)
        var blocks: [QuantizedBlock] = []
        for i in 0..<config.numLayers {
            let p = QuantizedNames.mixer(i)
            let norm = try floats(QuantizedNames.norm(i), [d])
            var scan: [Site: ActivationQuantizer] = [:]
            for (site, name) in QuantizedNames.scanInputs {
                scan[site] = ActivationQuantizer(bits: ab, scale: dynamic ? .dynamic : .static(try scalar(p + "." + name)))
            }
            let gate = store.contains(p + ".gate_smooth") ? try floats(p + ".gate_smooth", [e]).storage : nil
            let signs = store.contains(p + ".out_proj.hadamard_signs") ? try floats(p + ".out_proj.hadamard_signs", [e]).storage : nil
            if signs != nil && Hadamard(size: e) == nil {
                throw MambaError(.badFile, "\(directory): layer \(i) has an online rotation of size \(e), for which there is no Hadamard transform")
            }
            blocks.append(QuantizedBlock(
                norm: norm.storage.allSatisfy { $0 == 1 } ? nil : norm,
                mixer: QuantizedMixer(
                    inProj: try layer(p + ".in_proj", rows: 2 * e, cols: d, bias: config.useBias),
                    conv: try layer(p + ".conv1d", rows: e, cols: k, bias: config.useConvBias, diskShape: [e, 1, k], groups: false),
                    xProj: try layer(p + ".x_proj", rows: r + 2 * n, cols: e, bias: false),
                    dtProj: try layer(p + ".dt_proj", rows: e, cols: r, bias: true),
                    outProj: try layer(p + ".out_proj", rows: d, cols: e, bias: config.useBias),
                    aLog: try floats(p + ".A_log", [e, n]), dSkip: try floats(p + ".D", [e]),
                    scanInputs: scan, gateSmoothing: gate, hadamardSigns: signs)))
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
