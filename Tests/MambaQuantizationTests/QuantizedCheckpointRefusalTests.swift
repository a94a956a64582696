import Foundation
import MambaCalibration
import MambaQuantization
import TestSupport
import XCTest

/// Quantized checkpoints the fuzzer found crashing or running with other logits (issue "trust,
/// round three"), made here from the committed fixtures by editing one tensor or key: each is
/// refused in one line that names it.
final class QuantizedCheckpointRefusalTests: XCTestCase {
    let w8a8 = Fixtures.root + "/quantized/tiny-tied-mambaquant-w8a8"
    let format3 = Fixtures.root + "/quantized/tiny-tied-mambaquant-w4a8-g8"

    /// A copy of `source` in a new directory, its tensor file rewritten with `drop` left out,
    /// `add` appended and `edit` applied to each tensor's bytes, and its "quantization" object edited.
    func copy(_ source: String, drop: Set<String> = [], add: [(String, [Float])] = [], edit: (String, inout [UInt8]) -> Void = { _, _ in },
              quantization: (inout [String: JSONValue]) -> Void = { _ in }) throws -> String {
        let dir = try makeTemporaryDirectory()
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/q"
        try FileManager.default.copyItem(atPath: source, toPath: out)
        let file = try SafeTensorsFile(path: source + "/model.safetensors")
        let writer = ShardedSafeTensorsWriter(directory: dir, metadata: ["format": "pt"])
        for name in file.names where !drop.contains(name) {
            let v = try file.view(name)
            var bytes = Array(v.bytes.bindMemory(to: UInt8.self))
            edit(name, &bytes)
            try writer.add(name, dtype: v.dtype, shape: v.shape, bytes: bytes)
        }
        for (name, values) in add { try writer.add(name, shape: [values.count], floats: values) }
        try writer.finish()
        try FileManager.default.removeItem(atPath: out + "/model.safetensors")
        try FileManager.default.moveItem(atPath: dir + "/model.safetensors", toPath: out + "/model.safetensors")
        var json = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))).object!
        var q = json["quantization"]!.object!
        quantization(&q)
        json["quantization"] = .object(q)
        try JSONValue.object(json).prettyData().write(to: URL(fileURLWithPath: out + "/config.json"))
        return out
    }

    func assertRefused(_ dir: String, _ needle: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try QuantizedModel.loadModel(directory: dir), needle, file: file, line: line) { e in
            XCTAssertTrue("\(e)".contains(needle) && !"\(e)".contains("\n"), "\(e)", file: file, line: line)
        }
    }

    func setFirstFloat(_ value: Float, of tensor: String) -> (String, inout [UInt8]) -> Void {
        { name, bytes in
            guard name == tensor else { return }
            withUnsafeBytes(of: value.bitPattern.littleEndian) { for i in 0..<4 { bytes[i] = $0[i] } }
        }
    }

    func testEditedCheckpointsAreRefused() throws {
        // weight_bits 4 in a format-1 file (a value per byte): its int8 values do not fit int4 panels.
        assertRefused(try copy(w8a8, quantization: { $0["weight_bits"] = .number(4) }), "outside the 4-bit range")
        // Scales: NaN, Inf and 3e38 in a tied table, NaN as the head's input scale and weight scale.
        for bad: Float in [.nan, .infinity, 3e38] {
            assertRefused(try copy(format3, edit: setFirstFloat(bad, of: "backbone.embeddings.weight_scale")), "backbone.embeddings.weight_scale")
        }
        assertRefused(try copy(w8a8, edit: setFirstFloat(.nan, of: "lm_head.input_scale")), "lm_head.input_scale")
        assertRefused(try copy(w8a8, edit: setFirstFloat(.nan, of: "lm_head.weight_scale")), "lm_head.weight_scale")
        assertRefused(try copy(w8a8, edit: setFirstFloat(.infinity, of: "backbone.layers.0.mixer.A_log")), "A_log")
        // A scale of 0 is valid (a dead site, an all-zero row: q = 0, FORMAT.md): the writer may
        // write it, so the reader takes it; a negative one is refused.
        XCTAssertNoThrow(try QuantizedModel.loadModel(directory: try copy(w8a8, edit: setFirstFloat(0, of: "backbone.layers.0.mixer.x_scale"))))
        assertRefused(try copy(w8a8, edit: setFirstFloat(-1, of: "backbone.layers.0.mixer.x_scale")), "x_scale")
        // A tied source's checkpoint without its head-input matrix would run with other logits.
        assertRefused(try copy(format3, drop: ["lm_head.input_transform"]), "lm_head.input_transform")
        // group_size past what the kernels index: written by quantize before, then trapped every loader.
        for g in [2147483648.0, 4.6e18] { assertRefused(try copy(w8a8, quantization: { $0["group_size"] = .number(g) }), "group_size") }
    }

    /// S-SiLU's s has no place in a Mamba-2 checkpoint (its group norm sits between gate and
    /// out_proj): a gate_smooth tensor there is refused, not used.
    func testGateSmoothingInAMamba2CheckpointIsRefused() throws {
        let source = Fixtures.model("tiny-mamba2")
        let w = try MambaWeights.load(directory: source)
        let stats = try calibratedStats(w, text: (0..<300).map { ($0 * 7 + $0 / 9) % w.config.vocabSize }, samples: 3, seqLength: 16, seed: 1)
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try QuantizedModel.quantize(weights: w, stats: stats, recipe: .init(method: .mambaquant), parallelism: .serial)
            .write(directory: dir + "/q", sourceDirectory: source, provenance: .init(sourceSHA256: "a", statsSHA256: "b"))
        XCTAssertNoThrow(try QuantizedModel.loadModel(directory: dir + "/q"))
        assertRefused(try copy(dir + "/q", add: [("backbone.layers.0.mixer.gate_smooth", [Float](repeating: 1, count: w.config.innerSize))]), "gate_smooth")
    }

    /// Huge but finite weights or activations would be written as Inf or NaN scales: quantize refuses them.
    func testQuantizeRefusesScalesItCouldNotWrite() throws {
        var w = try MambaWeights.load(directory: Fixtures.model("tiny-tied"))
        let stats = try calibratedStats(w, text: (0..<300).map { ($0 * 7 + $0 / 9) % 256 }, samples: 3, seqLength: 16, seed: 1)
        w.embedding.storage[5] = 3e38
        XCTAssertThrowsError(try QuantizedModel.quantize(weights: w, stats: stats, recipe: .init(method: .rtn), parallelism: .serial)) { e in
            XCTAssertTrue("\(e)".contains("backbone.embeddings") || "\(e)".contains("overflow"), "\(e)")
        }
        // A stats file whose absmax reaches 3e38 (forged, or a model that overflows): the conv-input
        // smoothing from it would make the conv's weights overflow to Inf.
        var forged = stats
        let key = SiteKey(layer: 0, site: .x)
        let r = forged.stats.sites[key]!.range
        forged.stats.sites[key]!.range = ChannelRange(absmax: [3e38] + r.absmax.dropFirst(), min: r.min, max: r.max)
        XCTAssertThrowsError(try QuantizedModel.quantize(weights: try MambaWeights.load(directory: Fixtures.model("tiny-tied")), stats: forged,
                                                         recipe: .init(method: .mambaquant), parallelism: .serial)) { e in
            XCTAssertTrue("\(e)".contains("backbone.layers.0.mixer.conv1d") && "\(e)".contains("weights reach"), "\(e)")
        }
        // Calibration tokens outside the vocabulary (another model's stats file, or -1) read outside the table.
        for bad in [-1, w.config.vocabSize] {
            var other = stats
            other.windows = CalibrationWindows(seqLength: stats.windows.seqLength, windows: [[bad] + stats.windows.windows[0].dropFirst()])
            XCTAssertThrowsError(try QuantizedModel.quantize(weights: try MambaWeights.load(directory: Fixtures.model("tiny-tied")), stats: other,
                                                             recipe: .init(method: .rtn), parallelism: .serial)) { e in
                XCTAssertTrue("\(e)".contains("id \(bad)") && "\(e)".contains("vocabulary"), "\(e)")
            }
        }
    }
}
