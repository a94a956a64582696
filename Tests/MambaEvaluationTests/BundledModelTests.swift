import Foundation
import MambaEvaluation
import TestSupport
import XCTest

/// The bundled models (models/bard-mamba, models/bard-mamba2, models/bard-hybrid) through the tool's
/// float forward against transformers' MambaForCausalLM, Mamba2ForCausalLM and NemotronHForCausalLM
/// (scripts/reference/bundled_model_reference.py): the logits of the first window, and bits per
/// byte over 4 windows of the validation text by the evaluation protocol.
/// The training script's full validation figure (2.0553) is reproduced by
/// `mambaquant evaluate --data calibration/shakespeare-valid.txt --seq-len 256` (closing note of
/// issue 3); this test checks a prefix that a debug build scores in seconds.
final class BundledModelTests: XCTestCase {
    func testMatchesTransformersOnTheValidationText() throws {
        for name in ["bard-mamba", "bard-mamba2", "bard-hybrid"] { try check(name) }
    }

    func check(_ name: String) throws {
        let modelDir = Fixtures.packageRoot + "/models/" + name
        let reference = try SafeTensorsFile(path: Fixtures.root + "/bundled/\(name)-reference.safetensors")
        let seqLength = Int(reference.metadata["seq_len"]!)!, windows = Int(reference.metadata["windows"]!)!
        let expectedBPB = try reference.view("bits_per_byte").doubles()[0]
        let weights = try MambaWeights.load(directory: modelDir)
        let tokenizer = try Tokenizer(contentsOf: modelDir + "/tokenizer.json")
        let model = MambaLM(weights: weights)

        let text = try Data(contentsOf: URL(fileURLWithPath: Fixtures.packageRoot + "/calibration/shakespeare-valid.txt"))
        let ids = tokenizer.encode(String(decoding: text.prefix(seqLength * windows), as: UTF8.self))
        XCTAssertEqual(ids, text.prefix(seqLength * windows).map(Int.init), "byte-level: token id = byte")

        let expectedLogits = try reference.view("logits").tensor()
        let prefix = try reference.view("input_ids").integers()
        XCTAssertEqual(prefix, Array(ids.prefix(prefix.count)))
        let logits = try model.logits(prefix)
        let err = maxAbsDifference(logits.storage, expectedLogits.storage)
        XCTAssertLessThanOrEqual(err, 1e-4 * expectedLogits.absMax, "\(name): max |logit diff| \(err) of \(expectedLogits.absMax)")

        let score = try evaluateLikelihood(model, files: [ids], seqLength: seqLength, tokenBytes: tokenizer.byteCount, parallelism: .serial)
        XCTAssertEqual(score.windows, windows)
        XCTAssertEqual(score.tokens, Int(reference.metadata["scored"]!)!)
        XCTAssertEqual(score.bitsPerByte, expectedBPB, accuracy: 1e-5, name)
    }
}
