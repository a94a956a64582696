import Foundation
import MambaTensors

// Configs of the hybrids: Mamba-2 layers beside attention and MLP layers, one kind per layer.
// Upstream: transformers models/nemotron_h/configuration_nemotron_h.py (NemotronHConfig), in both
// spellings in use: the hub's `hybrid_override_pattern` string ("M" Mamba-2, "*" attention,
// "-" MLP, "E" mixture of experts) and the `layers_block_type` list that transformers 5 writes
// ("mamba"/"linear_attention", "attention"/"full_attention", "mlp", "moe"), with the hub's older
// key names (mamba_n_groups, mamba_d_conv, attention_head_dim, ...) beside the new ones.

extension MambaConfig {
    /// A Nemotron-H config: its layer kinds, the Mamba-2 layers' settings and the attention and MLP
    /// layers'. Refuses what is not implemented (mixture-of-experts layers, activations other than
    /// relu2 and silu, sliding windows, multi-token prediction) naming the key.
    static func nemotronH(_ json: [String: JSONValue], source: String) throws -> MambaConfig {
        func int(_ keys: [String], default value: Int? = nil) throws -> Int {
            for k in keys {
                guard let v = json[k], !v.isNull else { continue }
                guard let i = v.int, i > 0, i <= 1 << 20 else { throw MambaError(.badConfig, "\(source): \(k) must be a positive integer (at most \(1 << 20)), found \(v.encodable)") }
                return i
            }
            guard let value else { throw MambaError(.badConfig, "\(source) lacks \(keys.joined(separator: " / "))") }
            return value
        }
        func bool(_ keys: [String], default value: Bool) -> Bool { keys.lazy.compactMap { json[$0]?.bool }.first ?? value }
        func float(_ keys: [String], default value: Double) throws -> Double {
            guard let v = keys.lazy.compactMap({ json[$0] }).first(where: { !$0.isNull }) else { return value }
            guard let d = v.float, d >= 0, Float(d).isFinite else { throw MambaError(.badConfig, "\(source): \(keys[0]) must be a finite non-negative number, found \(v.encodable)") }
            return d
        }
        func word(_ key: String, _ allowed: [String], default value: String) throws -> String {
            guard let v = json[key], !v.isNull else { return value }
            guard let s = v.string, allowed.contains(s) else {
                throw MambaError(.unsupportedModel, "\(source): \(key) \(v.encodable) is not supported (\(allowed.joined(separator: ", ")) are)")
            }
            return s
        }

        // The layer kinds, in either spelling.
        enum Kind { case mamba, attention, mlp }
        var kinds: [Kind] = []
        if let list = json["layers_block_type"]?.array ?? json["layer_types"]?.array {
            for v in list {
                switch v.string {
                case "mamba", "linear_attention": kinds.append(.mamba)
                case "attention", "full_attention": kinds.append(.attention)
                case "mlp": kinds.append(.mlp)
                case "moe": throw MambaError(.unsupportedModel, "\(source): layers_block_type has moe layers (mixture of experts), which are not supported yet")
                default: throw MambaError(.badConfig, "\(source): layers_block_type holds \(v.encodable); mamba, attention, mlp and moe are the layer types")
                }
            }
        } else if let pattern = json["hybrid_override_pattern"]?.string {
            for c in pattern {
                switch c {
                case "M": kinds.append(.mamba)
                case "*": kinds.append(.attention)
                case "-": kinds.append(.mlp)
                case "E": throw MambaError(.unsupportedModel, "\(source): hybrid_override_pattern has E (mixture-of-experts) layers, which are not supported yet")
                default: throw MambaError(.badConfig, "\(source): hybrid_override_pattern holds \"\(c)\"; M, *, - and E are the layer types")
                }
            }
        } else {
            throw MambaError(.badConfig, "\(source) lacks hybrid_override_pattern / layers_block_type: a Nemotron-H config names each layer's type")
        }
        guard !kinds.isEmpty, kinds.count <= 1 << 16 else { throw MambaError(.badConfig, "\(source): the layer pattern has \(kinds.count) layers") }
        if let n = json["num_nextn_predict_layers"]?.int, n > 0 {
            throw MambaError(.unsupportedModel, "\(source): num_nextn_predict_layers \(n) (multi-token prediction layers) is not supported")
        }
        if let w = json["sliding_window"], !w.isNull { throw MambaError(.unsupportedModel, "\(source): sliding_window \(w.encodable) is not supported") }
        _ = try word("mamba_hidden_act", ["silu"], default: "silu")
        let activation = try word("mlp_hidden_act", ["relu2"], default: "relu2")

        let hidden = try int(["hidden_size"]), vocab = try int(["vocab_size"])
        let mambaHeads = try int(["mamba_num_heads"], default: 128), mambaHeadDim = try int(["mamba_head_dim"], default: 64)
        let groups = try int(["n_groups", "mamba_n_groups"], default: 8)
        guard mambaHeads % groups == 0 else { throw MambaError(.badConfig, "\(source): n_groups \(groups) does not divide mamba_num_heads \(mambaHeads)") }
        let state = try int(["ssm_state_size"], default: 128), conv = try int(["conv_kernel", "mamba_d_conv"], default: 4)
        let heads = try int(["num_attention_heads"], default: 32)
        let kvHeads = try int(["num_key_value_heads"], default: heads)
        guard heads % kvHeads == 0 else { throw MambaError(.badConfig, "\(source): num_key_value_heads \(kvHeads) does not divide num_attention_heads \(heads)") }
        let headDim = try int(["head_dim", "attention_head_dim"], default: 128)
        let width = try int(["intermediate_size"], default: 21504)
        let eps = try float(["layer_norm_epsilon"], default: 1e-5)
        guard eps > 0, eps < 1 else { throw MambaError(.badConfig, "\(source): layer_norm_epsilon must be in (0, 1), found \(eps)") }
        // NemotronHMamba2Mixer clamps dt at (time_step_min, inf), whatever time_step_limit says.
        let dtMin = try float(["time_step_min", "mamba_dt_min"], default: 0.001)

        var c = MambaConfig(hiddenSize: hidden, numLayers: kinds.count, stateSize: state, expand: 2, convKernel: conv, vocabSize: vocab,
                            layerNormEpsilon: Float(eps), useBias: bool(["use_bias"], default: false),
                            useConvBias: bool(["use_conv_bias", "mamba_conv_bias"], default: true),
                            tieWordEmbeddings: bool(["tie_word_embeddings"], default: false))
        c.innerSize = mambaHeads * mambaHeadDim
        let mamba = MixerKind(Mamba2Mixer(heads: mambaHeads, headDim: mambaHeadDim, groups: groups, chunkSize: try int(["chunk_size"], default: 128),
                                          timeStepMin: Float(dtMin), timeStepMax: .infinity))
        // NemotronHAttention's projections have no biases, whatever attention_bias says.
        if bool(["attention_bias"], default: false) {
            throw MambaError(.unsupportedModel, "\(source): attention_bias true is not supported (NemotronHAttention's projections have no biases)")
        }
        let attention = MixerKind(AttentionMixer(heads: heads, kvHeads: kvHeads, headDim: headDim))
        let mlp = MixerKind(MLPMixer(width: width, activation: MLPActivation(rawValue: activation)!, bias: bool(["mlp_bias"], default: false)))
        c.layerKinds = kinds.map { k in switch k { case .mamba: mamba; case .attention: attention; case .mlp: mlp } }
        c.json = JSONValue.object(json).encodable.object!
        return c
    }
}
