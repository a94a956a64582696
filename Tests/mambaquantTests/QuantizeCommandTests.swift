import Foundation
import MambaCalibration
import TestSupport
import XCTest

/// `mambaquant quantize` end to end on the fixture checkpoints, and its refusals: one line,
/// non-zero exit, nothing written.
final class QuantizeCommandTests: XCTestCase {
    let tiny = Fixtures.model("tiny-tied")

    func calibrate(_ model: String, _ dir: String, _ name: String) throws -> String {
        let text = dir + "/d.txt"
        if !FileManager.default.fileExists(atPath: text) {
            try String(repeating: "Now is the winter of our discontent made glorious summer. ", count: 20).write(toFile: text, atomically: true, encoding: .utf8)
        }
        let out = dir + "/" + name
        let r = try CLI.run(["calibrate", "--model", model, "--data", text, "--samples", "3", "--seq-len", "32", "--quiet", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        return out
    }

    /// --profile writes its recipe and its name into the quantization object; a flag beside it wins.
    func testProfilesAndTheirOverrides() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stats = try calibrate(tiny, dir, "s.safetensors")
        func quantization(_ extra: [String]) throws -> [String: Any] {
            let out = dir + "/q\(extra.joined().hashValue)"
            let r = try CLI.run(["quantize", "--model", tiny, "--stats", stats, "--quiet", "--out", out] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as! [String: Any]
            return config["quantization"] as! [String: Any]
        }
        let accurate = try quantization(["--profile", "accurate"])
        XCTAssertEqual(accurate["profile"] as? String, "accurate")
        XCTAssertEqual(accurate["activation_scale"] as? String, "dynamic")
        XCTAssertEqual(Set(accurate["kept_float"] as! [String]), ["x_proj", "dt_proj", "conv1d", "ssm_inputs"])
        let overridden = try quantization(["--profile", "accurate", "--act-scale", "block", "--keep-float", "lm_head"])
        XCTAssertEqual(overridden["activation_scale"] as? String, "block")
        XCTAssertEqual(overridden["activation_block"] as? Int, 32)
        XCTAssertEqual(overridden["kept_float"] as? [String], ["lm_head"])
        // A tied source whose head is kept float is stored untied; the recorded source count keeps
        // bits per weight divided by the source's parameters (the head once).
        let tinyParameters = 28256
        XCTAssertEqual(overridden["source_parameters"] as? Int, tinyParameters)
        XCTAssertEqual(accurate["source_parameters"] as? Int, tinyParameters)
        let compact = try quantization(["--profile", "compact"])
        XCTAssertEqual(compact["profile"] as? String, "compact")
        XCTAssertEqual(compact["activation_scale"] as? String, "dynamic")
        XCTAssertEqual(Set(compact["kept_float"] as! [String]), ["conv1d", "ssm_inputs"])
        let fast = try quantization(["--profile", "fast"])
        XCTAssertEqual(fast["activation_scale"] as? String, "static")
        XCTAssertEqual(fast["kept_float"] as? [String], [])
        let bad = try CLI.run(["quantize", "--model", tiny, "--stats", stats, "--profile", "precise", "--quiet", "--out", dir + "/bad"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad"))
    }

    /// --bits-per-weight: the file holds at most the target's bits per weight, the 8-bit modules
    /// are recorded; a target below the all-4-bit file, or an 8-bit base, is refused in one line
    /// with nothing written.
    func testBitsPerWeight() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stats = try calibrate(tiny, dir, "s.safetensors")
        let tinyParameters = 28256.0
        func bitsPerWeight(_ out: String) throws -> Double {
            8 * Double(try FileManager.default.attributesOfItem(atPath: out + "/model.safetensors")[.size] as! Int) / tinyParameters
        }
        let base = ["quantize", "--model", tiny, "--stats", stats, "--quiet"]
        var r = try CLI.run(base + ["--bits", "w4a8", "--out", dir + "/w4"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try CLI.run(base + ["--bits", "w8a8", "--out", dir + "/w8"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let (low, high) = (try bitsPerWeight(dir + "/w4"), try bitsPerWeight(dir + "/w8"))
        let target = (low + high) / 2
        r = try CLI.run(base + ["--bits-per-weight", String(format: "%.3f", target), "--out", dir + "/mix"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertLessThanOrEqual(try bitsPerWeight(dir + "/mix"), target)
        XCTAssertGreaterThan(try bitsPerWeight(dir + "/mix"), low)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/mix/config.json"))) as! [String: Any]
        let q = config["quantization"] as! [String: Any]
        XCTAssertEqual(q["weight_bits"] as? Int, 4)
        XCTAssertEqual(q["format_version"] as? Int, 4)
        let widths = try XCTUnwrap(q["module_weight_bits"] as? [String: Int])
        XCTAssertFalse(widths.isEmpty)
        XCTAssertTrue(widths.values.allSatisfy { $0 == 8 })
        XCTAssertTrue(r.stderr.contains("bits per weight (target"), r.stderr)
        for (extra, needle) in [(["--bits-per-weight", "1.5"], "below this model's all-4-bit checkpoint"), (["--bits-per-weight", "6", "--bits", "w8a8"], "give --bits w4aY")] {
            let bad = try CLI.run(base + extra + ["--out", dir + "/bad"])
            XCTAssertNotEqual(bad.status, 0)
            XCTAssertTrue(bad.stderr.contains(needle), bad.stderr)
            XCTAssertEqual(bad.stderr.split(separator: "\n").filter { $0.hasPrefix("Error") }.count, 1, bad.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad"))
        }
    }

    /// A full disk while writing: one line with the reason, the temporary directory removed, an
    /// existing checkpoint untouched. Needs a small tmpfs (root); skipped where mount is refused.
    func testFullDiskLeavesTheOldCheckpoint() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let disk = dir + "/disk"
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: false)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=128k", "tmpfs", disk]
        mount.standardError = FileHandle.nullDevice
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else { throw XCTSkip("cannot mount a tmpfs here") }
        defer {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = [disk]
            try? umount.run()
            umount.waitUntilExit()
        }
        let stats = try calibrate(tiny, dir, "s.safetensors")
        let q = disk + "/q"
        // The first checkpoint (about 50 KB, twice that while its shard is assembled) fits; a second beside it does not.
        let first = try CLI.run(["quantize", "--model", tiny, "--stats", stats, "--method", "rtn", "--quiet", "--out", q])
        XCTAssertEqual(first.status, 0, first.stderr)
        let before = try Data(contentsOf: URL(fileURLWithPath: q + "/model.safetensors"))
        let r = try CLI.run(["quantize", "--model", tiny, "--stats", stats, "--method", "mambaquant", "--quiet", "--out", q])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("No space left on device"), r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: disk), ["q"])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: q + "/model.safetensors")), before)
    }

    /// SIGINT during quantize removes the temporary directory (exit 130), and a later quantize
    /// sweeps the temporary directories of processes that no longer run.
    func testInterruptAndStaleTemporaryDirectories() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bundled = Fixtures.packageRoot + "/models/bard-mamba"
        let c = try CLI.run(["calibrate", "--model", bundled, "--samples", "4", "--seq-len", "128", "--quiet", "--out", dir + "/s.safetensors"])
        XCTAssertEqual(c.status, 0, c.stderr)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = ["quantize", "--model", bundled, "--stats", dir + "/s.safetensors", "--quiet", "--out", dir + "/q"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        let temp = dir + "/.q.tmp-\(p.processIdentifier)"
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: temp) && p.isRunning && Date() < deadline { usleep(10_000) }
        guard p.isRunning else { throw XCTSkip("quantize finished before it could be interrupted") }
        XCTAssertTrue(FileManager.default.fileExists(atPath: temp))
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 130)
        XCTAssertFalse(FileManager.default.fileExists(atPath: temp))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/q"))

        // A process that has exited left its temporary directory behind (as SIGKILL would).
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let stale = dir + "/.q.tmp-\(gone.processIdentifier)"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: false)
        let r = try CLI.run(["quantize", "--model", tiny, "--stats", try calibrate(tiny, dir, "t.safetensors"), "--quiet", "--out", dir + "/q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    }

    /// Like calibrate, evaluate and compare, quantize defaults to the bundled model.
    func testQuantizeDefaultsToTheBundledModel() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = try CLI.run(["calibrate", "--samples", "2", "--seq-len", "32", "--quiet", "--out", dir + "/s.safetensors"])
        XCTAssertEqual(c.status, 0, c.stderr)
        let r = try CLI.run(["quantize", "--stats", dir + "/s.safetensors", "--method", "rtn", "--quiet", "--out", dir + "/q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("bard-mamba"), r.stderr)
    }

    func testQuantizeThenGenerateAndInspect() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stats = try calibrate(tiny, dir, "s.safetensors")
        let q = dir + "/q"
        let r = try CLI.run(["quantize", "--model", tiny, "--stats", stats, "--method", "mambaquant", "--bits", "w8a8", "--quiet", "--out", q])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("quantized"), r.stderr)
        XCTAssertTrue(r.stderr.contains("R1: klt+hadamard"), r.stderr)
        let g = try CLI.run(["generate", "--model", q, "--tokens", "1,2,3", "--max-new-tokens", "4"])
        XCTAssertEqual(g.status, 0, g.stderr)
        let i = try CLI.run(["inspect", q, "--json"])
        XCTAssertEqual(i.status, 0, i.stderr)
        XCTAssertTrue(i.stdout.contains("mambaquant"), i.stdout)
        // Quantizing over an earlier quantized output is allowed (it is ours); a float input is not.
        XCTAssertEqual(try CLI.run(["quantize", "--model", tiny, "--stats", stats, "--method", "rtn", "--quiet", "--out", q]).status, 0)
    }

    /// The command line's own refusals (the checks on the inputs are QuantizeJob's, tested in
    /// QuantizeJobTests): one line, non-zero exit, nothing written.
    func testRefusals() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stats = try calibrate(tiny, dir, "s.safetensors")
        let out = dir + "/new"
        let cases: [([String], String)] = [
            (["--model", tiny, "--stats", dir + "/missing.safetensors", "--out", out], "missing.safetensors"),
            (["--model", tiny, "--stats", stats, "--method", "gptq", "--out", out], "gptq"),
            (["--model", tiny, "--stats", stats, "--bits", "w3a8", "--out", out], "w3a8"),
            (["--model", tiny, "--stats", stats, "--act-scale", "blocks", "--out", out], "blocks"),
            (["--model", tiny, "--stats", stats, "--scan-scales", "head", "--out", out], "head"),
            (["--model", tiny, "--stats", stats, "--keep-float", "backbone.norm_f", "--out", out], "norm_f"),
        ]
        for (args, mention) in cases {
            let r = try CLI.run(["quantize", "--quiet"] + args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(mention), "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(args): \(r.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
