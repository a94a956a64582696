import Foundation
import MambaTensors

// Configs of the hybrids: Mamba-2 layers beside attention and MLP layers, one kind per tool layer.
// Upstream: transformers models/nemotron_h/configuration_nemotron_h.py (NemotronHConfig), in both
// spellings in use: the hub's `hybrid_override_pattern` string ("M" Mamba-2, "*" attention,
// "-" MLP, "E" mixture of experts) and the `layers_block_type` list that transformers 5 writes
// ("mamba"/"linear_attention", "attention"/"full_attention", "mlp", "moe"), with the hub's older
// key names (mamba_n_groups, mamba_d_conv, attention_head_dim, ...) beside the new ones;
// models/bamba/configuration_bamba.py (BambaConfig: attn_layer_indices, mamba_* keys, RoPE on half
// of each head) and models/granitemoehybrid/configuration_granitemoehybrid.py
// (GraniteMoeHybridConfig: layer_types, position_embedding_type, the four multipliers,
// num_local_experts), whose decoder layers are two tool layers each (CheckpointLayout.swift).

/// Typed reads of a hybrid's config keys, each refusal one line naming the key.
struct HybridConfigReader {
    let json: [String: JSONValue]
    let source: String

    /// The first of `keys` present, a positive integer (at most 2^20).
    func int(_ keys: [String], default value: Int? = nil) throws -> Int {
        for k in keys {
            guard let v = json[k], !v.isNull else { continue }
            guard let i = v.int, i > 0, i <= 1 << 20 else { throw MambaError(.badConfig, "\(source): \(k) must be a positive integer (at most \(1 << 20)), found \(v.encodable)") }
            return i
        }
        guard let value else { throw MambaError(.badConfig, "\(source) lacks \(keys.joined(separator: " / "))") }
        return value
    }

    /// A non-negative integer (`value` when absent).
    func count(_ key: String, default value: Int = 0) throws -> Int {
        guard let v = json[key], !v.isNull else { return value }
        guard let i = v.int, i >= 0, i <= 1 << 16 else { throw MambaError(.badConfig, "\(source): \(key) must be a non-negative integer (at most \(1 << 16)), found \(v.encodable)") }
        return i
    }

    func bool(_ keys: [String], default value: Bool) -> Bool { keys.lazy.compactMap { json[$0]?.bool }.first ?? value }

    /// The first of `keys` present, a finite non-negative number.
    func float(_ keys: [String], default value: Double) throws -> Double {
        guard let v = keys.lazy.compactMap({ json[$0] }).first(where: { !$0.isNull }) else { return value }
        guard let d = v.float, d >= 0, Float(d).isFinite else { throw MambaError(.badConfig, "\(source): \(keys[0]) must be a finite non-negative number, found \(v.encodable)") }
        return d
    }

    /// A positive finite number (a multiplier).
    func positive(_ key: String, default value: Double) throws -> Float {
        let d = try float([key], default: value)
        guard d > 0 else { throw MambaError(.badConfig, "\(source): \(key) must be positive, found \(d)") }
        return Float(d)
    }

    func word(_ key: String, _ allowed: [String], default value: String) throws -> String {
        guard let v = json[key], !v.isNull else { return value }
        guard let s = v.string, allowed.contains(s) else {
            throw MambaError(.unsupportedModel, "\(source): \(key) \(v.encodable) is not supported (\(allowed.joined(separator: ", ")) are)")
        }
        return s
    }

    /// num_hidden_layers (decoder layers), at most 2^15.
    func decoderLayers() throws -> Int {
        let layers = try int(["num_hidden_layers"], default: 32)
        guard layers <= 1 << 15 else { throw MambaError(.badConfig, "\(source): num_hidden_layers \(layers) exceeds \(1 << 15)") }
        return layers
    }

    /// The attention heads, key/value heads (`kvDefault` when absent; nil: as many as heads) and
    /// head size (`headDimKeys`, hidden / heads unless `headDimDefault` says otherwise), checked.
    func attentionHeads(hidden: Int, kvDefault: Int?, headDimKeys: [String] = ["head_dim"], headDimDefault: Int? = nil) throws
        -> (heads: Int, kvHeads: Int, headDim: Int) {
        let heads = try int(["num_attention_heads"], default: 32)
        let kvHeads = try int(["num_key_value_heads"], default: kvDefault ?? heads)
        guard heads % kvHeads == 0 else { throw MambaError(.badConfig, "\(source): num_key_value_heads \(kvHeads) does not divide num_attention_heads \(heads)") }
        let headDim = try int(headDimKeys, default: headDimDefault ?? hidden / heads)
        guard headDim > 0 else { throw MambaError(.badConfig, "\(source): hidden_size \(hidden) / num_attention_heads \(heads) leaves no head dimension") }
        return (heads, kvHeads, headDim)
    }

    /// A Mamba-2 mixer's heads over `width` channels in the mamba_* spelling (Bamba, Granite,
    /// Falcon-H1): mamba_n_heads, mamba_d_head ("auto": width / heads), mamba_n_groups, checked;
    /// `widthName` says what the width is in messages ("mamba_expand x hidden_size 64").
    func mamba2Heads(width: Int, widthName: String) throws -> (heads: Int, headDim: Int, groups: Int) {
        let heads = try int(["mamba_n_heads"], default: 128)
        guard width % heads == 0 else { throw MambaError(.badConfig, "\(source): mamba_n_heads \(heads) does not divide \(widthName)") }
        let headDim = json["mamba_d_head"]?.string == "auto" ? width / heads : try int(["mamba_d_head"], default: width / heads)
        guard headDim * heads == width else {
            throw MambaError(.badConfig, "\(source): mamba_d_head \(headDim) x mamba_n_heads \(heads) is not \(widthName)")
        }
        let groups = try int(["mamba_n_groups"], default: 1)
        guard heads % groups == 0 else { throw MambaError(.badConfig, "\(source): mamba_n_groups \(groups) does not divide mamba_n_heads \(heads)") }
        return (heads, headDim, groups)
    }

    /// RoPE's settings: transformers 5 nests theta and the factor in rope_parameters; the hub's
    /// configs keep rope_theta at the top level. Only the default rope type.
    func rope(headDim: Int, defaultFactor: Double) throws -> RotaryEmbedding {
        if let s = json["rope_scaling"], !s.isNull { throw MambaError(.unsupportedModel, "\(source): rope_scaling \(s.encodable) is not supported") }
        let p = json["rope_parameters"]?.object ?? [:]
        let pr = HybridConfigReader(json: p.merging(json.filter { ["rope_theta", "partial_rotary_factor"].contains($0.key) }) { nested, _ in nested }, source: source)
        _ = try HybridConfigReader(json: p, source: source + " rope_parameters").word("rope_type", ["default"], default: "default")
        let theta = try pr.float(["rope_theta"], default: 10000)
        let factor = try pr.float(["partial_rotary_factor"], default: defaultFactor)
        let dims = Int(Double(headDim) * factor)
        guard theta > 0, factor > 0, factor <= 1, dims >= 2, dims % 2 == 0 else {
            throw MambaError(.badConfig, "\(source): rope_theta \(theta) and partial_rotary_factor \(factor) leave \(dims) rotary dimensions of head_dim \(headDim) (a positive even count is needed)")
        }
        return RotaryEmbedding(theta: theta, dims: dims)
    }

    /// A list of `count` positive multipliers (ones when absent).
    func multipliers(_ key: String, count: Int) throws -> [Float] {
        guard let v = json[key], !v.isNull else { return Array(repeating: 1, count: count) }
        let values = v.array?.compactMap(\.float) ?? []
        guard v.array?.count == count, values.count == count, values.allSatisfy({ $0 > 0 && Float($0).isFinite }) else {
            throw MambaError(.badConfig, "\(source): \(key) must be a list of \(count) positive numbers, found \(v.encodable)")
        }
        return values.map(Float.init)
    }

    /// The RMSNorm epsilon, in (0, 1).
    func epsilon(_ keys: [String], default value: Double) throws -> Float {
        let eps = try float(keys, default: value)
        guard eps > 0, eps < 1 else { throw MambaError(.badConfig, "\(source): \(keys[0]) must be in (0, 1), found \(eps)") }
        return Float(eps)
    }
}

extension MambaConfig {
    /// A Nemotron-H config: its layer kinds, the Mamba-2 layers' settings and the attention, MLP and
    /// mixture-of-experts layers'. Refuses what is not implemented (activations other than relu2
    /// and silu, sliding windows, multi-token prediction, the experts' latent projection) naming
    /// the key.
    static func nemotronH(_ json: [String: JSONValue], source: String) throws -> MambaConfig {
        let r = HybridConfigReader(json: json, source: source)

        // The layer kinds, in either spelling.
        enum Kind { case mamba, attention, mlp, moe }
        var kinds: [Kind] = []
        if let list = json["layers_block_type"]?.array ?? json["layer_types"]?.array {
            for v in list {
                switch v.string {
                case "mamba", "linear_attention": kinds.append(.mamba)
                case "attention", "full_attention": kinds.append(.attention)
                case "mlp": kinds.append(.mlp)
                case "moe": kinds.append(.moe)
                default: throw MambaError(.badConfig, "\(source): layers_block_type holds \(v.encodable); mamba, attention, mlp and moe are the layer types")
                }
            }
        } else if let pattern = json["hybrid_override_pattern"]?.string {
            for c in pattern {
                switch c {
                case "M": kinds.append(.mamba)
                case "*": kinds.append(.attention)
                case "-": kinds.append(.mlp)
                case "E": kinds.append(.moe)
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
        _ = try r.word("mamba_hidden_act", ["silu"], default: "silu")
        let activation = try r.word("mlp_hidden_act", ["relu2"], default: "relu2")

        let hidden = try r.int(["hidden_size"]), vocab = try r.int(["vocab_size"])
        let mambaHeads = try r.int(["mamba_num_heads"], default: 128), mambaHeadDim = try r.int(["mamba_head_dim"], default: 64)
        let groups = try r.int(["n_groups", "mamba_n_groups"], default: 8)
        guard mambaHeads % groups == 0 else { throw MambaError(.badConfig, "\(source): n_groups \(groups) does not divide mamba_num_heads \(mambaHeads)") }
        let state = try r.int(["ssm_state_size"], default: 128), conv = try r.int(["conv_kernel", "mamba_d_conv"], default: 4)
        let (heads, kvHeads, headDim) = try r.attentionHeads(hidden: hidden, kvDefault: nil, headDimKeys: ["head_dim", "attention_head_dim"], headDimDefault: 128)
        let width = try r.int(["intermediate_size"], default: 21504)
        let eps = try r.epsilon(["layer_norm_epsilon"], default: 1e-5)
        // NemotronHMamba2Mixer clamps dt at (time_step_min, inf), whatever time_step_limit says.
        let dtMin = try r.float(["time_step_min", "mamba_dt_min"], default: 0.001)

        var c = MambaConfig(hiddenSize: hidden, numLayers: kinds.count, stateSize: state, expand: 2, convKernel: conv, vocabSize: vocab,
                            layerNormEpsilon: eps, useBias: r.bool(["use_bias"], default: false),
                            useConvBias: r.bool(["use_conv_bias", "mamba_conv_bias"], default: true),
                            tieWordEmbeddings: r.bool(["tie_word_embeddings"], default: false))
        c.innerSize = mambaHeads * mambaHeadDim
        let mamba = MixerKind(Mamba2Mixer(heads: mambaHeads, headDim: mambaHeadDim, groups: groups, chunkSize: try r.int(["chunk_size"], default: 128),
                                          timeStepMin: Float(dtMin), timeStepMax: .infinity))
        // NemotronHAttention's projections have no biases, whatever attention_bias says.
        if r.bool(["attention_bias"], default: false) {
            throw MambaError(.unsupportedModel, "\(source): attention_bias true is not supported (NemotronHAttention's projections have no biases)")
        }
        let attention = MixerKind(AttentionMixer(heads: heads, kvHeads: kvHeads, headDim: headDim))
        let mlp = MixerKind(MLPMixer(width: width, activation: MLPActivation(rawValue: activation)!, bias: r.bool(["mlp_bias"], default: false)))
        let moe = kinds.contains(.moe) ? try nemotronMoE(r) : mlp
        c.layerKinds = kinds.map { k in switch k { case .mamba: mamba; case .attention: attention; case .mlp: mlp; case .moe: moe } }
        c.json = JSONValue.object(json).encodable.object!
        return c
    }
}

extension MambaConfig {
    /// Nemotron-H's mixture-of-experts layer ("E"; NemotronHMoE): relu2 experts without a gate, a
    /// shared relu2 MLP, DeepSeek-V3's grouped sigmoid routing. Refuses the latent projection
    /// (moe_latent_size) and biases on the shared MLP, naming the key.
    static func nemotronMoE(_ r: HybridConfigReader) throws -> MixerKind {
        let source = r.source
        if let latent = r.json["moe_latent_size"], !latent.isNull {
            throw MambaError(.unsupportedModel, "\(source): moe_latent_size \(latent.encodable) (a latent projection around the experts) is not supported")
        }
        if r.bool(["mlp_bias"], default: false) { throw MambaError(.unsupportedModel, "\(source): mlp_bias true with moe layers is not supported") }
        let experts = try r.int(["n_routed_experts", "num_local_experts"], default: 8)
        let topK = try r.int(["num_experts_per_tok"], default: 2)
        let groups = try r.int(["n_group"], default: 1), topKGroups = try r.int(["topk_group"], default: 1)
        guard experts % groups == 0, experts / groups >= 2 else {
            throw MambaError(.badConfig, "\(source): n_group \(groups) must divide n_routed_experts \(experts) into groups of at least 2")
        }
        guard topKGroups <= groups else { throw MambaError(.badConfig, "\(source): topk_group \(topKGroups) exceeds n_group \(groups)") }
        guard topK <= topKGroups * (experts / groups) else {
            throw MambaError(.badConfig, "\(source): num_experts_per_tok \(topK) exceeds the \(topKGroups * (experts / groups)) experts of topk_group \(topKGroups) groups")
        }
        let routing = MoEMixer.Routing.sigmoid(groups: groups, topKGroups: topKGroups, normalize: r.bool(["norm_topk_prob"], default: true),
                                               scaling: try r.positive("routed_scaling_factor", default: 1))
        return MixerKind(MoEMixer(experts: experts, topK: topK, width: try r.int(["moe_intermediate_size"], default: 7688), routing: routing,
                                  spelling: .nemotron, sharedWidth: try r.int(["moe_shared_expert_intermediate_size"], default: 7688)))
    }

    /// A Bamba or Granite-4.0-H (GraniteMoeHybrid) config: each decoder layer a Mamba-2 or
    /// attention mixer, then a SwiGLU MLP (Granite with num_local_experts > 0: a mixture of experts
    /// beside a shared MLP), each behind its own norm (two tool layers). Refuses RoPE types other
    /// than the default and other activations, naming the key.
    static func twoBlockHybrid(_ json: [String: JSONValue], source: String) throws -> MambaConfig {
        let r = HybridConfigReader(json: json, source: source)
        let granite = json["model_type"]?.string == "granitemoehybrid"
        let layers = try r.decoderLayers()

        // Which decoder layers are attention: Granite's layer_types (either spelling), Bamba's
        // attn_layer_indices (or the layers_block_type list where a config spells it).
        var attention = [Bool](repeating: false, count: layers)
        if let list = json["layer_types"]?.array ?? json["layers_block_type"]?.array {
            let key = json["layer_types"] != nil ? "layer_types" : "layers_block_type"
            guard list.count == layers else { throw MambaError(.badConfig, "\(source): \(key) lists \(list.count) layers, num_hidden_layers is \(layers)") }
            for (i, v) in list.enumerated() {
                switch v.string {
                case "mamba", "linear_attention": attention[i] = false
                case "attention", "full_attention": attention[i] = true
                default: throw MambaError(.badConfig, "\(source): \(key) holds \(v.encodable); mamba / linear_attention and attention / full_attention are the layer types")
                }
            }
        } else if let indices = json["attn_layer_indices"], !indices.isNull {
            guard let list = indices.array else { throw MambaError(.badConfig, "\(source): attn_layer_indices must be a list of layer indices") }
            for v in list {
                guard let i = v.int, (0..<layers).contains(i) else {
                    throw MambaError(.badConfig, "\(source): attn_layer_indices holds \(v.encodable), not a layer index below num_hidden_layers \(layers)")
                }
                attention[i] = true
            }
        }
        _ = try r.word("hidden_act", ["silu"], default: "silu")
        if let s = json["rope_scaling"], !s.isNull { throw MambaError(.unsupportedModel, "\(source): rope_scaling \(s.encodable) is not supported") }
        let hidden = try r.int(["hidden_size"]), vocab = try r.int(["vocab_size"])
        let expand = try r.int(["mamba_expand"], default: 2)
        let inner = expand * hidden
        let (mambaHeads, mambaHeadDim, groups) = try r.mamba2Heads(width: inner, widthName: "mamba_expand x hidden_size \(inner)")
        let limit = try timeStepLimit(json["time_step_limit"], source: source)
        let (heads, kvHeads, headDim) = try r.attentionHeads(hidden: hidden, kvDefault: granite ? nil : 8)

        // RoPE: Bamba always (half of each head unless the config says otherwise), Granite when
        // position_embedding_type is "rope". transformers 5 nests theta and the factor in
        // rope_parameters; the hub's configs keep rope_theta at the top level.
        let positions = granite ? try r.word("position_embedding_type", ["rope", "nope"], default: "nope") : "rope"
        let rope = positions == "rope" ? try r.rope(headDim: headDim, defaultFactor: granite ? 1 : 0.5) : nil

        let eps = try r.epsilon(["rms_norm_eps"], default: granite ? 1e-6 : 1e-5)
        var c = MambaConfig(hiddenSize: hidden, numLayers: 2 * layers, stateSize: try r.int(["mamba_d_state"], default: 256), expand: expand,
                            convKernel: try r.int(["mamba_d_conv"], default: 4), vocabSize: vocab, layerNormEpsilon: eps,
                            useBias: r.bool(["mamba_proj_bias"], default: false), useConvBias: r.bool(["mamba_conv_bias"], default: true),
                            tieWordEmbeddings: r.bool(["tie_word_embeddings"], default: false))
        let mamba = MixerKind(Mamba2Mixer(heads: mambaHeads, headDim: mambaHeadDim, groups: groups, chunkSize: try r.int(["mamba_chunk_size"], default: 256),
                                          timeStepMin: Float(limit.0), timeStepMax: Float(limit.1)))
        let attentionKind = MixerKind(AttentionMixer(heads: heads, kvHeads: kvHeads, headDim: headDim, bias: r.bool(["attention_bias"], default: false),
                                                     rope: rope, scale: granite ? try r.positive("attention_multiplier", default: 1) : nil))
        // Granite with experts: every layer's MLP is the mixture plus the shared MLP.
        let experts = granite ? try r.count("num_local_experts") : 0
        let mlp: MixerKind
        if experts > 0 {
            let topK = try r.int(["num_experts_per_tok"], default: 2)
            guard topK <= experts else { throw MambaError(.badConfig, "\(source): num_experts_per_tok \(topK) exceeds num_local_experts \(experts)") }
            mlp = MixerKind(MoEMixer(experts: experts, topK: topK, width: try r.int(["intermediate_size"], default: 1024), routing: .softmax(normalizeTopK: true),
                                     spelling: .granite, sharedWidth: try r.int(["shared_intermediate_size"], default: 1024)))
        } else {
            mlp = MixerKind(granite ? GatedMLPMixer(width: try r.int(["shared_intermediate_size"], default: 1024), fused: true)
                                    : GatedMLPMixer(width: try r.int(["intermediate_size"], default: 14336), fused: false, bias: r.bool(["mlp_bias"], default: false)))
        }
        c.layerKinds = attention.flatMap { [$0 ? attentionKind : mamba, mlp] }
        let mlpModule = granite ? (experts > 0 ? "" : "shared_mlp") : "feed_forward"
        c.layout = .twoBlocks(mixers: attention.map { $0 ? "self_attn" : "mamba" }, mlps: Array(repeating: mlpModule, count: layers),
                              mlpNorm: granite ? "post_attention_layernorm" : "pre_ff_layernorm", normF: granite ? "norm.weight" : "final_layernorm.weight")
        if granite {
            c.embeddingMultiplier = try r.positive("embedding_multiplier", default: 1)
            c.residualMultiplier = try r.positive("residual_multiplier", default: 1)
            c.logitsScaling = try r.positive("logits_scaling", default: 1)
        }
        c.json = JSONValue.object(json).encodable.object!
        return c
    }
}

extension MambaConfig {
    /// A Jamba config (transformers models/jamba/configuration_jamba.py): decoder layer i is
    /// attention when i % attn_layer_period == attn_layer_offset and Mamba-1 otherwise, its MLP a
    /// mixture of num_experts experts when i % expert_layer_period == expert_layer_offset and a
    /// SwiGLU MLP otherwise; two tool layers per decoder layer (CheckpointLayout.swift).
    static func jamba(_ json: [String: JSONValue], source: String) throws -> MambaConfig {
        let r = HybridConfigReader(json: json, source: source)
        let layers = try r.decoderLayers()
        func period(_ name: String, _ period: Int, _ offset: Int) throws -> (Int, Int) {
            let p = try r.int([name + "_period"], default: period), o = try r.count(name + "_offset", default: offset)
            guard o < p else { throw MambaError(.badConfig, "\(source): \(name)_offset \(o) must be below \(name)_period \(p)") }
            return (p, o)
        }
        let (attnPeriod, attnOffset) = try period("attn_layer", 8, 4)
        let (expertPeriod, expertOffset) = try period("expert_layer", 2, 1)
        _ = try r.word("hidden_act", ["silu"], default: "silu")
        if let w = json["sliding_window"], !w.isNull { throw MambaError(.unsupportedModel, "\(source): sliding_window \(w.encodable) is not supported") }

        let hidden = try r.int(["hidden_size"]), vocab = try r.int(["vocab_size"])
        let (heads, kvHeads, headDim) = try r.attentionHeads(hidden: hidden, kvDefault: 8)
        let experts = try r.int(["num_experts", "num_local_experts"], default: 16)
        let topK = try r.int(["num_experts_per_tok"], default: 2)
        guard topK <= experts else { throw MambaError(.badConfig, "\(source): num_experts_per_tok \(topK) exceeds num_experts \(experts)") }
        let width = try r.int(["intermediate_size"], default: 14336)
        let eps = try r.epsilon(["rms_norm_eps"], default: 1e-6)
        let dtRank = json["mamba_dt_rank"]?.string == "auto" ? autoTimeStepRank(hidden) : try r.int(["mamba_dt_rank"], default: autoTimeStepRank(hidden))

        var c = MambaConfig(hiddenSize: hidden, numLayers: 2 * layers, stateSize: try r.int(["mamba_d_state"], default: 16),
                            expand: try r.int(["mamba_expand"], default: 2), convKernel: try r.int(["mamba_d_conv"], default: 4),
                            timeStepRank: dtRank, vocabSize: vocab, layerNormEpsilon: eps,
                            useBias: r.bool(["mamba_proj_bias"], default: false), useConvBias: r.bool(["mamba_conv_bias"], default: true),
                            tieWordEmbeddings: r.bool(["tie_word_embeddings"], default: false))
        let mamba = MixerKind(Mamba1Mixer(ssmNormEpsilon: eps, ssmNormWeights: true))
        // JambaAttention: no biases, no positional encoding, scores scaled by head_dim^-1/2.
        let attention = MixerKind(AttentionMixer(heads: heads, kvHeads: kvHeads, headDim: headDim))
        let mlp = MixerKind(GatedMLPMixer(width: width, fused: false))
        // One expert is JambaMLP (transformers builds the dense MLP where layers_num_experts is 1).
        let moe = experts > 1 ? MixerKind(MoEMixer(experts: experts, topK: topK, width: width, routing: .softmax(normalizeTopK: false), spelling: .jamba)) : mlp
        let isAttention = (0..<layers).map { $0 % attnPeriod == attnOffset }
        c.layerKinds = (0..<layers).flatMap { i in [isAttention[i] ? attention : mamba, i % expertPeriod == expertOffset ? moe : mlp] }
        c.layout = .twoBlocks(mixers: isAttention.map { $0 ? "self_attn" : "mamba" }, mlps: Array(repeating: "feed_forward", count: layers),
                              mlpNorm: "pre_ff_layernorm", normF: "final_layernorm.weight")
        c.json = JSONValue.object(json).encodable.object!
        return c
    }
}

extension MambaConfig {
    /// A Falcon-H1 config (transformers models/falcon_h1/configuration_falcon_h1.py): every decoder
    /// layer a Mamba-2 mixer and an attention mixer in parallel (ParallelMixer.swift), then a SwiGLU
    /// MLP, each behind its own norm (two tool layers); the μP multipliers on the embedding, the
    /// logits, both mixers' inputs and outputs, the keys, in_proj's five parts and the MLP's gate
    /// and output. Refuses a gated norm applied before the gate (mamba_rms_norm with
    /// mamba_norm_before_gate), naming the key.
    static func falconH1(_ json: [String: JSONValue], source: String) throws -> MambaConfig {
        let r = HybridConfigReader(json: json, source: source)
        let layers = try r.decoderLayers()
        _ = try r.word("hidden_act", ["silu"], default: "silu")
        let hidden = try r.int(["hidden_size"]), vocab = try r.int(["vocab_size"])
        let expand = try r.int(["mamba_expand"], default: 2)
        // transformers' default d_ssm is 1024 when the key is absent, expand x hidden when it is null.
        let inner = json["mamba_d_ssm"].map { $0.isNull ? expand * hidden : -1 } ?? 1024
        let ssm = inner > 0 ? inner : try r.int(["mamba_d_ssm"])
        let (mambaHeads, mambaHeadDim, groups) = try r.mamba2Heads(width: ssm, widthName: "the Mamba width \(ssm) (mamba_d_ssm)")
        let gatedNorm = r.bool(["mamba_rms_norm"], default: false)
        if gatedNorm && r.bool(["mamba_norm_before_gate"], default: true) {
            throw MambaError(.unsupportedModel, "\(source): mamba_norm_before_gate true with mamba_rms_norm (the norm before the gate) is not supported; mamba_norm_before_gate false is")
        }
        let limit = try timeStepLimit(json["time_step_limit"], source: source)
        let (heads, kvHeads, headDim) = try r.attentionHeads(hidden: hidden, kvDefault: 8)

        var c = MambaConfig(hiddenSize: hidden, numLayers: 2 * layers, stateSize: try r.int(["mamba_d_state"], default: 256), expand: expand,
                            convKernel: try r.int(["mamba_d_conv"], default: 4), vocabSize: vocab, layerNormEpsilon: try r.epsilon(["rms_norm_eps"], default: 1e-5),
                            useBias: r.bool(["mamba_proj_bias"], default: false), useConvBias: r.bool(["mamba_conv_bias"], default: true),
                            tieWordEmbeddings: r.bool(["tie_word_embeddings"], default: false))
        c.innerSize = ssm
        let mamba = Mamba2Mixer(heads: mambaHeads, headDim: mambaHeadDim, groups: groups, chunkSize: try r.int(["mamba_chunk_size"], default: 256),
                                timeStepMin: Float(limit.0), timeStepMax: Float(limit.1), gatedNorm: gatedNorm,
                                biases: (r.bool(["mamba_proj_bias"], default: false), r.bool(["projectors_bias"], default: false)),
                                multipliers: Mamba2Multipliers(input: try r.positive("ssm_in_multiplier", default: 1),
                                                               parts: try r.multipliers("ssm_multipliers", count: 5),
                                                               output: try r.positive("ssm_out_multiplier", default: 1)))
        let attention = AttentionMixer(heads: heads, kvHeads: kvHeads, headDim: headDim, bias: r.bool(["attention_bias"], default: false),
                                       rope: try r.rope(headDim: headDim, defaultFactor: 1),
                                       multipliers: (try r.positive("attention_in_multiplier", default: 1), try r.positive("key_multiplier", default: 1),
                                                     try r.positive("attention_out_multiplier", default: 1)))
        let mlpMultipliers = try r.multipliers("mlp_multipliers", count: 2)
        let mlp = MixerKind(GatedMLPMixer(width: try r.int(["intermediate_size"], default: 14336), fused: false, bias: r.bool(["mlp_bias"], default: false),
                                          multipliers: (mlpMultipliers[0], mlpMultipliers[1])))
        c.layerKinds = (0..<layers).flatMap { _ in [MixerKind(ParallelMixer(mamba: mamba, attention: attention)), mlp] }
        c.layout = .twoBlocks(mixers: Array(repeating: "", count: layers), mlps: Array(repeating: "feed_forward", count: layers),
                              mlpNorm: "pre_ff_layernorm", normF: "final_layernorm.weight")
        c.embeddingMultiplier = try r.positive("embedding_multiplier", default: 1)
        // FalconH1ForCausalLM multiplies the logits by lm_head_multiplier.
        c.logitsScaling = 1 / (try r.positive("lm_head_multiplier", default: 1))
        c.json = JSONValue.object(json).encodable.object!
        return c
    }
}
