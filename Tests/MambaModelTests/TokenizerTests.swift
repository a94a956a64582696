import Foundation
import MambaModel
import TestSupport
import XCTest

/// The tokenizer against the `tokenizers` library (Tests/Fixtures/tokenizers/gpt-neox-20b/cases.json,
/// written by scripts/reference/make_fixtures.py) and the byte-level tokenizer.json of byte models.
final class TokenizerTests: XCTestCase {
    struct Case: Decodable { let text: String; let ids: [Int]; let decoded: String }
    struct Cases: Decodable { let cases: [Case] }

    func testGPTNeoXMatchesTokenizersLibrary() throws {
        let dir = Fixtures.tokenizers + "/gpt-neox-20b"
        let tok = try Tokenizer(contentsOf: dir + "/tokenizer.json")
        XCTAssertEqual(tok.endOfText, 0)
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/cases.json"))).cases
        XCTAssertGreaterThan(cases.count, 10)
        for c in cases {
            XCTAssertEqual(tok.encode(c.text), c.ids, "encode \(c.text.debugDescription)")
            XCTAssertEqual(tok.decode(c.ids, skipSpecial: false), c.decoded, "decode \(c.text.debugDescription)")
        }
    }

    func testByteTokenizerIsIdentityOnBytes() throws {
        let tok = try Tokenizer(contentsOf: Fixtures.model("tiny-tied") + "/tokenizer.json")
        XCTAssertEqual(tok.vocabSize, 256)
        for text in ["ROMEO:\nBut soft!", "naïve 日本 🎭  two  spaces\t\r\n", " lead", ""] {
            XCTAssertEqual(tok.encode(text), Array(text.utf8).map(Int.init), text)
            XCTAssertEqual(tok.decode(Array(text.utf8).map(Int.init)), text)
        }
    }

    func testUTF8StreamNeverSplitsACharacter() {
        var stream = UTF8Stream()
        var out = ""
        for b in Array("a日🎭b".utf8) { out += stream.append([b]) }
        out += stream.flush()
        XCTAssertEqual(out, "a日🎭b")
        var s2 = UTF8Stream()
        XCTAssertEqual(s2.append(Array("日".utf8).prefix(2).map { $0 }), "")
    }

    func testMalformedTokenizerIsNamed() throws {
        XCTAssertThrowsError(try Tokenizer(data: Data("{\"model\": {\"type\": \"Unigram\"}}".utf8), source: "x/tokenizer.json")) { e in
            XCTAssertTrue("\(e)".contains("x/tokenizer.json"), "\(e)")
        }
    }

    /// Ids in the vocabulary or in added_tokens that are negative, fractional or far beyond the
    /// token count are refused by name (2^62 would allocate, 2^63-1 trapped).
    func testBadTokenIdsAreRefused() throws {
        let bundled = try XCTUnwrap(FileManager.default.contents(atPath: Fixtures.packageRoot + "/models/bard-mamba/tokenizer.json"))
        var json = try XCTUnwrap(JSONSerialization.jsonObject(with: bundled) as? [String: Any])
        XCTAssertNoThrow(try Tokenizer(data: bundled, source: "t"))
        for bad: Any in [-1, 4611686018427387904, Int.max, 3.5, "7"] {
            var model = json["model"] as! [String: Any]
            var vocab = model["vocab"] as! [String: Any]
            vocab["Ā"] = bad
            model["vocab"] = vocab
            json["model"] = model
            let data = try JSONSerialization.data(withJSONObject: json)
            XCTAssertThrowsError(try Tokenizer(data: data, source: "t/tokenizer.json"), "\(bad)") { e in
                XCTAssertTrue("\(e)".contains("token Ā"), "\(e)")
            }
        }
        json = try XCTUnwrap(JSONSerialization.jsonObject(with: bundled) as? [String: Any])
        json["added_tokens"] = [["id": -5, "content": "<x>", "special": true]]
        XCTAssertThrowsError(try Tokenizer(data: try JSONSerialization.data(withJSONObject: json), source: "t")) { e in
            XCTAssertTrue("\(e)".contains("token <x> has id -5"), "\(e)")
        }
    }
}
