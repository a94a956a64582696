import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// The float forward against transformers' MambaForCausalLM and FalconMambaForCausalLM:
/// Tests/Fixtures/models/*/reference.safetensors were written by scripts/reference/make_fixtures.py
/// (tied/untied heads, conv_kernel 4 and 3, state_size 16 and 8, explicit and "auto" dt rank,
/// biases, F32/F16/BF16, a sharded state-spaces layout, Falcon-Mamba with and without mixer_rms_eps).
final class ReferenceLogitsTests: XCTestCase {
    static let models = ["tiny-tied", "tiny-untied-k3", "tiny-statespaces", "tiny-falcon", "tiny-falcon-untied-bf16"]

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
        XCTAssertEqual(withEps.mixer, .falconMamba(ssmNormEpsilon: 1e-6))
        XCTAssertTrue(withEps.defaultedSettings.isEmpty)
        let without = try MambaConfig.load(directory: Fixtures.model("tiny-falcon-untied-bf16"))
        XCTAssertEqual(without.mixer, .falconMamba(ssmNormEpsilon: 1e-6))
        XCTAssertEqual(without.defaultedSettings.count, 1)
        XCTAssertTrue(without.defaultedSettings[0].contains("mixer_rms_eps"))
        XCTAssertNotEqual(without.mixer, .mamba1)
        XCTAssertEqual(try MambaConfig.load(directory: Fixtures.model("tiny-tied")).mixer, .mamba1)
    }

    /// The norms matter: the same weights run as plain Mamba-1 give other logits.
    func testFalconNormsChangeTheForward() throws {
        var w = try MambaWeights.load(directory: Fixtures.model("tiny-falcon"))
        let ref = try reference("tiny-falcon")
        w.config.mixer = .mamba1
        for i in w.layers.indices { w.layers[i].mixer.kind = .mamba1 }
        let plain = try MambaLM(weights: w).logits(ref.inputIds)
        XCTAssertGreaterThan(maxAbsDifference(plain.storage, ref.logits.storage), 0.01 * ref.logits.absMax)
    }
}
