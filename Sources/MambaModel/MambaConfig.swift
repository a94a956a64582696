import Foundation
import MambaTensors

/// A Mamba-1 configuration, read from a Hugging Face config.json (MambaConfig's keys) or from an
/// original state-spaces/mamba config (d_model, n_layer, ssm_cfg). Defaults live here and only here.
///
/// Glossary (DESIGN.md section 1): D = hiddenSize, E = innerSize = expand * D, N = stateSize,
/// R = timeStepRank, K = convKernel, V = vocabSize (padded).
public struct MambaConfig: Sendable, Equatable {
    public var hiddenSize: Int          // D
    public var numLayers: Int
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
    /// The mixer every layer runs (one kind per model until a hybrid config names one per layer).
    public var mixer: MixerKind = .mamba1
    /// The config file as read, so that a quantized checkpoint can carry it forward unchanged.
    public var json: [String: JSONValue]

    public init(
        hiddenSize: Int, numLayers: Int, stateSize: Int = 16, expand: Int = 2, convKernel: Int = 4,
        timeStepRank: Int? = nil, vocabSize: Int, layerNormEpsilon: Float = 1e-5, useBias: Bool = false,
        useConvBias: Bool = true, tieWordEmbeddings: Bool = true, mixer: MixerKind = .mamba1
    ) {
        self.hiddenSize = hiddenSize
        self.numLayers = numLayers
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
        self.mixer = mixer
        self.json = [:]
        self.json = hfJSON()
    }

    /// dt_rank "auto" = ceil(D / 16) (state-spaces mamba_simple.py).
    public static func autoTimeStepRank(_ hiddenSize: Int) -> Int { (hiddenSize + 15) / 16 }

    public static let fileName = "config.json"

    /// Reads `directory/config.json`.
    public static func load(directory: String) throws -> MambaConfig {
        let path = directory + "/" + fileName
        guard FileManager.default.fileExists(atPath: directory) else {
            throw MambaError(.missingFile, "model directory \(directory) does not exist")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MambaError(.missingFile, "\(path) not found: a Hugging Face Mamba checkpoint directory has config.json, model.safetensors and tokenizer.json")
        }
        return try parse(data, source: path)
    }

    public static func parse(_ data: Data, source: String) throws -> MambaConfig {
        guard case .object(let json)? = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            throw MambaError(.badConfig, "\(source) is not a JSON object")
        }
        let modelType = json["model_type"]?.string
        switch modelType {
        case "mamba", "falcon_mamba", nil: break
        case "mamba2":
            throw MambaError(.unsupportedModel, "\(source): model_type mamba2 is not supported yet; only Mamba-1 (model_type \"mamba\" or \"falcon_mamba\") is")
        case let other?:
            throw MambaError(.unsupportedModel, "\(source): model_type \(other) is not a Mamba-1 model; only model_type \"mamba\" and \"falcon_mamba\" are supported")
        }
        // An original state-spaces config nests the SSM settings in ssm_cfg.
        let ssm = json["ssm_cfg"]?.object ?? [:]
        if let layer = ssm["layer"]?.string, layer != "Mamba1" {
            throw MambaError(.unsupportedModel, "\(source): ssm_cfg.layer \(layer) is not supported; only Mamba-1 is")
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
        let state = try int(["state_size"], in: json) ?? int(["d_state"], in: ssm) ?? 16
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
        if let multiple = try int(["pad_vocab_size_multiple"], in: json), multiple > 1, vocab % multiple != 0 {
            vocab += multiple - vocab % multiple
        }
        for (name, value) in [("state_size", state), ("expand", expand), ("conv_kernel", conv)] where value <= 0 {
            throw MambaError(.badConfig, "\(source): \(name) must be positive, found \(value)")
        }
        if let inner = try int(["intermediate_size"], in: json), inner != expand * hidden {
            throw MambaError(.badConfig, "\(source): intermediate_size \(inner) is not expand x hidden_size = \(expand * hidden)")
        }
        rank = max(rank, 1)
        let eps = json["layer_norm_epsilon"]?.double ?? json["norm_epsilon"]?.double ?? 1e-5
        var config = MambaConfig(
            hiddenSize: hidden, numLayers: layers, stateSize: state, expand: expand, convKernel: conv,
            timeStepRank: rank, vocabSize: vocab, layerNormEpsilon: Float(eps),
            useBias: json["use_bias"]?.bool ?? ssm["bias"]?.bool ?? false,
            useConvBias: json["use_conv_bias"]?.bool ?? ssm["conv_bias"]?.bool ?? true,
            tieWordEmbeddings: json["tie_word_embeddings"]?.bool ?? json["tie_embeddings"]?.bool ?? true)
        if modelType == "falcon_mamba" {
            // transformers' FalconMambaConfig default when the key is absent (inspect says so).
            let eps = json["mixer_rms_eps"]?.double ?? Self.defaultMixerRMSEpsilon
            guard eps >= 0, eps.isFinite else { throw MambaError(.badConfig, "\(source): mixer_rms_eps must be a finite non-negative number, found \(eps)") }
            config.mixer = .falconMamba(ssmNormEpsilon: Float(eps))
        }
        config.json = json
        return config
    }

    /// Parameters of one layer: its norm and its mixer's tensors.
    public var layerParameterCount: Int {
        hiddenSize + mixer.spec.presentParameters(self).reduce(0) { $0 + $1.shape.reduce(1, *) }
    }

    /// Parameters of a model with this config (the tied head counted once).
    public var parameterCount: Int {
        vocabSize * hiddenSize * (tieWordEmbeddings ? 1 : 2) + numLayers * layerParameterCount + hiddenSize
    }

    /// Falcon-Mamba's mixer_rms_eps when config.json leaves it out (transformers' default).
    public static let defaultMixerRMSEpsilon = 1e-6

    /// A line about settings taken from defaults rather than config.json (for `inspect`).
    public var defaultedSettings: [String] {
        if mixer.spec.name == "falcon_mamba" && json["mixer_rms_eps"] == nil {
            return ["mixer_rms_eps absent from config.json: using transformers' default \(Self.defaultMixerRMSEpsilon)"]
        }
        return []
    }

    /// A Hugging Face MambaConfig-style JSON for this configuration (for checkpoints we write).
    public func hfJSON() -> [String: JSONValue] {
        [
            "model_type": .string(mixer.spec.name == "falcon_mamba" ? "falcon_mamba" : "mamba"),
            "architectures": .array([.string(mixer.spec.name == "falcon_mamba" ? "FalconMambaForCausalLM" : "MambaForCausalLM")]),
            "hidden_size": .number(Double(hiddenSize)), "num_hidden_layers": .number(Double(numLayers)),
            "state_size": .number(Double(stateSize)), "expand": .number(Double(expand)),
            "intermediate_size": .number(Double(innerSize)), "conv_kernel": .number(Double(convKernel)),
            "time_step_rank": .number(Double(timeStepRank)), "vocab_size": .number(Double(vocabSize)),
            "layer_norm_epsilon": .number(Double(layerNormEpsilon)), "use_bias": .bool(useBias),
            "use_conv_bias": .bool(useConvBias), "tie_word_embeddings": .bool(tieWordEmbeddings),
            "residual_in_fp32": .bool(true),
        ].merging((mixer.spec as? Mamba1Mixer)?.ssmNormEpsilon.map { ["mixer_rms_eps": .number(Double($0))] } ?? [:]) { a, _ in a }
    }
}
