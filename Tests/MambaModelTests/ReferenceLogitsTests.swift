import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// The float forward against transformers' MambaForCausalLM: Tests/Fixtures/models/*/reference.safetensors
/// were written by scripts/reference/make_fixtures.py (tied/untied heads, conv_kernel 4 and 3,
/// state_size 16 and 8, explicit and "auto" dt rank, biases, F32/F16/BF16, a sharded state-spaces layout).
final class ReferenceLogitsTests: XCTestCase {
    static let models = ["tiny-tied", "tiny-untied-k3", "tiny-statespaces"]

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
}
