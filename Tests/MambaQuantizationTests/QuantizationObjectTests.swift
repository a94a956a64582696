import Foundation
import MambaQuantization
import TestSupport
import XCTest

/// config.json's "quantization" object is written and read by one Codable type: every recipe
/// survives the round trip, the committed checkpoints' objects re-encode to what they hold, and a
/// bad value is refused by key.
final class QuantizationObjectTests: XCTestCase {
    let provenance = QuantizationProvenance(sourceSHA256: "ab", statsSHA256: "cd")

    func roundTrip(_ o: QuantizationObject) throws -> QuantizationObject {
        try QuantizationObject(json: try o.json, source: "test")
    }

    func testEveryRecipeSurvivesTheRoundTrip() throws {
        var recipes: [QuantizationRecipe] = []
        for method in QuantizationMethod.allCases {
            for bits in [BitWidths(weight: 8, activation: 8), BitWidths(weight: 4, activation: 6)] {
                for activations in [ActivationScaling.calibrated, .perToken, .perTokenBlocks(64)] {
                    var r = QuantizationRecipe(method: method, bits: bits, groupSize: bits.weight == 4 ? 32 : nil, activations: activations,
                                               clip: .p99_9, seed: 7, keepFloat: ["lm_head", "x_proj", "ssm_inputs.dt"], alpha: 0.75)
                    r.scanScales = activations == .calibrated ? .group : .tensor
                    r.profile = method == .rtn ? nil : .accurate
                    if bits.weight == 4 { r.gptq = .init(dampening: 0.05, blockSize: 64, actOrder: false) }
                    recipes.append(r)
                    r.moduleWeightBits = ["lm_head": 8, "backbone.layers.1.mixer.out_proj": bits.weight == 4 ? 8 : 4]
                    recipes.append(r)
                }
            }
        }
        for r in recipes {
            for (headInput, half, tied) in [(false, false, false), (false, true, false), (true, true, true), (true, false, true), (true, true, false)] {
                let o = QuantizationObject(recipe: r, transforms: [.init(step: "R1", layer: nil, detail: "d"), .init(step: "rotate", layer: 1, detail: "e")],
                                           provenance: provenance, headInput: headInput, halfTensors: half, tiedHead: tied)
                XCTAssertEqual(try roundTrip(o), o, r.tag)
                XCTAssertEqual(o.formatVersion, half || !r.moduleWeightBits.isEmpty ? 4 : headInput ? 3 : r.bits.weight == 4 ? 2 : 1)
                XCTAssertEqual(o.transforms, ["R1: d", "layer 1: rotate: e"])
            }
        }
    }

    /// The committed checkpoints' objects decode and encode back to the same values: the newest
    /// one key for key; the w8a8 one, written before weight_rounding, gptq, profile and the
    /// activation_block/scan_scales keys, gains those keys with the values it was read as.
    func testCommittedObjectsReencodeUnchanged() throws {
        for (name, newest) in [("tiny-tied-mambaquant-w8a8", false), ("tiny-tied-mambaquant-w4a8-g8", true)] {
            let config = try MambaConfig.load(directory: Fixtures.root + "/quantized/" + name)
            let json = try XCTUnwrap(config.json["quantization"]?.object)
            let o = try QuantizationObject(json: .object(json), source: name)
            let again = try XCTUnwrap(try o.json.object)
            if newest {
                XCTAssertEqual(again, json, name)
            } else {
                for (key, value) in json { XCTAssertEqual(again[key], value, "\(name): \(key)") }
                XCTAssertEqual(Set(again.keys).subtracting(json.keys), ["weight_rounding", "gptq", "profile", "activation_block", "scan_scales", "tied_head"])
                XCTAssertEqual(try QuantizationObject(json: .object(again), source: name), o)
            }
        }
    }

    /// Absent keys take what older checkpoints were made with; unknown words are refused by key.
    func testDefaultsAndRefusals() throws {
        let minimal: JSONValue = .object(["format_version": .number(1), "method": .string("rtn"), "weight_bits": .number(8), "activation_bits": .number(8),
                                          "source_sha256": .string("a"), "stats_sha256": .string("b")])
        let o = try QuantizationObject(json: minimal, source: "c")
        XCTAssertEqual(o.recipe.weightRounding, .rtn)
        XCTAssertEqual(o.recipe.clip, .max)
        XCTAssertEqual(o.recipe.activations, .calibrated)
        XCTAssertEqual(o.recipe.scanScales, .tensor)
        XCTAssertNil(o.recipe.profile)
        let bad: [(String, JSONValue, String)] = [
            ("profile", .string("precise"), "profile"), ("act_clip", .string("p50"), "act_clip"), ("scan_scales", .string("head"), "scan_scales"),
            ("activation_scale", .string("blocks"), "blocks"), ("format_version", .number(9), "format 9"), ("method", .string("gptq"), "method"),
            ("seed", .number(1.5), "seed 1.5"), ("kept_float", .string("x_proj"), "kept_float"), ("source_sha256", .null, "source_sha256"),
        ]
        for (key, value, needle) in bad {
            var object = minimal.object!
            object[key] = value
            XCTAssertThrowsError(try QuantizationObject(json: .object(object), source: "c/config.json"), key) { e in
                XCTAssertTrue("\(e)".contains(needle) && "\(e)".hasPrefix("c/config.json: "), "\(e)")
                XCTAssertFalse("\(e)".contains("\n"), "\(e)")
            }
        }
        var widths = minimal.object!
        widths["module_weight_bits"] = .object(["lm_head": .number(8)])
        XCTAssertThrowsError(try QuantizationObject(json: .object(widths), source: "c")) { e in XCTAssertTrue("\(e)".contains("need format 4"), "\(e)") }
        widths["format_version"] = .number(4)
        XCTAssertEqual(try QuantizationObject(json: .object(widths), source: "c").recipe.moduleWeightBits, ["lm_head": 8])
        widths["module_weight_bits"] = .object(["lm_head": .number(6)])
        XCTAssertThrowsError(try QuantizationObject(json: .object(widths), source: "c")) { e in XCTAssertTrue("\(e)".contains("lm_head 6 bits"), "\(e)") }
        var gptq = minimal.object!
        gptq["weight_rounding"] = .string("gptq")
        gptq["gptq"] = .object(["dampening": .number(2)])
        XCTAssertThrowsError(try QuantizationObject(json: .object(gptq), source: "c")) { e in XCTAssertTrue("\(e)".contains("dampening 2"), "\(e)") }
    }
}
