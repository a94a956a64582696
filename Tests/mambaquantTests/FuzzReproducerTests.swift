import Foundation
import TestSupport
import XCTest

/// Every input that once crashed the tool under scripts/fuzz.sh (Tests/Fixtures/fuzz/TARGET/*),
/// replayed through the command a user would run it with: it must end in one clean line (or run),
/// never a trap, a signal or a backtrace.
final class FuzzReproducerTests: XCTestCase {
    let tiny = Fixtures.model("tiny-tied")
    let quantized = Fixtures.root + "/quantized/tiny-tied-mambaquant-w8a8"

    /// The command that reads `input` as the fuzz target's kind of file.
    func command(_ target: String, _ input: String, _ dir: String) throws -> [String] {
        let fm = FileManager.default
        let model = dir + "/m"
        switch target {
        case "config":
            try fm.copyItem(atPath: tiny, toPath: model)
            try fm.removeItem(atPath: model + "/config.json")
            try fm.copyItem(atPath: input, toPath: model + "/config.json")
            return ["generate", "--model", model, "--tokens", "1,2", "--max-new-tokens", "1"]
        case "safetensors":
            try fm.copyItem(atPath: tiny, toPath: model)
            try fm.removeItem(atPath: model + "/model.safetensors")
            try fm.copyItem(atPath: input, toPath: model + "/model.safetensors")
            return ["generate", "--model", model, "--tokens", "1,2", "--max-new-tokens", "1"]
        case "tokenizer":
            try fm.copyItem(atPath: tiny, toPath: model)
            try fm.copyItem(atPath: input, toPath: model + "/tokenizer.json")
            return ["tokenize", "--model", model, "--text", "Hello, world!"]
        case "stats":
            return ["quantize", "--model", tiny, "--stats", input, "--quiet", "--out", dir + "/q"]
        case "quantized-config":
            try fm.copyItem(atPath: quantized, toPath: model)
            try fm.removeItem(atPath: model + "/config.json")
            try fm.copyItem(atPath: input, toPath: model + "/config.json")
            return ["generate", "--model", model, "--tokens", "1,2", "--max-new-tokens", "1"]
        default:
            throw XCTSkip("no command for fuzz target \(target)")
        }
    }

    func testEveryCommittedReproducerEndsInOneCleanLine() throws {
        let root = Fixtures.root + "/fuzz"
        let targets = try FileManager.default.contentsOfDirectory(atPath: root).sorted()
        var replayed = 0
        for target in targets {
            for name in try FileManager.default.contentsOfDirectory(atPath: root + "/" + target).sorted() {
                let dir = try makeTemporaryDirectory()
                defer { try? FileManager.default.removeItem(atPath: dir) }
                let r = try CLI.run(try command(target, root + "/" + target + "/" + name, dir))
                let what = "\(target)/\(name)"
                XCTAssertTrue(r.status == 0 || r.status == 1, "\(what): status \(r.status)\n\(r.stderr.prefix(2000))")
                if r.status != 0 {
                    let lines = r.stderr.split(separator: "\n")
                    XCTAssertEqual(lines.count, 1, "\(what): \(r.stderr.prefix(2000))")
                    XCTAssertTrue(lines.first?.hasPrefix("Error: ") == true, "\(what): \(r.stderr.prefix(2000))")
                }
                replayed += 1
            }
        }
        XCTAssertGreaterThan(replayed, 0)
    }
}
