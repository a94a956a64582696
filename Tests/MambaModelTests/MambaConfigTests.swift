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
            (#"{"model_type": "mamba2", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4}"#, "num_heads ? x head_dim 64"),
            (#"{"model_type": "mamba2", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4, "num_heads": 3, "head_dim": 5}"#, "num_heads 3 x head_dim 5 is not expand x hidden_size = 16"),
            (#"{"model_type": "mamba2", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4, "num_heads": 4, "n_groups": 3}"#, "n_groups 3 does not divide num_heads 4"),
            (#"{"model_type": "mamba2", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4, "num_heads": 4, "n_groups": 1, "time_step_limit": [1, 0]}"#, "time_step_limit"),
            (#"{"model_type": "mamba2", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4, "num_heads": 4, "n_groups": 1, "hidden_act": "gelu"}"#, "hidden_act gelu"),
            (#"{"d_model": 8, "n_layer": 1, "vocab_size": 4, "ssm_cfg": {"layer": "Mamba2", "headdim": 4, "norm_before_gate": true}}"#, "norm_before_gate"),
            (#"{"d_model": 8, "n_layer": 1, "vocab_size": 4, "ssm_cfg": {"layer": "Mamba2", "headdim": 4, "d_ssm": 8}}"#, "d_ssm 8"),
            (#"{"model_type": "llama"}"#, "llama"),
            (#"{"hidden_size": 100000000000000, "num_hidden_layers": 1, "vocab_size": 4, "expand": 2}"#, "hidden_size 100000000000000 is beyond"),
            (#"{"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4, "expand": 99999999999999}"#, "expand 99999999999999 is beyond"),
            (#"{"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 4, "layer_norm_epsilon": -1e-5}"#, "layer_norm_epsilon must be in (0, 1)"),
            (#"{"hidden_size": 8.5, "num_hidden_layers": 1, "vocab_size": 4}"#, "hidden_size must be an integer"),
            (#"{"model_type": "nemotron_h", "hidden_size": 8}"#, "lacks hybrid_override_pattern / layers_block_type"),
            (#"{"model_type": "zamba"}"#, "zamba is a hybrid of Mamba and attention layers not supported yet"),
            (#"{"model_type": "zamba2"}"#, "zamba2 is a hybrid"),
            (#"{"hidden_size": 8, "vocab_size": 4}"#, "num_hidden_layers"),
            (#"{"hidden_size": "big", "num_hidden_layers": 1, "vocab_size": 4}"#, "hidden_size"),
            (#"{"d_model": 8, "n_layer": 1, "vocab_size": 4, "ssm_cfg": {"layer": "Mamba3"}}"#, "Mamba3"),
            ("[1, 2]", "JSON object"),
        ]
        for (json, needle) in cases {
            XCTAssertThrowsError(try parse(json), json) { XCTAssertTrue("\($0)".contains(needle), "\($0) lacks \(needle)") }
        }
    }

    /// mamba_ssm's layout (ssm_cfg) and transformers' defaults: heads from head_dim and E, groups 1
    /// (mamba_ssm) or 8 (transformers), state 128, untied only in transformers' layout.
    func testMamba2Defaults() throws {
        let original = try parse(#"{"d_model": 64, "n_layer": 2, "vocab_size": 50, "ssm_cfg": {"layer": "Mamba2", "headdim": 32, "dt_limit": [0.0, 2.0]}}"#)
        let m = try XCTUnwrap(original.mixer(layer: 0) as? Mamba2Mixer)
        XCTAssertEqual([m.heads, m.headDim, m.groups, original.stateSize], [4, 32, 1, 128])
        XCTAssertEqual(m.timeStepMax, 2)
        XCTAssertTrue(original.tieWordEmbeddings)
        XCTAssertEqual(original.defaultedSettings.count, 1, "\(original.defaultedSettings)")   // ngroups
        let hf = try parse(#"{"model_type": "mamba2", "hidden_size": 512, "num_hidden_layers": 1, "vocab_size": 4}"#)
        let h = try XCTUnwrap(hf.mixer(layer: 0) as? Mamba2Mixer)
        XCTAssertEqual([h.heads, h.headDim, h.groups], [16, 64, 8])
        XCTAssertFalse(hf.tieWordEmbeddings)
        XCTAssertEqual(hf.defaultedSettings.count, 2, "\(hf.defaultedSettings)")
        // A written config reads back to the same mixer, an infinite limit included.
        var json = hf.hfJSON()
        json["tie_word_embeddings"] = .bool(true)
        let again = try MambaConfig.parse(try JSONValue.object(json).prettyData(), source: "x")
        XCTAssertEqual(again.layerKinds, hf.layerKinds)
        XCTAssertEqual((again.mixer(layer: 0) as? Mamba2Mixer)?.timeStepMax, .infinity)
    }
}

/// Configs the fuzzer found accepted or crashing (issue "trust, round three"): each is refused in
/// one line that names the key.
final class MambaConfigFuzzFindingsTests: XCTestCase {
    func parse(_ json: String) throws -> MambaConfig { try MambaConfig.parse(Data(json.utf8), source: "config.json") }

    func testRefusedByKey() {
        let base2 = #""model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 40"#
        let mamba2 = base2 + #", "n_groups": 1"#
        let falcon = #""model_type": "falcon_mamba", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 40"#
        let cases: [(String, String)] = [
            // num_heads x head_dim overflowed Int (a trap in every command, inspect included).
            ("{\(mamba2), \"num_heads\": 4611686018427387904, \"head_dim\": 4}", "num_heads"),
            ("{\(mamba2), \"num_heads\": 2, \"head_dim\": 9223372036854775807}", "head_dim"),
            ("{\(base2), \"n_groups\": 9223372036854775807, \"head_dim\": 64}", "n_groups"),
            // A clamp whose minimum is infinite in float32 gave NaN states and a NaN perplexity.
            ("{\(mamba2), \"time_step_limit\": [Infinity, Infinity]}", "time_step_limit"),
            ("{\(mamba2), \"time_step_limit\": [1e39, 1e39]}", "time_step_limit"),
            ("{\(mamba2), \"ssm_cfg\": {\"dt_limit\": [Infinity, 1]}}", "time_step_limit"),
            // NaN and Infinity were replaced by the default; -1 was refused.
            ("{\(falcon), \"mixer_rms_eps\": NaN}", "mixer_rms_eps"),
            ("{\(falcon), \"mixer_rms_eps\": Infinity}", "mixer_rms_eps"),
            ("{\(falcon), \"mixer_rms_eps\": \"small\"}", "mixer_rms_eps"),
            ("{\(falcon), \"layer_norm_epsilon\": NaN}", "layer_norm_epsilon"),
        ]
        for (json, key) in cases {
            XCTAssertThrowsError(try parse(json), json) { e in
                XCTAssertTrue("\(e)".contains(key) && !"\(e)".contains("\n"), "\(e)")
            }
        }
        // The default clamp (0, +inf) and an infinite maximum stay accepted.
        XCTAssertNoThrow(try parse("{\(mamba2), \"time_step_limit\": [0.001, Infinity]}"))
        XCTAssertNoThrow(try parse("{\(falcon), \"mixer_rms_eps\": null}"))
    }
}
