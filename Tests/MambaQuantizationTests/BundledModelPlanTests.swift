import Foundation
import MambaCalibration
import MambaQuantization
import MambaTransforms
import TestSupport
import XCTest

/// Every method's transform plan on the bundled trained model (models/bard-mamba) leaves its float
/// logits unchanged (max abs error <= 1e-4 of the logits' max abs, docs/DESIGN.md section 2), with
/// statistics from a few windows of the calibration split; and its W8A8 int8 model stays close.
final class BundledModelPlanTests: XCTestCase {
    func testEveryPlanKeepsTheBundledModelsLogits() throws {
        let dir = Fixtures.packageRoot + "/models/bard-mamba"
        let weights = try MambaWeights.load(directory: dir)
        let text = try Data(contentsOf: URL(fileURLWithPath: Fixtures.packageRoot + "/calibration/shakespeare-calib.txt"))
        let calib = text.prefix(20_000).map(Int.init)                 // byte-level: id = byte
        let windows = try CalibrationWindows.draw(from: [("calib", calib)], samples: 4, seqLength: 128, seed: 5)
        let stats = try Calibrator.run(model: MambaLM(weights: weights), windows: windows, parallelism: .serial)
        let held = text.dropFirst(100_000).prefix(96).map(Int.init)
        let reference = try MambaLM(weights: weights).logits(held)
        for method in QuantizationMethod.allCases {
            var p = ModelParameters(weights: weights)
            _ = try applyPlan(method, to: &p, stats: stats, seed: 3, alpha: 0.5)
            let err = maxAbsDifference(try p.floatModel().logits(held).storage, reference.storage)
            XCTAssertLessThanOrEqual(err, 1e-4 * reference.absMax, "\(method): max |logit diff| \(err) of \(reference.absMax)")
        }
        let file = StatsFile(stats: stats, windows: windows, provenance: .init(checkpointSHA256: "t", dataSHA256: "t", dataFiles: ["calib"], seed: 5))
        let q = try QuantizedModel.quantize(weights: weights, stats: file, recipe: .init(method: .mambaquant), parallelism: .serial)
        let logits = try q.model(runtime: .int8).logits(held)
        var e: Float = 0, r: Float = 0
        for (a, b) in zip(logits.storage, reference.storage) { e += (a - b) * (a - b); r += b * b }
        XCTAssertLessThan((e / r).squareRoot(), 0.05, "mambaquant w8a8 int8: relative RMS logit error")
    }
}
