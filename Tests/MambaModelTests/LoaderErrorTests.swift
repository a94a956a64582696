import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// Each malformed checkpoint in Tests/Fixtures/bad fails with one line that names the problem.
final class LoaderErrorTests: XCTestCase {
    func expectLoadError(_ name: String, _ kind: MambaError.Kind, mentions words: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try MambaLM.load(directory: Fixtures.bad(name)), name, file: file, line: line) { error in
            guard let e = error as? MambaError else { return XCTFail("\(name): not a MambaError: \(error)", file: file, line: line) }
            XCTAssertEqual(e.kind, kind, "\(name): \(e)", file: file, line: line)
            XCTAssertFalse(e.message.contains("\n"), "\(name): more than one line", file: file, line: line)
            for w in words { XCTAssertTrue(e.message.contains(w), "\(name): \"\(e)\" does not mention \(w)", file: file, line: line) }
        }
    }

    func testMalformedCheckpointsAreNamed() {
        expectLoadError("truncated", .badFile, mentions: ["model.safetensors"])
        expectLoadError("bad-header", .badFile, mentions: ["model.safetensors", "header"])
        expectLoadError("wrong-shape", .shapeMismatch, mentions: ["backbone.layers.1.mixer.conv1d.weight", "[64, 1, 3]"])
        expectLoadError("missing-tensor", .missingTensor, mentions: ["backbone.layers.0.mixer.x_proj.weight"])
        expectLoadError("extra-tensor", .unusedTensor, mentions: ["backbone.layers.0.mixer.extra.weight"])
        expectLoadError("mamba2", .shapeMismatch, mentions: ["backbone.layers.0.mixer.in_proj.weight", "[164, 32]"])
    }

    func testMissingDirectoryAndConfig() throws {
        XCTAssertThrowsError(try MambaLM.load(directory: "/nonexistent/model")) { e in
            XCTAssertEqual((e as? MambaError)?.kind, .missingFile, "\(e)")
            XCTAssertTrue("\(e)".contains("/nonexistent/model"), "\(e)")
        }
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: Fixtures.model("tiny-tied") + "/model.safetensors", toPath: dir + "/model.safetensors")
        XCTAssertThrowsError(try MambaLM.load(directory: dir)) { e in
            XCTAssertEqual((e as? MambaError)?.kind, .missingFile, "\(e)")
            XCTAssertTrue("\(e)".contains("config.json"), "\(e)")
        }
    }
}
