import Foundation
import MambaCalibration
import MambaQuantization
import TestSupport
import XCTest

/// Writes the committed quantized fixtures whose sources have no tokenizer (so `calibrate` cannot
/// make their stats): calibration on seeded synthetic token windows, through the library. Run by
/// scripts/fixtures/make_quantized_fixture.sh (MAMBAQUANT_WRITE_FORMAT_FIXTURES=1); skipped otherwise.
final class FormatFixtureWriter: XCTestCase {
    /// name -> (source model, recipe). Mamba-2 with biases, a finite dt clamp, an untied head and
    /// dynamic per-token scales (FORMAT.md: each of x, B and C quantized on its own); a state-spaces
    /// source (d_model, n_layer, ssm_cfg keys; vocab 50 padded to 56).
    static let fixtures: [(name: String, source: String, recipe: QuantizationRecipe)] = [
        ("tiny-mamba2-mambaquant-w8a8-dynamic", "tiny-mamba2-g2-untied", QuantizationRecipe(method: .mambaquant, activations: .perToken, seed: 1)),
        ("tiny-statespaces-mambaquant-w8a8", "tiny-statespaces", QuantizationRecipe(method: .mambaquant, seed: 1)),
    ]

    func testWriteFixtures() throws {
        guard ProcessInfo.processInfo.environment["MAMBAQUANT_WRITE_FORMAT_FIXTURES"] == "1" else {
            throw XCTSkip("writes Tests/Fixtures/quantized only under MAMBAQUANT_WRITE_FORMAT_FIXTURES=1")
        }
        for f in Self.fixtures {
            let source = Fixtures.model(f.source)
            let w = try MambaWeights.load(directory: source)
            let text = (0..<600).map { ($0 * 7 + $0 / 9) % 50 }
            let windows = try CalibrationWindows.draw(from: [("synthetic", text)], samples: 4, seqLength: 32, seed: 1)
            let stats = StatsFile(stats: try Calibrator.run(model: MambaLM(weights: w), windows: windows, parallelism: .serial), windows: windows,
                                  provenance: .init(checkpointSHA256: try checkpointSHA256(directory: source), dataSHA256: SHA256.hex(of: Data("synthetic".utf8)),
                                                    dataFiles: ["synthetic"], seed: 1))
            let statsPath = NSTemporaryDirectory() + "/\(f.name)-stats.safetensors"
            try stats.write(to: statsPath)
            let q = try QuantizedModel.quantize(weights: w, stats: stats, recipe: f.recipe, parallelism: .serial)
            try q.write(directory: Fixtures.root + "/quantized/" + f.name, sourceDirectory: source,
                        provenance: .init(sourceSHA256: try checkpointSHA256(directory: source), statsSHA256: try SHA256.hex(ofFiles: [statsPath])))
        }
    }
}
