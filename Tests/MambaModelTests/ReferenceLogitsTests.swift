import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// The float forward against transformers' MambaForCausalLM and FalconMambaForCausalLM:
/// Tests/Fixtures/models/*/reference.safetensors were written by scripts/reference/make_fixtures.py
/// (tied/untied heads, conv_kernel 4 and 3, state_size 16 and 8, explicit and "auto" dt rank,
/// biases, F32/F16/BF16, a sharded state-spaces layout, Falcon-Mamba with and without mixer_rms_eps)
/// and Mamba2ForCausalLM (n_groups 1 and 2, head_dim 8 and 12, prompts spanning several chunks,
/// a finite time_step_limit, time_step_limit's infinity tagged and bare).
final class ReferenceLogitsTests: XCTestCase {
    static let models = ["tiny-tied", "tiny-untied-k3", "tiny-statespaces", "tiny-falcon", "tiny-falcon-untied-bf16",
                         "tiny-mamba2", "tiny-mamba2-g2-untied", "tiny-mamba2-bf16"]

    struct Reference {
        let inputIds: [Int]
        let logits: Tensor
        let greedyPrompt: [Int]
        let greedyIds: [Int]
    }

    func reference(_ name: String) throws -> Reference {
        let f = try SafeTensorsFile(path: Fixtures.model(name) + "/reference.safetensors")
        return Reference(
            inputIds: try f.view("input_ids").integers(), logits: try f.view("logits").tensor(),
            greedyPrompt: try f.view("greedy_prompt").integers(), greedyIds: try f.view("greedy_ids").integers())
    }

    func testLogitsMatchTransformers() throws {
        for name in Self.models {
            let lm = try MambaLM.load(directory: Fixtures.model(name))
            let ref = try reference(name)
            let ours = try lm.logits(ref.inputIds)
            XCTAssertEqual(ours.shape, ref.logits.shape, name)
            let err = maxAbsDifference(ours.storage, ref.logits.storage)
            XCTAssertLessThanOrEqual(err, 1e-4 * ref.logits.absMax, "\(name): max |Δlogit| \(err) of max |logit| \(ref.logits.absMax)")
        }
    }

    func testTokenByTokenDecodeMatchesTransformers() throws {
        for name in Self.models {
            let lm = try MambaLM.load(directory: Fixtures.model(name))
            let ref = try reference(name)
            var state = lm.makeState()
            var rows: [Float] = []
            for t in ref.inputIds { rows += try lm.forward([t], state: &state).storage }
            XCTAssertLessThanOrEqual(maxAbsDifference(rows, ref.logits.storage), 1e-4 * ref.logits.absMax, name)
        }
    }

    func testGreedyGenerationMatchesTransformers() throws {
        for name in Self.models {
            let lm = try MambaLM.load(directory: Fixtures.model(name))
            let ref = try reference(name)
            var sampler = Sampler()
            var produced: [Int] = []
            try Generation(model: lm, parallelism: Parallelism(threads: 2))
                .run(prompt: ref.greedyPrompt, maxNewTokens: ref.greedyIds.count, sampler: &sampler, stop: nil) { produced.append($0) }
            XCTAssertEqual(produced, ref.greedyIds, name)
        }
    }

    func testStateSpacesConfigIsReadWithPaddedVocab() throws {
        let c = try MambaConfig.load(directory: Fixtures.model("tiny-statespaces"))
        XCTAssertEqual(c.vocabSize, 56)   // 50 padded to a multiple of 8, as MambaLMHeadModel does
        XCTAssertEqual(c.hiddenSize, 16)
        XCTAssertEqual(c.timeStepRank, 1) // "auto": ceil(16 / 16)
    }

    func testFalconMambaConfigsPickTheNormedMixer() throws {
        let withEps = try MambaConfig.load(directory: Fixtures.model("tiny-falcon"))
        XCTAssertEqual(withEps.layerKinds, Array(repeating: .falconMamba(ssmNormEpsilon: 1e-6), count: withEps.numLayers))
        XCTAssertTrue(withEps.defaultedSettings.isEmpty)
        let without = try MambaConfig.load(directory: Fixtures.model("tiny-falcon-untied-bf16"))
        XCTAssertEqual(without.distinctKinds, [.falconMamba(ssmNormEpsilon: 1e-6)])
        XCTAssertEqual(without.defaultedSettings.count, 1)
        XCTAssertTrue(without.defaultedSettings[0].contains("mixer_rms_eps"))
        XCTAssertNotEqual(without.distinctKinds, [.mamba1])
        XCTAssertEqual(try MambaConfig.load(directory: Fixtures.model("tiny-tied")).distinctKinds, [.mamba1])
    }

    /// The norms matter: the same weights run as plain Mamba-1 give other logits.
    func testFalconNormsChangeTheForward() throws {
        var w = try MambaWeights.load(directory: Fixtures.model("tiny-falcon"))
        let ref = try reference("tiny-falcon")
        w.config.setAllLayers(.mamba1)
        for i in w.layers.indices { w.layers[i].mixer.kind = .mamba1 }
        let plain = try MambaLM(weights: w).logits(ref.inputIds)
        XCTAssertGreaterThan(maxAbsDifference(plain.storage, ref.logits.storage), 0.01 * ref.logits.absMax)
    }

    /// transformers' own decode: a cached prefill of `decode_prefix` tokens, then one step per
    /// token. On tiny-mamba2-g2-untied the fixture's steps clamp dt as its prefill does
    /// (transformers' step does not; see Mamba2Mixer.swift).
    func testMamba2CachedDecodeMatchesTransformers() throws {
        for name in ["tiny-mamba2", "tiny-mamba2-g2-untied", "tiny-mamba2-bf16"] {
            let lm = try MambaLM.load(directory: Fixtures.model(name))
            let f = try SafeTensorsFile(path: Fixtures.model(name) + "/reference.safetensors")
            let ids = try f.view("input_ids").integers()
            let prefix = try f.view("decode_prefix").integers()[0]
            let expected = try f.view("decode_logits").tensor()
            var state = lm.makeState()
            _ = try lm.forward(Array(ids[..<prefix]), state: &state, logits: .none)
            var rows: [Float] = []
            for t in ids[prefix...] { rows += try lm.forward([t], state: &state).storage }
            XCTAssertEqual(rows.count, expected.count, name)
            XCTAssertLessThanOrEqual(maxAbsDifference(rows, expected.storage), 1e-4 * expected.absMax, name)
        }
    }

    func testMamba2ConfigsAreRead() throws {
        let a = try MambaConfig.load(directory: Fixtures.model("tiny-mamba2"))
        let m = try XCTUnwrap(a.mixer(layer: 0) as? Mamba2Mixer)
        XCTAssertEqual([m.heads, m.headDim, m.groups, m.chunkSize], [8, 8, 1, 8])
        XCTAssertEqual(m.timeStepMax, .infinity)               // {"__float__": "Infinity"}
        XCTAssertTrue(a.tieWordEmbeddings)
        let bare = try XCTUnwrap(try MambaConfig.load(directory: Fixtures.model("tiny-mamba2-bf16")).mixer(layer: 0) as? Mamba2Mixer)
        XCTAssertEqual(bare.timeStepMax, .infinity)            // a bare Infinity (not JSON, but what older writers wrote)
        let limited = try XCTUnwrap(try MambaConfig.load(directory: Fixtures.model("tiny-mamba2-g2-untied")).mixer(layer: 0) as? Mamba2Mixer)
        XCTAssertEqual([limited.timeStepMin, limited.timeStepMax], [0.02, 0.3])
        XCTAssertEqual(limited.groups, 2)
    }
}
