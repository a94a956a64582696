import Foundation
import MambaCalibration
import MambaQuantization
import TestSupport
import XCTest

/// `quantize` through the library: every check happens when the job is opened, before anything
/// is written, and names the problem; a finished job writes the checkpoint in one rename.
final class QuantizeJobTests: XCTestCase {
    let tiny = Fixtures.model("tiny-tied")

    func calibrate(_ model: String, _ dir: String, _ name: String) throws -> String {
        let text = dir + "/d.txt"
        if !FileManager.default.fileExists(atPath: text) {
            try String(repeating: "Now is the winter of our discontent made glorious summer. ", count: 20).write(toFile: text, atomically: true, encoding: .utf8)
        }
        let file = try calibrateStats(try CheckpointWeights(directory: model), modelDirectory: model, dataFiles: [text], samples: 3, seqLen: 32, seed: 0,
                                      parallelism: .serial, progress: nil)
        try file.write(to: dir + "/" + name)
        return dir + "/" + name
    }

    func testRefusalsBeforeAnythingIsWritten() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stats = try calibrate(tiny, dir, "s.safetensors")
        // Another checkpoint: the fixture with one byte of a weight changed.
        let other = dir + "/other"
        try FileManager.default.copyItem(atPath: tiny, toPath: other)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: other + "/model.safetensors"))
        bytes[bytes.count - 1] ^= 1
        try bytes.write(to: URL(fileURLWithPath: other + "/model.safetensors"))
        let foreign = try calibrate(other, dir, "other.safetensors")
        let q = dir + "/q"
        let summary = try QuantizeJob(model: tiny, stats: stats, out: q, recipe: .init(method: .mambaquant), parallelism: .serial).run()
        XCTAssertTrue(summary.transforms.contains { $0.step == "R1" }, "\(summary.transforms)")
        XCTAssertGreaterThan(summary.floatBytes, summary.weightBytes)
        let out = dir + "/new"
        let recipe = QuantizationRecipe(method: .mambaquant)
        var keepNorm = recipe
        keepNorm.keepFloat = ["backbone.norm_f"]
        let cases: [(model: String, stats: String, out: String, recipe: QuantizationRecipe, mention: String)] = [
            (tiny, foreign, out, recipe, "another checkpoint"),
            (tiny, dir + "/missing.safetensors", out, recipe, "missing.safetensors"),
            (tiny, stats, out, keepNorm, "norm_f"),
            (tiny, stats, tiny, recipe, "overwrite"),
            (tiny, stats, stats, recipe, "overwrite"),
            (q, stats, out, recipe, "already a quantized"),
            (tiny, tiny + "/config.json", out, recipe, "config.json"),
        ]
        for c in cases {
            XCTAssertThrowsError(try QuantizeJob(model: c.model, stats: c.stats, out: c.out, recipe: c.recipe, parallelism: .serial), c.mention) { e in
                XCTAssertTrue("\(e)".contains(c.mention), "\(e)")
                XCTAssertFalse("\(e)".contains("\n"), "\(e)")
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertEqual(try MambaWeights.load(directory: tiny).config.numLayers, 2, "the input survives")
    }

    /// An error while running leaves no temporary directory and the previous checkpoint as it was.
    func testAFailedRunLeavesTheOldCheckpoint() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stats = try calibrate(tiny, dir, "s.safetensors")
        let q = dir + "/q"
        _ = try QuantizeJob(model: tiny, stats: stats, out: q, recipe: .init(method: .rtn), parallelism: .serial).run()
        let before = try Data(contentsOf: URL(fileURLWithPath: q + "/model.safetensors"))
        // A weight of the source becomes NaN after the job was opened (its checks passed), written
        // into the file in place: the pipeline refuses it when it reaches that layer.
        let source = dir + "/src"
        try FileManager.default.copyItem(atPath: tiny, toPath: source)
        let sourceStats = try calibrate(source, dir, "src.safetensors")
        let job = try QuantizeJob(model: source, stats: sourceStats, out: q, recipe: .init(method: .mambaquant), parallelism: .serial)
        let file = source + "/model.safetensors"
        let raw = try Data(contentsOf: URL(fileURLWithPath: file))
        let headerLength = Int(raw.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = try JSONSerialization.jsonObject(with: raw.subdata(in: 8..<(8 + headerLength))) as! [String: Any]
        let entry = header["backbone.layers.1.mixer.out_proj.weight"] as! [String: Any]
        XCTAssertEqual(entry["dtype"] as? String, "F32")
        let offset = 8 + headerLength + (entry["data_offsets"] as! [Int])[0]
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: file))
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { Data($0) })
        try handle.close()
        XCTAssertThrowsError(try job.run()) { e in XCTAssertTrue("\(e)".contains("out_proj"), "\(e)") }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }, [])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: q + "/model.safetensors")), before)
    }
}
