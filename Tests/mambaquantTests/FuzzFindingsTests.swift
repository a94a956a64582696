import Foundation
import MambaModel
import TestSupport
import XCTest

/// What the fuzzer and a user's mutated inputs found (issue "trust, round three") that needs the
/// command line to show: each ends in one line naming the problem and a non-zero exit (or runs,
/// where the input is fine), never a trap, a hang or a NaN printed.
final class FuzzFindingsTests: XCTestCase {
    let tiny = Fixtures.model("tiny-tied")

    func assertOneLineRefusal(_ args: [String], _ needle: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try CLI.run(args)
        XCTAssertNotEqual(r.status, 0, "\(args)", file: file, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(needle), "\(args): \(r.stderr)", file: file, line: line)
    }

    func testCommandLineRefusals() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A checkpoint of another model beside bench's --model (trapped on another vocabulary).
        let other = Fixtures.root + "/quantized/tiny-tied-mambaquant-w8a8"
        try assertOneLineRefusal(["bench", "--model", Fixtures.model("tiny-untied-k3"), "--quantized", other, "--runs", "1"], "another checkpoint")
        // 12.8 TB of GEMM rows.
        try assertOneLineRefusal(["bench", "--preset", "mamba-130m", "--gemm-rows", "99999999999"], "gemm-rows")
        try assertOneLineRefusal(["bench", "--preset", "bogus"], "bogus")
        // Group sizes the kernels cannot index (2^31 was written, then trapped every loader).
        for g in ["2147483648", "9223372036854775807"] {
            try assertOneLineRefusal(["quantize", "--stats", "s", "--out", dir + "/q", "--group-size", g], "--group-size")
            try assertOneLineRefusal(["compare", "--group-size", g], "--group-size")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/q"))
    }

    /// A million threads hung calibrate; they are capped at the machine's cores with a note.
    func testThreadsBeyondTheMachineAreCapped() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run(["calibrate", "--model", tiny, "--samples", "2", "--seq-len", "16", "--threads", "1000000", "--quiet", "--out", dir + "/s.safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("--threads 1000000 is more than"), r.stderr)
    }

    /// Under an address-space limit (ulimit -v), a job that cannot fit is refused naming that
    /// limit, not killed by an allocation that fails.
    func testTheAddressSpaceLimitIsTheBudget() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "ulimit -v 4000000 && exec \"$0\" calibrate --model \"$1\" --samples 32768 --seq-len 4096 --quiet --out \"$2\"",
                       CLI.binary, tiny, dir + "/s.safetensors"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 1, stderr)
        XCTAssertTrue(stderr.contains("address-space limit") && stderr.contains("--samples"), stderr)
        XCTAssertEqual(stderr.split(separator: "\n").count, 1, stderr)
    }

    /// Finite weights that overflow float32 on the way gave a NaN perplexity with exit 0.
    func testOverflowingWeightsAreRefusedNotScoredAsNaN() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var w = try MambaWeights.load(directory: tiny)
        var x = w.layers[0].mixer.module("x_proj").floatWeight
        for i in x.storage.indices { x.storage[i] = 1e30 }
        w.layers[0].mixer.modules["x_proj"]!.weight = .float(x)
        try w.save(directory: dir)
        try FileManager.default.copyItem(atPath: tiny + "/tokenizer.json", toPath: dir + "/tokenizer.json")
        try String(repeating: "Now is the winter of our discontent. ", count: 10).write(toFile: dir + "/t.txt", atomically: true, encoding: .utf8)
        try assertOneLineRefusal(["evaluate", "--model", dir, "--data", dir + "/t.txt", "--quiet"], "not finite")
    }

    /// A shard index naming a file outside the checkpoint directory is refused, not read.
    func testShardIndexCannotReachOutsideTheDirectory() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/m", withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: tiny + "/config.json", toPath: dir + "/m/config.json")
        try FileManager.default.copyItem(atPath: tiny + "/model.safetensors", toPath: dir + "/outside.safetensors")
        let names = try SafeTensorsFile(path: dir + "/outside.safetensors").names
        let index = ["metadata": [:], "weight_map": Dictionary(uniqueKeysWithValues: names.map { ($0, "../outside.safetensors") })] as [String: Any]
        try JSONSerialization.data(withJSONObject: index).write(to: URL(fileURLWithPath: dir + "/m/model.safetensors.index.json"))
        try assertOneLineRefusal(["generate", "--model", dir + "/m", "--tokens", "1,2", "--max-new-tokens", "1"], "not a file name")
    }
}
