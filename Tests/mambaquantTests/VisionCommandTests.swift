import Foundation
import MambaCalibration
import MambaModel
import MambaQuantization
import MambaTensors
import TestSupport
import XCTest

/// A Vision Mamba through the commands a user runs: calibrate on images, quantize, classify the
/// quantized checkpoint, compare; and the one-line refusals of mismatched inputs.
final class VisionCommandTests: XCTestCase {
    let model = Fixtures.model("tiny-vim")
    var images: String { model + "/reference.safetensors" }

    func testCalibrateQuantizeClassifyAndCompare() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stats = dir + "/stats.safetensors", out = dir + "/q"
        var r = try CLI.run(["calibrate", "--model", model, "--images", images, "--out", stats, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try CLI.run(["quantize", "--model", model, "--stats", stats, "--out", out, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("on dt_low_b"), r.stderr)
        // The checkpoint read back runs what the pipeline made in memory.
        let written = try QuantizedVisionMamba.loadAny(directory: out)
        let x = try SafeTensorsFile(path: images).view("images").tensor()
        let file = try StatsFile.read(path: stats)
        let inMemory = try QuantizedVisionMamba.quantize(weights: try CheckpointWeights(directory: model), stats: file.stats, images: file.images!,
                                                         recipe: .init(method: .mambaquant), parallelism: .serial).quantized
        XCTAssertEqual(try written.logits(x).storage, inMemory.model().logits(x).storage)
        // The language-model commands refuse it in one line.
        r = try CLI.run(["generate", "--model", out, "--tokens", "1,2"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("quantized Vision Mamba") && r.stderr.contains("classify"), r.stderr)
        r = try CLI.run(["classify", "--model", out, "--images", images, "--logits-out", dir + "/logits.safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("top-1 accuracy 75.00% (3 of 4)"), r.stdout)
        XCTAssertEqual(try SafeTensorsFile(path: dir + "/logits.safetensors").view("logits").shape, [4, 10])
        r = try CLI.run(["compare", "--model", model, "--images", images, "--calib-images", images, "--methods", "rtn,mambaquant", "--bits", "w8a8",
                         "--format", "json", "--quiet", "--plot", dir + "/plot.svg"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // The plot: SQNR per layer, Δ top-1 per model, KL against bits per weight.
        let svg = try String(contentsOfFile: dir + "/plot.svg", encoding: .utf8)
        for part in ["weakest-site SQNR per layer", "Δ top-1 vs float", "mambaquant w8a8", "KL from float against bits per weight"] {
            XCTAssertTrue(svg.contains(part), part)
        }
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let rows = report?["rows"] as? [[String: Any]] ?? []
        XCTAssertEqual(rows.map { $0["name"] as? String }, ["float", "rtn", "mambaquant"])
        XCTAssertEqual(rows.first?["accuracy"] as? Double, 0.75)
        // Per-site SQNR of both quantized models, every layer's sites (both branches') and the head's input.
        let sites = report?["sites"] as? [[String: Any]] ?? []
        XCTAssertEqual(Set(sites.compactMap { $0["method"] as? String }), ["rtn", "mambaquant"])
        XCTAssertTrue(sites.contains { $0["site"] as? String == "dt_low_b" && $0["layer"] as? Int == 2 })
        XCTAssertTrue(sites.contains { $0["site"] as? String == "lm_head_input" && ($0["sqnr_db"] as? Double ?? 0) > 10 })
    }

    /// The bundled model on a folder of PNG files (calibration/mnist-test-png, the test split's first
    /// 20 images written back to 8 bits) gives the logits of the same images from the safetensors
    /// split, up to the split's F16 rounding; calibrate and --image-mean / --crop-ratio read folders too.
    func testImageFolderGivesTheSafetensorsLogits() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundled = Fixtures.packageRoot + "/models/mnist-vim", folder = Fixtures.packageRoot + "/calibration/mnist-test-png"
        var r = try CLI.run(["classify", "--model", bundled, "--images", folder, "--logits-out", dir + "/folder.safetensors", "--show", "0"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("top-1 accuracy 100.00% (20 of 20)"), r.stdout)
        r = try CLI.run(["classify", "--model", bundled, "--images", Fixtures.packageRoot + "/calibration/mnist-test.safetensors", "--limit", "20",
                         "--logits-out", dir + "/file.safetensors", "--show", "0"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let a = try SafeTensorsFile(path: dir + "/folder.safetensors"), b = try SafeTensorsFile(path: dir + "/file.safetensors")
        let (fromFolder, fromFile) = (try a.view("logits").tensor(), try b.view("logits").tensor())
        XCTAssertLessThanOrEqual(maxAbsDifference(fromFolder.storage, fromFile.storage), 0.01 * fromFile.absMax)
        XCTAssertEqual(try a.view("labels").integers(), try b.view("labels").integers())
        // Another normalization changes the logits; calibrate reads the folder.
        r = try CLI.run(["classify", "--model", bundled, "--images", folder, "--image-mean", "0.5", "--image-std", "0.5", "--crop-ratio", "0.875",
                         "--logits-out", dir + "/other.safetensors", "--show", "0"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertGreaterThan(maxAbsDifference(try SafeTensorsFile(path: dir + "/other.safetensors").view("logits").tensor().storage, fromFolder.storage), 0.1)
        r = try CLI.run(["calibrate", "--model", bundled, "--data", folder, "--samples", "8", "--out", dir + "/stats.safetensors", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try StatsFile.read(path: dir + "/stats.safetensors").images?.shape, [8, 1, 28, 28])
        r = try CLI.run(["classify", "--model", bundled, "--images", folder, "--crop-ratio=-1"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--crop-ratio must be positive"), r.stderr)
    }

    /// compare --budget on a Vision Mamba: one row per module group (a backward-branch module goes
    /// with its forward twin), the head by Vim's name, both branches' scan inputs.
    func testErrorBudgetOnImages() throws {
        let r = try CLI.run(["compare", "--model", model, "--images", images, "--calib-images", images, "--budget", "--format", "json", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let names = (report?["rows"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        for want in ["baseline: all sites, static per-tensor", "only x_proj", "only head", "only ssm_inputs.dt_b", "method: rtn", "float: x_proj"] {
            XCTAssertTrue(names.contains(want), "\(want) in \(names)")
        }
        XCTAssertFalse(names.contains { $0.hasSuffix("x_proj_b") || $0 == "only lm_head" }, "\(names)")
    }

    func testMismatchedInputsAreRefusedInOneLine() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Images of another shape, a language model's stats file, text for a Vim.
        var r = try CLI.run(["classify", "--model", model, "--images", Fixtures.model("tiny-vim-max") + "/reference.safetensors"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("the model reads [n, 3, 16, 16]"), r.stderr)
        r = try CLI.run(["calibrate", "--model", model, "--data", "calibration/shakespeare-calib.txt", "--out", dir + "/s.safetensors"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--images"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/s.safetensors"))
        r = try CLI.run(["generate", "--model", model, "--tokens", "1,2"])
        XCTAssertTrue(r.stderr.contains("Vision Mamba"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
    }
}
