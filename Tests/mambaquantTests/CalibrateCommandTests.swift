import Foundation
import MambaCalibration
import TestSupport
import XCTest

final class CalibrateCommandTests: XCTestCase {
    let tiny = Fixtures.model("tiny-tied")

    func testCalibrateWritesAStatsFileTiedToTheCheckpoint() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try String(repeating: "But soft, what light through yonder window breaks? ", count: 20).write(toFile: dir + "/d.txt", atomically: true, encoding: .utf8)
        let args = ["calibrate", "--model", tiny, "--data", dir + "/d.txt", "--samples", "3", "--seq-len", "40", "--seed", "5"]
        let r = try CLI.run(args + ["--out", dir + "/s1.safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("calibrated"), r.stderr)
        let stats = try StatsFile.read(path: dir + "/s1.safetensors")
        XCTAssertEqual(stats.windows.windows.count, 3)
        XCTAssertEqual(stats.windows.seqLength, 40)
        XCTAssertEqual(stats.provenance.checkpointSHA256, try checkpointSHA256(directory: tiny))
        XCTAssertEqual(try stats.stats.site(1, .outProjInput).count, 120)
        // Same inputs and seed: byte-identical, whatever the thread count.
        XCTAssertEqual(try CLI.run(args + ["--out", dir + "/s2.safetensors", "--threads", "1"]).status, 0)
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/s1.safetensors"), FileManager.default.contents(atPath: dir + "/s2.safetensors"))
    }

    func testRefusals() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "short".write(toFile: dir + "/short.txt", atomically: true, encoding: .utf8)
        try "".write(toFile: dir + "/empty.txt", atomically: true, encoding: .utf8)
        let out = dir + "/s.safetensors"
        let cases: [([String], String)] = [
            (["--data", dir + "/missing.txt", "--out", out], "missing.txt"),
            (["--data", dir + "/empty.txt", "--out", out], "empty"),
            (["--data", dir + "/short.txt", "--seq-len", "64", "--out", out], "too short"),
            (["--data", dir + "/short.txt", "--out", dir + "/short.txt"], "overwrite"),
            (["--data", dir + "/short.txt", "--out", dir + "/no/dir/s.safetensors"], "does not exist"),
        ]
        for (args, mention) in cases {
            let r = try CLI.run(["calibrate", "--model", tiny] + args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(mention), "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        }
        XCTAssertNotEqual(try CLI.run(["calibrate", "--model", tiny, "--data", dir + "/short.txt", "--seq-len", "0", "--out", out]).status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertEqual(try String(contentsOfFile: dir + "/short.txt", encoding: .utf8), "short")
    }
}
