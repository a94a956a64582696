import Foundation
import MambaCalibration
import MambaEvaluation
import MambaModel
import MambaQuantization
import MambaTensors
import TestSupport
import XCTest

/// Mixed widths (WidthAllocation.swift): a module taken from the 8-bit quantization into the
/// 4-bit one is what the pipeline gives it at 8 bits, the mix writes and reads back exactly, and
/// the choice stays within its byte budget.
final class WidthAllocationTests: XCTestCase {
    func stats(_ w: MambaWeights) throws -> StatsFile {
        let text = (0..<400).map { ($0 * 7 + $0 / 9) % min(50, w.config.vocabSize) }
        let windows = try CalibrationWindows.draw(from: [("t", text)], samples: 4, seqLength: 24, seed: 3)
        let s = try Calibrator.run(model: MambaLM(weights: w), windows: windows, parallelism: .serial)
        return StatsFile(stats: s, windows: windows, provenance: .init(checkpointSHA256: "t", dataSHA256: "t", dataFiles: ["t"], seed: 3))
    }

    /// On a tied Mamba-1 and a Mamba-2 fixture, with GPTQ and to nearest: the 4-bit model with
    /// layer 0's in_proj and the head (a tied table) taken from the 8-bit one equals, matrix for
    /// matrix, the pipeline run with those modules' bits; it is format 4, stores the 8-bit modules
    /// one value per byte and the rest packed, and reads back with the same logits on both runtimes.
    func testTakenModulesEqualThePipelinesMixedWidths() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, rounding) in [("tiny-tied", WeightRounding.gptq), ("tiny-mamba2", .rtn)] {
            let source = Fixtures.model(name)
            let w = try MambaWeights.load(directory: source)
            let s = try stats(w)
            var recipe = QuantizationRecipe(method: .mambaquant, bits: .init(weight: 4, activation: 8))
            recipe.weightRounding = rounding
            let (lowRecipe, highRecipe) = WidthAllocation.recipes(recipe)
            let low = try QuantizedModel.quantize(weights: w, stats: s, recipe: lowRecipe, parallelism: .serial)
            let high = try QuantizedModel.quantize(weights: w, stats: s, recipe: highRecipe, parallelism: .serial)
            let inProj = BlockNames.mixerPrefix(layer: 0) + "in_proj"
            let taken = [inProj, QuantizedModel.lmHeadModule]
            let mixed = low.taking(taken, from: high)
            XCTAssertEqual(mixed.recipe.moduleWeightBits, [inProj: 8, QuantizedModel.lmHeadModule: 8], name)
            var direct = recipe
            direct.moduleWeightBits = mixed.recipe.moduleWeightBits
            let piped = try QuantizedModel.quantize(weights: w, stats: s, recipe: direct, parallelism: .serial)
            XCTAssertEqual(piped.embedding, mixed.embedding, name)
            XCTAssertEqual(piped.lmHead.weight, mixed.lmHead.weight, name)
            for (a, b) in zip(piped.blocks, mixed.blocks) {
                for m in a.mixer.modules.keys { XCTAssertEqual(a.mixer.modules[m]!.weight, b.mixer.modules[m]!.weight, "\(name) \(m)") }
            }
            XCTAssertEqual(mixed.blocks[0].mixer.modules["in_proj"]!.weight!.bits, 8)
            XCTAssertEqual(mixed.blocks[1].mixer.modules["in_proj"]!.weight!.bits, 4)
            XCTAssertEqual(mixed.lmHead.weight!.bits, 8)

            let out = dir + "/" + name
            try mixed.write(directory: out, sourceDirectory: source, provenance: .init(sourceSHA256: "s", statsSHA256: "t"))
            let q = try MambaConfig.load(directory: out).json["quantization"]!.object!
            XCTAssertEqual(q["format_version"]?.int, 4, name)
            XCTAssertEqual(q["module_weight_bits"]?.object?[inProj]?.int, 8, name)
            let store = try TensorStore(directory: out)
            XCTAssertEqual(try store.view(inProj + ".weight").dtype, .i8, name)
            XCTAssertEqual(try store.view(BlockNames.mixerPrefix(layer: 1) + "in_proj.weight").dtype, .u8, name)
            XCTAssertEqual(try store.view(BlockNames.mixerPrefix(layer: 0) + "A_log").dtype, .f16, "format 4 stores A_log in F16: \(name)")
            let tokens = (0..<23).map { ($0 * 11 + 3) % 50 }
            let loaded = try QuantizedModel.load(directory: out)
            XCTAssertEqual(loaded.recipe.moduleWeightBits, mixed.recipe.moduleWeightBits, name)
            for runtime in [QuantizedRuntime.int8, .reference] {
                XCTAssertEqual(try loaded.model(runtime: runtime).logits(tokens).storage, try mixed.model(runtime: runtime).logits(tokens).storage, "\(name) \(runtime)")
            }
            // A width for a module the model does not have is refused by name.
            let path = out + "/config.json"
            var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
            var object = config["quantization"] as! [String: Any]
            object["module_weight_bits"] = [inProj: 8, QuantizedModel.lmHeadModule: 8, "backbone.layers.9.mixer.in_proj": 8]
            config["quantization"] = object
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try QuantizedModel.load(directory: out)) { e in
                XCTAssertTrue("\(e)".contains("backbone.layers.9.mixer.in_proj, which is not a quantized module"), "\(e)")
            }
        }
    }

    /// The choice spends at most its budget, only on modules that measured a gain, best gain per
    /// byte first; no budget keeps the 4-bit model, a budget past every module promotes every
    /// module that gains.
    func testChoiceStaysWithinItsBudget() throws {
        let w = try MambaWeights.load(directory: Fixtures.model("tiny-tied"))
        let s = try stats(w)
        let (lowRecipe, highRecipe) = WidthAllocation.recipes(QuantizationRecipe(method: .mambaquant, bits: .init(weight: 4, activation: 8)))
        let low = try QuantizedModel.quantize(weights: w, stats: s, recipe: lowRecipe, parallelism: .serial)
        let high = try QuantizedModel.quantize(weights: w, stats: s, recipe: highRecipe, parallelism: .serial)
        let reference = MambaLM(weights: w)
        let windows = s.windows.windows
        let all = low.widthCandidates.reduce(0) { $0 + low.extraBytes($1, from: high) }
        XCTAssertEqual(low.widthCandidates.count, 2 * low.config.mixer(layer: 0).modules.count + 1)
        for budget in [0, all / 3, all + 1] {
            let c = try WidthAllocation.choose(low: low, high: high, reference: reference, windows: windows, extraBudget: budget, parallelism: .serial)
            let chosen = c.candidates.filter(\.chosen)
            XCTAssertLessThanOrEqual(chosen.reduce(0) { $0 + $1.extraBytes }, budget)
            XCTAssertTrue(chosen.allSatisfy { $0.gain > 0 })
            XCTAssertEqual(Set(c.model.recipe.moduleWeightBits.keys), Set(chosen.map(\.name)))
            XCTAssertTrue(c.model.recipe.moduleWeightBits.values.allSatisfy { $0 == 8 })
            let ratios = c.candidates.map { $0.gain / Double(max(1, $0.extraBytes)) }
            XCTAssertEqual(ratios, ratios.sorted(by: >))
            XCTAssertGreaterThan(c.lowKL, c.highKL)
            switch budget {
            case 0:
                XCTAssertTrue(chosen.isEmpty)
                XCTAssertEqual(c.mixedKL, c.lowKL, accuracy: 1e-12)
            case all + 1:
                XCTAssertEqual(chosen.count, c.candidates.filter { $0.gain > 0 }.count)
            default:
                // A greedy pass skips what no longer fits: every module left out with a gain is
                // larger than what was left.
                let left = budget - chosen.reduce(0) { $0 + $1.extraBytes }
                XCTAssertTrue(c.candidates.filter { !$0.chosen && $0.gain > 0 }.allSatisfy { $0.extraBytes > left })
                XCTAssertLessThan(c.mixedKL, c.lowKL)
            }
        }
    }
}
