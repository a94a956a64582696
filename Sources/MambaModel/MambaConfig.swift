import Foundation
import MambaTensors

/// A Mamba-1 configuration, read from a Hugging Face config.json (MambaConfig's keys) or from an
/// original state-spaces/mamba config (d_model, n_layer, ssm_cfg). Defaults live here and only here.
///
/// Glossary (docs/DESIGN.md section 1): D = hiddenSize, E = innerSize = expand * D, N = stateSize,
/// R = timeStepRank, K = convKernel, V = vocabSize (padded).
public struct MambaConfig: Sendable, Equatable {
    public var hiddenSize: Int          // D
    public var stateSize: Int           // N
    public var expand: Int
    public var innerSize: Int           // E
    public var convKernel: Int          // K
    public var timeStepRank: Int        // R
    public var vocabSize: Int           // V, padded to pad_vocab_size_multiple
    public var layerNormEpsilon: Float
    public var useBias: Bool            // in_proj / out_proj biases
    public var useConvBias: Bool
    public var tieWordEmbeddings: Bool
    /// The mixer of each layer, in order: the config resolves to one kind per layer (every layer
    /// of today's Mamba configs runs the same one; hybrids and Vision Mamba mix them).
    public var layerKinds: [MixerKind]
    /// The config file as read, so that a quantized checkpoint can carry it forward unchanged.
    public var json: [String: JSONValue]
    /// Where the file keeps each tensor (a hybrid's decoder layer is two tool layers).
    public var layout: CheckpointLayout = .mamba
    /// Granite's scalars around the blocks (GraniteMoeHybridModel / DecoderLayer / ForCausalLM):
    /// the embedding output times `embeddingMultiplier`, each block's output times
    /// `residualMultiplier` before it joins the residual stream, logits divided by `logitsScaling`.
    /// All 1 elsewhere; being scalars they commute with every transform.
    public var embeddingMultiplier: Float = 1
    public var residualMultiplier: Float = 1
    public var logitsScaling: Float = 1
    /// A Vision Mamba's settings around the blocks (VisionConfig.swift; nil: a language model).
    public var vision: VisionSettings?

    public init(
        hiddenSize: Int, numLayers: Int, stateSize: Int = 16, expand: Int = 2, convKernel: Int = 4,
        timeStepRank: Int? = nil, vocabSize: Int, layerNormEpsilon: Float = 1e-5, useBias: Bool = false,
        useConvBias: Bool = true, tieWordEmbeddings: Bool = true, mixer: MixerKind = .mamba1, layerKinds: [MixerKind]? = nil
    ) {
        precondition(layerKinds == nil || layerKinds!.count == numLayers, "\(layerKinds!.count) layer kinds for \(numLayers) layers")
        self.hiddenSize = hiddenSize
        self.layerKinds = layerKinds ?? Array(repeating: mixer, count: numLayers)
        self.stateSize = stateSize
        self.expand = expand
        self.innerSize = expand * hiddenSize
        self.convKernel = convKernel
        self.timeStepRank = timeStepRank ?? Self.autoTimeStepRank(hiddenSize)
        self.vocabSize = vocabSize
        self.layerNormEpsilon = layerNormEpsilon
        self.useBias = useBias
        self.useConvBias = useConvBias
        self.tieWordEmbeddings = tieWordEmbeddings
        self.json = [:]
        self.json = hfJSON()
    }

    public var numLayers: Int { layerKinds.count }

    /// Layer `i`'s mixer description.
    public func mixer(layer i: Int) -> any MixerDescription { layerKinds[i].spec }

    /// The kinds the layers run, each once, in order of first appearance.
    public var distinctKinds: [MixerKind] {
        layerKinds.reduce(into: []) { kinds, k in if !kinds.contains(k) { kinds.append(k) } }
    }

    /// The layers' mixer names for messages and `inspect` ("mamba1"; "mamba1+gated_mlp" for a mix).
    public var family: String { distinctKinds.map(\.spec.name).joined(separator: "+") }

    /// Every layer runs `kind` (a uniform model's mixer, set once the config is parsed).
    public mutating func setAllLayers(_ kind: MixerKind) { layerKinds = Array(repeating: kind, count: numLayers) }

    /// dt_rank "auto" = ceil(D / 16) (state-spaces mamba_simple.py).
    public static func autoTimeStepRank(_ hiddenSize: Int) -> Int { (hiddenSize + 15) / 16 }

    public static let fileName = "config.json"

    /// Reads `directory/config.json`.
    public static func load(directory: String) throws -> MambaConfig {
        let path = directory + "/" + fileName
        guard FileManager.default.fileExists(atPath: directory) else {
            throw MambaError(.missingFile, "model directory \(directory) does not exist")
        }
        guard let data = try contentsOfRegularFile(atPath: path) else {
            throw MambaError(.missingFile, "\(path) not found: a Hugging Face Mamba checkpoint directory has config.json, model.safetensors and tokenizer.json")
        }
        return try parse(data, source: path)
    }

    public static func parse(_ data: Data, source: String) throws -> MambaConfig {
        // Python's json (and transformers 4) writes a bare Infinity into Mamba-2's time_step_limit,
        // which is not JSON: such words become transformers 5's tagged form before a strict parse.
        // (Foundation's JSON5 mode read them, but trapped on invalid UTF-8 and on "1e-": found by
        // scripts/fuzz.sh, reproducers in Tests/Fixtures/fuzz/config.)
        guard let text = String(data: data, encoding: .utf8) else {
            throw MambaError(.badConfig, "\(source) is not UTF-8 text")
        }
        guard case .object(let json)? = try? JSONDecoder().decode(JSONValue.self, from: Data(taggingBareSpecialFloats(text).utf8)) else {
            throw MambaError(.badConfig, "\(source) is not a JSON object")
        }
        // An original state-spaces config nests the SSM settings in ssm_cfg.
        let ssm = json["ssm_cfg"]?.object ?? [:]
        let stateSpacesLayout = json["ssm_cfg"] != nil || json["d_model"] != nil
        let modelType = json["model_type"]?.string
        if modelType == "nemotron_h" { return try nemotronH(json, source: source) }
        if modelType == "bamba" || modelType == "granitemoehybrid" { return try twoBlockHybrid(json, source: source) }
        if modelType == "jamba" { return try jamba(json, source: source) }
        if modelType == "falcon_h1" { return try falconH1(json, source: source) }
        if modelType == "vim" { return try vim(json, source: source) }
        let ssmLayer = ssm["layer"]?.string
        let isMamba2: Bool
        switch modelType {
        case "mamba", "falcon_mamba": isMamba2 = false
        case "mamba2": isMamba2 = true
        case nil: isMamba2 = ssmLayer == "Mamba2"
        case let other? where hybridModelTypes.contains(other):
            throw MambaError(.unsupportedModel, "\(source): model_type \(other) is a hybrid of Mamba and attention layers not supported yet (model_type \"mamba\", \"falcon_mamba\", \"mamba2\" and the hybrids \"nemotron_h\", \"bamba\", \"granitemoehybrid\", \"jamba\" and \"falcon_h1\" are)")
        case let other?:
            throw MambaError(.unsupportedModel, "\(source): model_type \(other) is not a Mamba model; model_type \"mamba\", \"falcon_mamba\" and \"mamba2\" are supported")
        }
        if let layer = ssmLayer, layer != (isMamba2 ? "Mamba2" : "Mamba1") {
            throw MambaError(.unsupportedModel, "\(source): ssm_cfg.layer \(layer) is not supported here; Mamba1 and Mamba2 are")
        }
        if json["rms_norm"]?.bool == false {
            throw MambaError(.unsupportedModel, "\(source): rms_norm false (LayerNorm blocks) is not supported")
        }

        func int(_ keys: [String], in dict: [String: JSONValue]) throws -> Int? {
            for k in keys {
                guard let v = dict[k], !v.isNull else { continue }
                guard let i = v.int else { throw MambaError(.badConfig, "\(source): \(k) must be an integer, found \(v)") }
                return i
            }
            return nil
        }
        func required(_ keys: [String]) throws -> Int {
            guard let v = try int(keys, in: json) else {
                throw MambaError(.badConfig, "\(source) lacks \(keys.joined(separator: " / "))")
            }
            guard v > 0 else { throw MambaError(.badConfig, "\(source): \(keys[0]) must be positive, found \(v)") }
            return v
        }

        let hidden = try required(["hidden_size", "d_model"])
        let layers = try required(["num_hidden_layers", "n_layer"])
        var vocab = try required(["vocab_size"])
        // Mamba-2's default state is 128 (transformers Mamba2Config, mamba_ssm Mamba2).
        let state = try int(["state_size"], in: json) ?? int(["d_state"], in: ssm) ?? (isMamba2 ? 128 : 16)
        let expand = try int(["expand"], in: json) ?? int(["expand"], in: ssm) ?? 2
        let conv = try int(["conv_kernel"], in: json) ?? int(["d_conv"], in: ssm) ?? 4
        let rankValue = json["time_step_rank"] ?? ssm["dt_rank"]
        var rank: Int
        switch rankValue {
        case nil, .string("auto")?: rank = autoTimeStepRank(hidden)
        case let v?:
            guard let r = v.int, r > 0 else { throw MambaError(.badConfig, "\(source): time_step_rank must be a positive integer or \"auto\", found \(v)") }
            rank = r
        }
        if let multiple = try int(["pad_vocab_size_multiple"], in: json), multiple > 1 << 16 {
            throw MambaError(.badConfig, "\(source): pad_vocab_size_multiple \(multiple) is beyond what mambaquant supports (at most 65536)")
        }
        if let multiple = try int(["pad_vocab_size_multiple"], in: json), multiple > 1, vocab % multiple != 0 {
            vocab += multiple - vocab % multiple
        }
        for (name, value) in [("state_size", state), ("expand", expand), ("conv_kernel", conv)] where value <= 0 {
            throw MambaError(.badConfig, "\(source): \(name) must be positive, found \(value)")
        }
        rank = max(rank, 1)
        // Bounds far above any published model keep every shape product inside Int (a forged
        // hidden_size of 1e14 would overflow the parameter count).
        for (name, value, limit) in [("hidden_size", hidden, 1 << 20), ("num_hidden_layers", layers, 1 << 16), ("vocab_size", vocab, 1 << 24),
                                     ("state_size", state, 1 << 16), ("expand", expand, 64), ("conv_kernel", conv, 1 << 10),
                                     ("time_step_rank", rank, 1 << 20)] where value > limit {
            throw MambaError(.badConfig, "\(source): \(name) \(value) is beyond what mambaquant supports (at most \(limit))")
        }
        if let inner = try int(["intermediate_size"], in: json), inner != expand * hidden {
            throw MambaError(.badConfig, "\(source): intermediate_size \(inner) is not expand x hidden_size = \(expand * hidden)")
        }
        let epsValue = [json["layer_norm_epsilon"], json["norm_epsilon"]].compactMap { $0 }.first { !$0.isNull }
        let eps = epsValue.map { $0.float ?? .nan } ?? 1e-5   // a non-number is refused below, not defaulted
        guard eps > 0, eps < 1 else {
            throw MambaError(.badConfig, "\(source): layer_norm_epsilon must be in (0, 1), found \(eps)")
        }
        var config = MambaConfig(
            hiddenSize: hidden, numLayers: layers, stateSize: state, expand: expand, convKernel: conv,
            timeStepRank: rank, vocabSize: vocab, layerNormEpsilon: Float(eps),
            useBias: json["use_bias"]?.bool ?? ssm["bias"]?.bool ?? false,
            useConvBias: json["use_conv_bias"]?.bool ?? ssm["conv_bias"]?.bool ?? true,
            // transformers' Mamba2Config unties by default; every other layout ties.
            tieWordEmbeddings: json["tie_word_embeddings"]?.bool ?? json["tie_embeddings"]?.bool ?? !(isMamba2 && !stateSpacesLayout))
        if modelType == "falcon_mamba" {
            // transformers' FalconMambaConfig default when the key is absent (inspect says so).
            // A present key must be a finite non-negative number: NaN and Infinity (Python's json
            // writes them bare) are refused, not replaced by the default.
            let given = json["mixer_rms_eps"].flatMap { $0.isNull ? nil : $0 }
            let eps = try given.map { v -> Double in
                guard let d = v.float, d >= 0, Float(d).isFinite else {
                    throw MambaError(.badConfig, "\(source): mixer_rms_eps must be a finite non-negative number, found \(v.encodable)")
                }
                return d
            } ?? Self.defaultMixerRMSEpsilon
            config.setAllLayers(.falconMamba(ssmNormEpsilon: Float(eps)))
        }
        if isMamba2 {
            config.setAllLayers(MixerKind(try mamba2Mixer(json, ssm: ssm, innerSize: config.innerSize, stateSpacesLayout: stateSpacesLayout, source: source, int: int)))
        }
        config.json = JSONValue.object(json).encodable.object!
        return config
    }

    /// Mamba-2's per-head settings, from transformers' keys or mamba_ssm's ssm_cfg. Heads and head
    /// size follow from each other and E when one is missing (head_dim 64, the default of both,
    /// when both are); n_groups defaults to transformers' 8, or to mamba_ssm's 1 in its layout.
    static func mamba2Mixer(_ json: [String: JSONValue], ssm: [String: JSONValue], innerSize e: Int, stateSpacesLayout: Bool, source: String,
                            int: ([String], [String: JSONValue]) throws -> Int?) throws -> Mamba2Mixer {
        func positive(_ key: String, _ value: Int?) throws -> Int? {
            if let value, value <= 0 { throw MambaError(.badConfig, "\(source): \(key) must be positive, found \(value)") }
            return value
        }
        // Bounded before any product: a forged num_heads x head_dim must be refused, not overflow.
        func bounded(_ key: String, _ value: Int?) throws -> Int? {
            if let value, value > e { throw MambaError(.badConfig, "\(source): \(key) \(value) exceeds expand x hidden_size = \(e)") }
            return try positive(key, value)
        }
        var heads = try bounded("num_heads", try int(["num_heads"], json))
        var headDim = try bounded("head_dim", try int(["head_dim"], json) ?? int(["headdim"], ssm))
        if heads == nil && headDim == nil { headDim = 64 }
        if let p = headDim, heads == nil, e % p == 0 { heads = e / p }
        if let h = heads, headDim == nil, e % h == 0 { headDim = e / h }
        guard let h = heads, let p = headDim, h * p == e else {
            throw MambaError(.badConfig, "\(source): num_heads \(heads.map(String.init) ?? "?") x head_dim \(headDim.map(String.init) ?? "?") is not expand x hidden_size = \(e)")
        }
        let groups = try bounded("n_groups", try int(["n_groups"], json) ?? int(["ngroups"], ssm)) ?? (stateSpacesLayout ? 1 : 8)
        guard h % groups == 0 else { throw MambaError(.badConfig, "\(source): n_groups \(groups) does not divide num_heads \(h)") }
        let chunk = try positive("chunk_size", try int(["chunk_size"], json) ?? int(["chunk_size"], ssm)) ?? 256
        let limit = try timeStepLimit(json["time_step_limit"] ?? ssm["dt_limit"], source: source)
        if let act = json["hidden_act"]?.string, act != "silu" {
            throw MambaError(.unsupportedModel, "\(source): hidden_act \(act) is not supported; Mamba-2's conv activation is silu")
        }
        // mamba_ssm options that change the forward (transformers has none of them).
        if ssm["rmsnorm"]?.bool == false { throw MambaError(.unsupportedModel, "\(source): ssm_cfg.rmsnorm false (no gated norm) is not supported") }
        if ssm["norm_before_gate"]?.bool == true { throw MambaError(.unsupportedModel, "\(source): ssm_cfg.norm_before_gate true is not supported (the gate comes first)") }
        if ssm["D_has_hdim"]?.bool == true { throw MambaError(.unsupportedModel, "\(source): ssm_cfg.D_has_hdim true (D per channel) is not supported") }
        if let dssm = try int(["d_ssm"], ssm), dssm != e {
            throw MambaError(.unsupportedModel, "\(source): ssm_cfg.d_ssm \(dssm) < expand x hidden_size \(e) (a gated MLP beside the SSM) is not supported")
        }
        return Mamba2Mixer(heads: h, headDim: p, groups: groups, chunkSize: chunk, timeStepMin: Float(limit.0), timeStepMax: Float(limit.1))
    }

    /// Mamba-2's time_step_limit [min, max] ((0, inf) when absent): min finite in float32 (a clamp
    /// at +inf would give inf dt and NaN states), max may be +inf.
    static func timeStepLimit(_ value: JSONValue?, source: String) throws -> (Double, Double) {
        guard let v = value, !v.isNull else { return (0, .infinity) }
        guard let a = v.array, a.count == 2, let lo = a[0].float, let hi = a[1].float, lo >= 0, Float(lo).isFinite, lo <= hi, !hi.isNaN else {
            throw MambaError(.badConfig, "\(source): time_step_limit must be [min, max] with 0 <= min <= max and min finite, found \(v.encodable)")
        }
        return (lo, hi)
    }

    /// Parameters of layer `i`: its norm and its mixer's tensors.
    public func layerParameterCount(_ i: Int) -> Int {
        hiddenSize + mixer(layer: i).presentParameters(self).reduce(0) { $0 + $1.shape.reduce(1, *) }
    }

    /// Parameters of the largest layer (what a layer-at-a-time pipeline holds at once).
    public var largestLayerParameterCount: Int { distinctKinds.map { layerParameterCount(layerKinds.firstIndex(of: $0)!) }.max() ?? 0 }

    /// Parameters of a model with this config (the tied head counted once).
    public var parameterCount: Int {
        let outside = vision.map { v in VisionParameter.allCases.compactMap { $0.shape(self, v)?.reduce(1, *) }.reduce(0, +) }
            ?? vocabSize * hiddenSize * (tieWordEmbeddings ? 1 : 2)
        return outside + (0..<numLayers).reduce(0) { $0 + layerParameterCount($1) } + hiddenSize
    }

    /// transformers' model types that mix Mamba(-2) layers with attention (or MoE) layers.
    static let hybridModelTypes: Set<String> = ["zamba", "zamba2"]

    /// Falcon-Mamba's mixer_rms_eps when config.json leaves it out (transformers' default).
    public static let defaultMixerRMSEpsilon = 1e-6

    /// A line about settings taken from defaults rather than config.json (for `inspect`).
    public var defaultedSettings: [String] {
        // Notes on the Mamba configs' own keys (a hybrid's settings come from its own keys).
        guard distinctKinds.count == 1, let mixer = layerKinds.first?.spec else { return [] }
        if mixer.name == "falcon_mamba" && json["mixer_rms_eps"] == nil {
            return ["mixer_rms_eps absent from config.json: using transformers' default \(Self.defaultMixerRMSEpsilon)"]
        }
        if let m = mixer as? Mamba2Mixer {
            var notes: [String] = []
            let headDimGiven = json["head_dim"] != nil || json["ssm_cfg"]?["headdim"] != nil
            if !headDimGiven && json["num_heads"] == nil {
                notes.append("num_heads and head_dim absent from config.json: using head_dim 64 (the default), \(m.heads) heads")
            } else if json["ssm_cfg"] == nil && (!headDimGiven || json["num_heads"] == nil) {
                notes.append("one of num_heads/head_dim absent from config.json: derived \(m.heads) heads of \(m.headDim) from expand x hidden_size")
            }
            if json["n_groups"] == nil && json["ssm_cfg"]?["ngroups"] == nil {
                notes.append("n_groups absent from config.json: using \(m.groups) (\(json["ssm_cfg"] == nil ? "transformers'" : "mamba_ssm's") default)")
            }
            return notes
        }
        return []
    }

    /// A Hugging Face config.json for this configuration (for checkpoints we write): the common
    /// keys and the first layer's mixer's own (a config that mixes kinds names them itself).
    public func hfJSON() -> [String: JSONValue] {
        let spec = layerKinds.first?.spec ?? Mamba1Mixer()
        return [
            "model_type": .string(spec.modelType),
            "architectures": .array([.string(spec.architecture)]),
            "hidden_size": .number(Double(hiddenSize)), "num_hidden_layers": .number(Double(numLayers)),
            "state_size": .number(Double(stateSize)), "expand": .number(Double(expand)),
            "intermediate_size": .number(Double(innerSize)), "conv_kernel": .number(Double(convKernel)),
            "vocab_size": .number(Double(vocabSize)),
            "layer_norm_epsilon": .number(Double(layerNormEpsilon)), "use_bias": .bool(useBias),
            "use_conv_bias": .bool(useConvBias), "tie_word_embeddings": .bool(tieWordEmbeddings),
            "residual_in_fp32": .bool(true),
        ].merging(spec.configJSON(self)) { _, mixerKey in mixerKey }
    }
}

/// `text` with the bare words Infinity, -Infinity and NaN outside strings replaced by
/// {"__float__": "..."} (transformers 5's spelling, which JSONValue.float reads).
func taggingBareSpecialFloats(_ text: String) -> String {
    guard text.contains("Infinity") || text.contains("NaN") else { return text }
    let scalars = Array(text.unicodeScalars)
    var out = String.UnicodeScalarView()
    var i = 0, inString = false
    func word(_ w: String) -> Bool {
        let ws = Array(w.unicodeScalars)
        return i + ws.count <= scalars.count && Array(scalars[i..<(i + ws.count)]) == ws
    }
    while i < scalars.count {
        let c = scalars[i]
        if inString {
            out.append(c)
            if c == "\\", i + 1 < scalars.count { out.append(scalars[i + 1]); i += 2; continue }
            if c == "\"" { inString = false }
            i += 1
            continue
        }
        if c == "\"" { inString = true; out.append(c); i += 1; continue }
        var replaced = false
        for w in ["-Infinity", "Infinity", "NaN"] where word(w) {
            out.append(contentsOf: "{\"__float__\": \"\(w)\"}".unicodeScalars)
            i += w.unicodeScalars.count
            replaced = true
            break
        }
        if !replaced { out.append(c); i += 1 }
    }
    return String(out)
}
