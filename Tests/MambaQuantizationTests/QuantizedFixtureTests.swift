import Foundation
import MambaModel
import MambaQuantization
import TestSupport
import XCTest

/// The committed quantized checkpoints (Tests/Fixtures/quantized, made by
/// scripts/fixtures/make_quantized_fixture.sh) in format version 1 (w8a8, an untied int8 head) and
/// 3 (w4a8 in groups of 8 by GPTQ, one tied table): they load, both runtimes give their committed
/// logits, and writing them again gives the same tensor file byte for byte but for the header's
/// padding, a page since the writer inserts headers in place (FORMAT.md cannot drift from the code
/// unnoticed).
final class QuantizedFixtureTests: XCTestCase {
    let directory = Fixtures.root + "/quantized/tiny-tied-mambaquant-w8a8"
    let format3 = Fixtures.root + "/quantized/tiny-tied-mambaquant-w4a8-g8"
    /// Format 3 at 8 bits from the tied source, x_proj and lm_head kept float (tied_head false).
    let keepFloat = Fixtures.root + "/quantized/tiny-tied-mambaquant-w8a8-keepfloat"
    /// Mamba-2 with dynamic scales and a state-spaces source (FormatFixtureWriter).
    let written = ["tiny-mamba2-mambaquant-w8a8-dynamic", "tiny-statespaces-mambaquant-w8a8"].map { Fixtures.root + "/quantized/" + $0 }
    let tokens = [5, 17, 200, 3, 99, 42, 7, 130, 64, 250, 1, 18]

    func testFormat3LoadsWithItsRecipe() throws {
        let q = try QuantizedModel.load(directory: format3)
        XCTAssertEqual(q.recipe.bits, BitWidths(weight: 4, activation: 8))
        XCTAssertEqual(q.recipe.groupSize, 8)
        XCTAssertEqual(q.recipe.weightRounding, .gptq)
        XCTAssertTrue(q.tiedHead)
        XCTAssertEqual(q.embedding.bits, 4)
        XCTAssertEqual(q.headInput?.shape, [32, 32])
    }

    func testLoadsWithItsRecipe() throws {
        let q = try QuantizedModel.load(directory: directory)
        XCTAssertEqual(q.recipe.method, .mambaquant)
        XCTAssertEqual(q.recipe.bits, BitWidths(weight: 8, activation: 8))
        XCTAssertNil(q.recipe.groupSize)
        XCTAssertEqual(q.blocks.count, 2)
        XCTAssertNotNil(q.blocks[0].mixer.hadamardSigns(before: "out_proj"))
        XCTAssertNotNil(q.blocks[0].mixer.gateSmoothing)
        XCTAssertEqual(q.lmHead.input?.scale.staticScale.map { $0 > 0 }, true)
    }

    /// The ids each fixture's committed logits are for (the written ones have vocabularies of 56 and 77).
    func ids(_ dir: String) -> [Int] { written.contains(dir) ? [5, 17, 20, 3, 9, 42, 7, 13, 44, 25, 1, 18] : tokens }

    func testBothRuntimesGiveTheCommittedLogits() throws {
        for dir in [directory, format3, keepFloat] + written {
            let q = try QuantizedModel.load(directory: dir)
            let committed = try SafeTensorsFile(path: dir + "-logits.safetensors").view("logits").tensor()
            XCTAssertEqual(committed.shape, [tokens.count, q.config.vocabSize])
            for (runtime, tolerance) in [(QuantizedRuntime.reference, Float(1e-4)), (.int8, 1e-3)] {
                let logits = try q.model(runtime: runtime).logits(ids(dir))
                XCTAssertLessThanOrEqual(maxAbsDifference(logits.storage, committed.storage), tolerance * committed.absMax, "\(dir) \(runtime)")
            }
        }
    }

    /// The block-at-a-time runtime loader builds the same model as loading everything first.
    func testLoadModelEqualsLoadThenModel() throws {
        for dir in [directory, format3, keepFloat] + written {
            for runtime in [QuantizedRuntime.int8, .reference] {
                let direct = try QuantizedModel.loadModel(directory: dir, runtime: runtime).logits(ids(dir))
                XCTAssertEqual(direct.storage, try QuantizedModel.load(directory: dir).model(runtime: runtime).logits(ids(dir)).storage, "\(dir) \(runtime)")
            }
        }
    }

    func testRewritingGivesTheSameTensorFile() throws {
        for dir in [directory, format3, keepFloat] + written {
            let q = try QuantizedModel.load(directory: dir)
            let out = try makeTemporaryDirectory() + "/again"
            defer { try? FileManager.default.removeItem(atPath: (out as NSString).deletingLastPathComponent) }
            try q.write(directory: out, sourceDirectory: dir, provenance: try QuantizedModel.provenance(directory: dir))
            XCTAssertTrue(try sameTensorFile(out + "/model.safetensors", dir + "/model.safetensors"), dir)
            let again = try QuantizedModel.load(directory: out)
            XCTAssertTrue(again.recipe == q.recipe, dir)
        }
    }

    /// A hand-edited quantization object with values the runtime does not support is refused in one
    /// line that names the key (activation bits 33 trapped, 1000 ran and printed a perplexity).
    func testUnsupportedRecipeValuesAreRefused() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let copy = dir + "/q"
        try FileManager.default.copyItem(atPath: directory, toPath: copy)
        let original = try XCTUnwrap(FileManager.default.contents(atPath: directory + "/config.json"))
        let cases: [(String, JSONValue, String)] = [
            ("activation_bits", .number(0), "activation_bits 0"), ("activation_bits", .number(33), "activation_bits 33"),
            ("activation_bits", .number(1000), "activation_bits 1000"), ("weight_bits", .number(3), "weight_bits 3"),
            ("group_size", .number(0), "group_size 0"), ("group_size", .number(2.5), "group_size 2.5"), ("seed", .number(-1), "seed -1"),
        ]
        for (key, value, needle) in cases {
            var json = try JSONDecoder().decode(JSONValue.self, from: original).object!
            var q = json["quantization"]!.object!
            q[key] = value
            json["quantization"] = .object(q)
            try JSONValue.object(json).prettyData().write(to: URL(fileURLWithPath: copy + "/config.json"))
            XCTAssertThrowsError(try QuantizedModel.loadModel(directory: copy), "\(key) \(value)") { e in
                XCTAssertTrue("\(e)".contains(needle), "\(e)")
            }
        }
    }
}
