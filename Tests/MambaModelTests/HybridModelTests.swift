import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// The hybrids against transformers: Nemotron-H (Mamba-2, grouped-query attention and relu2 MLP
/// layers, one kind per layer; NemotronHForCausalLM), Bamba (Mamba-2 or attention with partial RoPE,
/// then a SwiGLU MLP, in every decoder layer; BambaForCausalLM) and Granite-4.0-H (the same with
/// gate and up fused, no positional encoding or RoPE, and Granite's four multipliers;
/// GraniteMoeHybridForCausalLM, also with a mixture of experts beside the shared MLP) and Jamba
/// (Mamba-1 with weighted dt/B/C norms or attention without positional encoding, then a SwiGLU MLP
/// or a mixture of experts; JambaForCausalLM) and Falcon-H1 (Mamba-2 and attention in parallel,
/// then a SwiGLU MLP, μP multipliers everywhere; FalconH1ForCausalLM).
/// Tests/Fixtures/models/tiny-{nemotron-h,bamba,granite-4.0-h,jamba,falcon-h1}* were written by
/// scripts/reference/make_hybrid_fixtures.py, in transformers 5's spellings and in the hub's, F32,
/// F16 and BF16, tied and untied.
final class HybridModelTests: XCTestCase {
    static let models = ["tiny-nemotron-h", "tiny-nemotron-h-hub", "tiny-bamba", "tiny-bamba-hub", "tiny-granite-4.0-h", "tiny-granite-4.0-h-rope",
                         "tiny-granite-4.0-h-moe", "tiny-jamba", "tiny-jamba-f16", "tiny-falcon-h1", "tiny-falcon-h1-hub", "tiny-nemotron-h-moe"]
    /// The fixtures whose transformers' cached decode (a prefill of `cachedPrefix` tokens, then one
    /// token at a time through its KV and recurrent caches) we match. tiny-nemotron-h's reference
    /// holds one too, but its time_step_min (0.01) binds and NemotronH's decode step does not clamp
    /// dt (the script prints 4.5e-3 of the range between transformers' own decode and prefill); ours
    /// clamps in both (Mamba2Mixer.swift), so its decode is checked against the prefill above.
    static let withCachedDecode = models.filter { $0 != "tiny-nemotron-h" }
    static let cachedPrefix = 21

    func reference(_ name: String) throws -> (ids: [Int], logits: Tensor, greedyPrompt: [Int], greedyIds: [Int]) {
        let f = try SafeTensorsFile(path: Fixtures.model(name) + "/reference.safetensors")
        return (try f.view("input_ids").integers(), try f.view("logits").tensor(), try f.view("greedy_prompt").integers(), try f.view("greedy_ids").integers())
    }

    func testConfigsResolveToTheirLayerKinds() throws {
        let c = try MambaConfig.load(directory: Fixtures.model("tiny-nemotron-h"))
        XCTAssertEqual(c.layerKinds.map(\.spec.name), ["mamba2", "attention", "mlp", "mamba2", "attention", "mlp"])
        XCTAssertEqual(c.family, "mamba2+attention+mlp")
        let attention = try XCTUnwrap(c.mixer(layer: 1) as? AttentionMixer)
        XCTAssertEqual([attention.heads, attention.kvHeads, attention.headDim], [4, 2, 8])
        XCTAssertEqual((c.mixer(layer: 2) as? MLPMixer)?.width, 48)
        XCTAssertEqual((c.mixer(layer: 0) as? Mamba2Mixer)?.timeStepMin, 0.01)
        XCTAssertEqual(c.innerSize, 64)
        let hub = try MambaConfig.load(directory: Fixtures.model("tiny-nemotron-h-hub"))
        XCTAssertEqual(hub.layerKinds.map(\.spec.name), ["mamba2", "mlp", "attention", "mamba2"])
        XCTAssertEqual((hub.mixer(layer: 2) as? AttentionMixer)?.kvHeads, 1)
        XCTAssertEqual((hub.mixer(layer: 0) as? Mamba2Mixer)?.groups, 1)
    }

    func testLogitsMatchTransformers() throws {
        for name in Self.models {
            let lm = try MambaLM.load(directory: Fixtures.model(name))
            let ref = try reference(name)
            let ours = try lm.logits(ref.ids)
            XCTAssertEqual(ours.shape, ref.logits.shape, name)
            XCTAssertLessThanOrEqual(maxAbsDifference(ours.storage, ref.logits.storage), 1e-4 * ref.logits.absMax, name)
        }
    }

    /// A prefill in chunks (several tokens from a state that already holds some: what `serve` runs
    /// a long prompt as) gives the logits of one prefill, on every hybrid and plain family.
    func testChunkedPrefillEqualsOnePrefill() throws {
        for name in Self.models + ["tiny-tied", "tiny-mamba2", "tiny-falcon"] {
            let lm = try MambaLM.load(directory: Fixtures.model(name))
            let ids = (0..<29).map { ($0 * 7 + 3) % lm.vocabSize }
            let whole = try lm.logits(ids)
            for chunk in [5, 13] {
                var state = lm.makeState()
                state.reserve(context: ids.count)
                var rows: [Float] = []
                for start in stride(from: 0, to: ids.count, by: chunk) {
                    rows += try lm.forward(Array(ids[start..<min(start + chunk, ids.count)]), state: &state, logits: .all).storage
                }
                XCTAssertLessThanOrEqual(maxAbsDifference(rows, whole.storage), 1e-4 * whole.absMax, "\(name), chunks of \(chunk)")
            }
        }
    }

    /// Decode one token at a time (the KV cache and the recurrent states carried together) gives
    /// the prefill's logits, and greedy generation transformers' ids.
    func testDecodeAndGreedyGenerationMatchTransformers() throws {
        for name in Self.models {
            let lm = try MambaLM.load(directory: Fixtures.model(name))
            let ref = try reference(name)
            var state = lm.makeState()
            var rows: [Float] = []
            for t in ref.ids { rows += try lm.forward([t], state: &state).storage }
            XCTAssertLessThanOrEqual(maxAbsDifference(rows, ref.logits.storage), 1e-4 * ref.logits.absMax, name)
            XCTAssertEqual(state.layers.compactMap { ($0 as? KVCache)?.count ?? ($0 as? ParallelState)?.attention.count }.first, ref.ids.count, name)
            var sampler = Sampler()
            var produced: [Int] = []
            try Generation(model: lm, parallelism: Parallelism(threads: 2))
                .run(prompt: ref.greedyPrompt, maxNewTokens: ref.greedyIds.count, sampler: &sampler, stop: nil) { produced.append($0) }
            XCTAssertEqual(produced, ref.greedyIds, name)
        }
    }

    /// A prefill then one token at a time through our caches gives transformers' cached decode.
    func testCachedDecodeMatchesTransformersCache() throws {
        for name in Self.withCachedDecode {
            let lm = try MambaLM.load(directory: Fixtures.model(name))
            let f = try SafeTensorsFile(path: Fixtures.model(name) + "/reference.safetensors")
            let (ids, cached) = (try f.view("input_ids").integers(), try f.view("cached_logits").tensor())
            var state = lm.makeState()
            _ = try lm.forward(Array(ids[..<Self.cachedPrefix]), state: &state, logits: .none)
            var rows: [Float] = []
            for t in ids[Self.cachedPrefix...] { rows += try lm.forward([t], state: &state).storage }
            XCTAssertEqual(rows.count, cached.count, name)
            XCTAssertLessThanOrEqual(maxAbsDifference(rows, cached.storage), 1e-4 * cached.absMax, name)
        }
    }

    func testBambaAndGraniteConfigs() throws {
        let bamba = try MambaConfig.load(directory: Fixtures.model("tiny-bamba"))
        XCTAssertEqual(bamba.layerKinds.map(\.spec.name), ["mamba2", "swiglu_mlp", "attention", "swiglu_mlp", "mamba2", "swiglu_mlp", "attention", "swiglu_mlp"])
        let attention = try XCTUnwrap(bamba.mixer(layer: 2) as? AttentionMixer)
        XCTAssertEqual(attention.rope, RotaryEmbedding(theta: 1000, dims: 4))
        XCTAssertNil(attention.scale)
        XCTAssertEqual(bamba.layout.fileName("backbone.layers.3.mixer.up_proj.weight", root: "model."), "model.layers.1.feed_forward.up_proj.weight")
        XCTAssertEqual(bamba.layout.fileName("backbone.layers.2.norm.weight", root: "model."), "model.layers.1.input_layernorm.weight")
        XCTAssertEqual(bamba.layout.fileName("backbone.norm_f.weight", root: "model."), "model.final_layernorm.weight")
        // The hub's spelling: rope_theta at the top level, Bamba's half-head RoPE by default.
        let hub = try MambaConfig.load(directory: Fixtures.model("tiny-bamba-hub"))
        XCTAssertEqual((hub.mixer(layer: 4) as? AttentionMixer)?.rope, RotaryEmbedding(theta: 10000, dims: 6))
        let granite = try MambaConfig.load(directory: Fixtures.model("tiny-granite-4.0-h"))
        XCTAssertEqual([granite.embeddingMultiplier, granite.residualMultiplier, granite.logitsScaling], [6, 0.4, 2.5])
        XCTAssertNil((granite.mixer(layer: 2) as? AttentionMixer)?.rope)
        XCTAssertEqual((granite.mixer(layer: 2) as? AttentionMixer)?.scale, 0.3)
        XCTAssertEqual((granite.mixer(layer: 1) as? GatedMLPMixer)?.fused, true)
        XCTAssertEqual(granite.layout.fileName("backbone.layers.1.mixer.input_linear.weight", root: "model."), "model.layers.0.shared_mlp.input_linear.weight")
        XCTAssertEqual(granite.layout.fileName("backbone.layers.1.norm.weight", root: "model."), "model.layers.0.post_attention_layernorm.weight")
        let rope = try MambaConfig.load(directory: Fixtures.model("tiny-granite-4.0-h-rope"))
        XCTAssertEqual((rope.mixer(layer: 0) as? AttentionMixer)?.rope, RotaryEmbedding(theta: 500, dims: 8))
    }

    /// Granite's experts stacked in one tensor per module, Jamba's one set of modules per expert;
    /// Jamba's attention and expert periods.
    func testMixtureOfExpertsConfigs() throws {
        let nemotron = try MambaConfig.load(directory: Fixtures.model("tiny-nemotron-h-moe"))
        XCTAssertEqual(nemotron.layerKinds.map(\.spec.name), ["mamba2", "moe", "attention", "moe"])
        let nmoe = try XCTUnwrap(nemotron.mixer(layer: 1) as? MoEMixer)
        XCTAssertEqual(nmoe.routing, .sigmoid(groups: 2, topKGroups: 1, normalize: true, scaling: 2.5))
        XCTAssertEqual([nmoe.experts, nmoe.topK, nmoe.width, nmoe.sharedWidth], [8, 2, 24, 20])
        let nw = try CheckpointWeights(directory: Fixtures.model("tiny-nemotron-h-moe"))
        XCTAssertEqual(nw.fileName("backbone.layers.1.mixer.router.correction_bias"), "backbone.layers.1.mixer.gate.e_score_correction_bias")
        XCTAssertEqual(nw.fileName("backbone.layers.1.mixer.shared_experts.down_proj.weight"), "backbone.layers.1.mixer.shared_experts.down_proj.weight")

        let granite = try MambaConfig.load(directory: Fixtures.model("tiny-granite-4.0-h-moe"))
        let moe = try XCTUnwrap(granite.mixer(layer: 1) as? MoEMixer)
        XCTAssertEqual([moe.experts, moe.topK, moe.width, moe.sharedWidth], [4, 2, 20, 24])
        XCTAssertEqual(moe.routing, .softmax(normalizeTopK: true))
        let w = try CheckpointWeights(directory: Fixtures.model("tiny-granite-4.0-h-moe"))
        XCTAssertEqual(w.fileName("backbone.layers.3.mixer.experts.2.input_linear.weight"), "model.layers.1.block_sparse_moe.input_linear.weight")
        XCTAssertEqual(w.fileName("backbone.layers.3.mixer.router.weight"), "model.layers.1.block_sparse_moe.router.layer.weight")
        XCTAssertEqual(w.fileName("backbone.layers.3.mixer.shared_mlp.output_linear.weight"), "model.layers.1.shared_mlp.output_linear.weight")
        // Expert 2's entry of the stacked [4, 40, 32] tensor, kept in BF16.
        let stacked = try w.store.view("model.layers.1.block_sparse_moe.input_linear.weight").tensor()
        let expert = try w.tensor("backbone.layers.3.mixer.experts.2.input_linear.weight")
        XCTAssertEqual(expert.shape, [40, 32])
        XCTAssertEqual(expert.storage, Array(stacked.storage[(2 * 40 * 32)..<(3 * 40 * 32)]))
        XCTAssertEqual(try w.halfMatrix("backbone.layers.3.mixer.experts.2.input_linear.weight")?.widened().storage, expert.storage)

        let jamba = try MambaConfig.load(directory: Fixtures.model("tiny-jamba"))
        XCTAssertEqual(jamba.layerKinds.map(\.spec.name), ["jamba_mamba", "swiglu_mlp", "jamba_mamba", "moe", "attention", "swiglu_mlp", "jamba_mamba", "moe"])
        let jmoe = try XCTUnwrap(jamba.mixer(layer: 3) as? MoEMixer)
        XCTAssertEqual([jmoe.experts, jmoe.topK, jmoe.width], [4, 2, 40])
        XCTAssertEqual(jmoe.routing, .softmax(normalizeTopK: false))
        XCTAssertNil((jamba.mixer(layer: 4) as? AttentionMixer)?.rope)
        XCTAssertEqual(jamba.timeStepRank, 4)
        XCTAssertEqual(jamba.layout.fileName("backbone.layers.3.mixer.experts.1.down_proj.weight", root: "model."), "model.layers.1.feed_forward.experts.1.down_proj.weight")
        let f16 = try MambaConfig.load(directory: Fixtures.model("tiny-jamba-f16"))
        XCTAssertEqual(f16.layerKinds.map(\.spec.name), ["attention", "moe", "jamba_mamba", "moe", "jamba_mamba", "moe"])
        XCTAssertEqual(f16.timeStepRank, 8)
        let auto = try MambaConfig.parse(Data(#"{"model_type": "jamba", "hidden_size": 40, "vocab_size": 40, "mamba_dt_rank": "auto"}"#.utf8), source: "c")
        XCTAssertEqual(auto.timeStepRank, 3)                         // ceil(40 / 16)
    }

    func testFalconH1Configs() throws {
        let c = try MambaConfig.load(directory: Fixtures.model("tiny-falcon-h1"))
        XCTAssertEqual(c.layerKinds.map(\.spec.name), ["mamba2|attention", "swiglu_mlp", "mamba2|attention", "swiglu_mlp", "mamba2|attention", "swiglu_mlp"])
        let parallel = try XCTUnwrap(c.mixer(layer: 0) as? ParallelMixer)
        XCTAssertEqual(c.innerSize, 48)                              // mamba_d_ssm, not expand x hidden
        XCTAssertFalse(parallel.mamba.gatedNorm)
        XCTAssertEqual(parallel.mamba.multipliers, Mamba2Multipliers(input: 1.2, parts: [0.9, 1.1, 0.8, 1.25, 0.5], output: 0.7))
        XCTAssertTrue(parallel.attention.multipliers == (0.8, 0.6, 1.3))
        XCTAssertEqual(parallel.attention.rope, RotaryEmbedding(theta: 1000, dims: 8))
        XCTAssertTrue((c.mixer(layer: 1) as? GatedMLPMixer)?.multipliers ?? (1, 1) == (1.4, 0.6))
        XCTAssertEqual([c.embeddingMultiplier, 1 / c.logitsScaling], [2.5, 0.75])
        XCTAssertEqual(c.layout.fileName("backbone.layers.2.mixer.mamba.in_proj.weight", root: "model."), "model.layers.1.mamba.in_proj.weight")
        XCTAssertEqual(c.layout.fileName("backbone.layers.2.mixer.self_attn.k_proj.weight", root: "model."), "model.layers.1.self_attn.k_proj.weight")
        XCTAssertEqual(c.kvCacheBytes(context: 10), Double(3 * 2 * 4 * 10 * 2 * 8))
        let hub = try MambaConfig.load(directory: Fixtures.model("tiny-falcon-h1-hub"))
        XCTAssertEqual(hub.innerSize, 48)                            // mamba_d_ssm null: expand x hidden
        XCTAssertTrue((hub.mixer(layer: 0) as? ParallelMixer)?.mamba.gatedNorm ?? false)
        let base = #""model_type": "falcon_h1", "hidden_size": 32, "vocab_size": 40, "num_hidden_layers": 2, "mamba_n_heads": 4, "mamba_d_ssm": 64, "num_attention_heads": 4, "num_key_value_heads": 2"#
        for (extra, key) in [(#""mamba_rms_norm": true"#, "mamba_norm_before_gate"), (#""ssm_multipliers": [1, 2]"#, "ssm_multipliers"),
                             (#""mlp_multipliers": [1, -1]"#, "mlp_multipliers"), (#""key_multiplier": 0"#, "key_multiplier"),
                             (#""mamba_d_head": 5"#, "mamba_d_head"), (#""rope_scaling": {"type": "linear"}"#, "rope_scaling")] {
            XCTAssertThrowsError(try MambaConfig.parse(Data("{\(base), \(extra)}".utf8), source: "c"), extra) { e in
                XCTAssertTrue("\(e)".contains(key) && !"\(e)".contains("\n"), "\(e)")
            }
        }
        XCTAssertNoThrow(try MambaConfig.parse(Data("{\(base)}".utf8), source: "c"))
    }

    /// The hybrid bench presets are the shapes the random-checkpoint script gives transformers:
    /// transformers' FalconH1ForCausalLM of that config has 521,411,104 parameters.
    func testHybridPresets() throws {
        let falcon = ModelPreset.falconH1_0_5b.config
        XCTAssertEqual(falcon.parameterCount, 521_411_104)
        XCTAssertEqual(falcon.numLayers, 72)
        XCTAssertEqual(ModelPreset.bamba600m.config.layerKinds.filter { $0.spec is AttentionMixer }.count, 4)
    }

    func testUnsupportedJambaSettingsAreRefusedByKey() throws {
        let base = #""model_type": "jamba", "hidden_size": 32, "vocab_size": 40, "num_hidden_layers": 4, "num_attention_heads": 8"#
        for (extra, key) in [(#""attn_layer_offset": 8"#, "attn_layer_offset"), (#""expert_layer_period": 0"#, "expert_layer_period"),
                             (#""num_experts": 2, "num_experts_per_tok": 3"#, "num_experts_per_tok"), (#""hidden_act": "gelu""#, "hidden_act"),
                             (#""sliding_window": 16"#, "sliding_window"), (#""num_key_value_heads": 3"#, "num_key_value_heads")] {
            XCTAssertThrowsError(try MambaConfig.parse(Data("{\(base), \(extra)}".utf8), source: "c"), extra) { e in
                XCTAssertTrue("\(e)".contains(key) && !"\(e)".contains("\n"), "\(e)")
            }
        }
        XCTAssertNoThrow(try MambaConfig.parse(Data("{\(base)}".utf8), source: "c"))
    }

    /// A Granite checkpoint whose stacked experts tensor has the wrong count is refused naming it.
    func testStackedExpertsShapeIsChecked() throws {
        let source = Fixtures.model("tiny-granite-4.0-h-moe")
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try String(contentsOfFile: source + "/config.json", encoding: .utf8)
        XCTAssertTrue(config.contains("\"num_local_experts\": 4"))
        try config.replacingOccurrences(of: "\"num_local_experts\": 4", with: "\"num_local_experts\": 5").write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: source + "/model.safetensors", toPath: dir + "/model.safetensors")
        XCTAssertThrowsError(try CheckpointWeights(directory: dir)) { e in
            XCTAssertTrue("\(e)".contains("model.layers.0.block_sparse_moe.router.layer.weight has shape [4, 32], expected [5, 32]"), "\(e)")
        }
    }

    func testUnsupportedBambaAndGraniteSettingsAreRefusedByKey() throws {
        let granite = #""model_type": "granitemoehybrid", "hidden_size": 32, "vocab_size": 40, "num_hidden_layers": 2, "mamba_n_heads": 4, "num_attention_heads": 4"#
        let bamba = #""model_type": "bamba", "hidden_size": 32, "vocab_size": 40, "num_hidden_layers": 2, "mamba_n_heads": 4, "num_attention_heads": 4, "num_key_value_heads": 2"#
        for (base, extra, key) in [(granite, #""num_local_experts": 8, "num_experts_per_tok": 9"#, "num_experts_per_tok"), (granite, #""position_embedding_type": "alibi""#, "position_embedding_type"),
                                   (granite, #""layer_types": ["mamba"]"#, "layer_types"), (granite, #""layer_types": ["mamba", "moe"]"#, "layer_types"),
                                   (granite, #""residual_multiplier": 0"#, "residual_multiplier"), (granite, #""hidden_act": "gelu""#, "hidden_act"),
                                   (bamba, #""attn_layer_indices": [2]"#, "attn_layer_indices"), (bamba, #""mamba_n_groups": 3"#, "mamba_n_groups"),
                                   (bamba, #""rope_parameters": {"rope_type": "yarn", "rope_theta": 10000}"#, "rope_type"),
                                   (bamba, #""rope_scaling": {"type": "linear"}"#, "rope_scaling"), (bamba, #""mamba_d_head": 5"#, "mamba_d_head"),
                                   (bamba, #""rope_theta": 10000, "partial_rotary_factor": 0.01"#, "partial_rotary_factor")] {
            XCTAssertThrowsError(try MambaConfig.parse(Data("{\(base), \(extra)}".utf8), source: "c"), extra) { e in
                XCTAssertTrue("\(e)".contains(key) && !"\(e)".contains("\n"), "\(e)")
            }
        }
        XCTAssertNoThrow(try MambaConfig.parse(Data("{\(granite)}".utf8), source: "c"))
        XCTAssertNoThrow(try MambaConfig.parse(Data("{\(bamba)}".utf8), source: "c"))
    }

    func testUnsupportedHybridsAreRefusedByKey() throws {
        let base = #""model_type": "nemotron_h", "hidden_size": 32, "vocab_size": 40"#
        for (extra, key) in [(#""hybrid_override_pattern": "M*E-", "moe_latent_size": 16"#, "moe_latent_size"),
                             (#""layers_block_type": ["mamba", "moe"], "n_routed_experts": 6, "n_group": 4"#, "n_group"),
                             (#""layers_block_type": ["mamba", "moe"], "n_routed_experts": 8, "n_group": 2, "topk_group": 1, "num_experts_per_tok": 5"#, "num_experts_per_tok"),
                             (#""layers_block_type": ["mamba", "moe"], "mlp_bias": true"#, "mlp_bias"),
                             (#""hybrid_override_pattern": "M*-", "mlp_hidden_act": "gelu""#, "mlp_hidden_act"),
                             (#""hybrid_override_pattern": "M*-", "num_attention_heads": 4, "num_key_value_heads": 3"#, "num_key_value_heads"),
                             (#""hybrid_override_pattern": "MX""#, "hybrid_override_pattern"), ("\"hidden_size_x\": 1", "hybrid_override_pattern")] {
            XCTAssertThrowsError(try MambaConfig.parse(Data("{\(base), \(extra)}".utf8), source: "c"), extra) { e in
                XCTAssertTrue("\(e)".contains(key) && !"\(e)".contains("\n"), "\(e)")
            }
        }
    }
}

extension HybridModelTests {
    /// A generation reserves its whole context in the KV caches (no reallocation while decoding)
    /// and refuses one whose caches cannot fit, in one line, before running anything.
    func testKVCacheIsSizedUpFront() throws {
        let lm = try MambaLM.load(directory: Fixtures.model("tiny-bamba"))
        let attention = lm.config.layerKinds.compactMap { $0.spec as? AttentionMixer }
        XCTAssertEqual(lm.config.kvCacheBytes(context: 10), Double(attention.count * 2 * 4 * 10 * 2 * 8))
        var state = lm.makeState()
        state.reserve(context: 50)
        _ = try lm.forward([1, 2, 3], state: &state, logits: .last)
        let kv = try XCTUnwrap(state.layers.compactMap { $0 as? KVCache }.first)
        XCTAssertGreaterThanOrEqual(kv.keys.capacity, 50 * 16)
        var sampler = Sampler()
        XCTAssertThrowsError(try Generation(model: lm, parallelism: .serial).run(prompt: [1], maxNewTokens: Int.max, sampler: &sampler, stop: nil) { _ in }) { e in
            XCTAssertTrue("\(e)".contains("KV caches") && !"\(e)".contains("\n"), "\(e)")
        }
    }
}
