import Foundation
@testable import MambaModel
import MambaTensors
import XCTest

final class MambaConfigTests: XCTestCase {
    func parse(_ json: String) throws -> MambaConfig { try MambaConfig.parse(Data(json.utf8), source: "config.json") }

    func testHuggingFaceKeys() throws {
        let c = try parse("""
            {"model_type": "mamba", "hidden_size": 768, "num_hidden_layers": 24, "state_size": 16, "expand": 2,
             "conv_kernel": 4, "time_step_rank": 48, "vocab_size": 50280, "layer_norm_epsilon": 1e-5,
             "use_bias": false, "use_conv_bias": true, "tie_word_embeddings": true, "intermediate_size": 1536}
            """)
        XCTAssertEqual([c.hiddenSize, c.numLayers, c.innerSize, c.stateSize, c.timeStepRank, c.convKernel, c.vocabSize], [768, 24, 1536, 16, 48, 4, 50280])
        XCTAssertTrue(c.tieWordEmbeddings && c.useConvBias && !c.useBias)
    }

    func testStateSpacesKeysAutoRankAndVocabPadding() throws {
        let c = try parse("""
            {"d_model": 100, "n_layer": 3, "vocab_size": 50277, "pad_vocab_size_multiple": 8,
             "ssm_cfg": {"d_state": 8, "d_conv": 3, "expand": 2}, "rms_norm": true, "tie_embeddings": false}
            """)
        XCTAssertEqual(c.hiddenSize, 100)
        XCTAssertEqual(c.numLayers, 3)
        XCTAssertEqual(c.stateSize, 8)
        XCTAssertEqual(c.convKernel, 3)
        XCTAssertEqual(c.timeStepRank, 7)      // ceil(100 / 16)
        XCTAssertEqual(c.vocabSize, 50280)
        XCTAssertFalse(c.tieWordEmbeddings)
        XCTAssertEqual(try parse(#"{"hidden_size": 32, "num_hidden_layers": 1, "vocab_size": 10, "time_step_rank": "auto"}"#).timeStepRank, 2)
    }

    func testRefusals() {
        let cases: [(String, String)] = [
            (#"{"model_type": "falcon_mamba", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4, "mixer_rms_eps": -1}"#, "mixer_rms_eps"),
            (#"{"model_type": "mamba2", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4}"#, "mamba2"),
            (#"{"model_type": "llama"}"#, "llama"),
            (#"{"hidden_size": 8, "vocab_size": 4}"#, "num_hidden_layers"),
            (#"{"hidden_size": "big", "num_hidden_layers": 1, "vocab_size": 4}"#, "hidden_size"),
            (#"{"d_model": 8, "n_layer": 1, "vocab_size": 4, "ssm_cfg": {"layer": "Mamba2"}}"#, "Mamba2"),
            ("[1, 2]", "JSON object"),
        ]
        for (json, needle) in cases {
            XCTAssertThrowsError(try parse(json), json) { XCTAssertTrue("\($0)".contains(needle), "\($0) lacks \(needle)") }
        }
    }
}
