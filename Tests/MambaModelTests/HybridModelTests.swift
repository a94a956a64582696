import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// Nemotron-H (Mamba-2, grouped-query attention and relu2 MLP layers, one kind per layer) against
/// transformers' NemotronHForCausalLM: Tests/Fixtures/models/tiny-nemotron-h* were written by
/// scripts/reference/make_hybrid_fixtures.py, one in transformers 5's spelling ("model." tensors,
/// layers_block_type) and one in the hub's ("backbone." tensors, hybrid_override_pattern, the older
/// key names, biases everywhere, a tied head, one key/value head).
final class HybridModelTests: XCTestCase {
    static let models = ["tiny-nemotron-h", "tiny-nemotron-h-hub"]

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
            XCTAssertEqual((state.layers[1] as? KVCache)?.count ?? (state.layers[2] as? KVCache)?.count, ref.ids.count, name)
            var sampler = Sampler()
            var produced: [Int] = []
            try Generation(model: lm, parallelism: Parallelism(threads: 2))
                .run(prompt: ref.greedyPrompt, maxNewTokens: ref.greedyIds.count, sampler: &sampler, stop: nil) { produced.append($0) }
            XCTAssertEqual(produced, ref.greedyIds, name)
        }
    }

    func testUnsupportedHybridsAreRefusedByKey() throws {
        let base = #""model_type": "nemotron_h", "hidden_size": 32, "vocab_size": 40"#
        for (extra, key) in [(#""hybrid_override_pattern": "M*E-""#, "hybrid_override_pattern"), (#""layers_block_type": ["mamba", "moe"]"#, "moe"),
                             (#""hybrid_override_pattern": "M*-", "mlp_hidden_act": "gelu""#, "mlp_hidden_act"),
                             (#""hybrid_override_pattern": "M*-", "num_attention_heads": 4, "num_key_value_heads": 3"#, "num_key_value_heads"),
                             (#""hybrid_override_pattern": "MX""#, "hybrid_override_pattern"), ("\"hidden_size_x\": 1", "hybrid_override_pattern")] {
            XCTAssertThrowsError(try MambaConfig.parse(Data("{\(base), \(extra)}".utf8), source: "c"), extra) { e in
                XCTAssertTrue("\(e)".contains(key) && !"\(e)".contains("\n"), "\(e)")
            }
        }
    }
}
