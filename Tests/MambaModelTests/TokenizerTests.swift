import Foundation
import MambaModel
import TestSupport
import XCTest

/// The tokenizer against the `tokenizers` library (Tests/Fixtures/tokenizers/*/cases.json: GPT-NeoX's
/// written by scripts/reference/make_fixtures.py, the Llama-3-style and SentencePiece-style ones by
/// scripts/reference/make_tokenizer_fixtures.py) and the byte-level tokenizer.json of byte models.
final class TokenizerTests: XCTestCase {
    struct Case: Decodable {
        let text: String, ids: [Int], decoded: String
        /// tokenizers' encode with add_special_tokens (the post-processor's template); absent in
        /// GPT-NeoX's cases, whose post-processor adds none.
        let ids_with_special_tokens: [Int]?
    }
    struct Cases: Decodable { let cases: [Case] }

    /// Every case of Tests/Fixtures/tokenizers/NAME/cases.json encodes and decodes as `tokenizers` did.
    @discardableResult
    func assertMatchesCases(_ name: String, atLeast minimum: Int) throws -> Tokenizer {
        let dir = Fixtures.tokenizers + "/" + name
        let tok = try Tokenizer(contentsOf: dir + "/tokenizer.json")
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/cases.json"))).cases
        XCTAssertGreaterThan(cases.count, minimum, name)
        for c in cases {
            XCTAssertEqual(tok.encode(c.text), c.ids, "\(name) encode \(c.text.debugDescription)")
            XCTAssertEqual(tok.decode(c.ids, skipSpecial: false), c.decoded, "\(name) decode \(c.text.debugDescription)")
            XCTAssertEqual(tok.encode(c.text, addSpecialTokens: true), c.ids_with_special_tokens ?? c.ids, "\(name) encode with special tokens \(c.text.debugDescription)")
        }
        return tok
    }

    func testGPTNeoXMatchesTokenizersLibrary() throws {
        XCTAssertEqual(try assertMatchesCases("gpt-neox-20b", atLeast: 10).endOfText, 0)
    }

    /// The hybrids' tokenizer families: byte-level BPE behind a Split on Llama-3's regex with
    /// ignore_merges, and SentencePiece-style BPE (Prepend + Replace normalizers, byte fallback,
    /// the Strip decoder), on Unicode, whitespace runs, digits, emoji, code and added tokens.
    func testHybridTokenizerFamiliesMatchTokenizersLibrary() throws {
        for name in ["llama3-style", "sentencepiece-style"] { try assertMatchesCases(name, atLeast: 15) }
        // Their post-processors: Llama-3's BOS (in a Sequence beside ByteLevel), <s> ... </s>.
        XCTAssertEqual(try Tokenizer(contentsOf: Fixtures.tokenizers + "/llama3-style/tokenizer.json").specialPrefix, [0])
        let sp = try Tokenizer(contentsOf: Fixtures.tokenizers + "/sentencepiece-style/tokenizer.json")
        XCTAssertEqual([sp.specialPrefix, sp.specialSuffix], [[1], [2]])
    }

    /// A long word merges in O(n log n) and as the pairwise definition does: a SentencePiece-style
    /// tokenizer sees a whole line (here 69 kB) as one word.
    func testLongWordMerges() throws {
        let tok = try Tokenizer(contentsOf: Fixtures.tokenizers + "/sentencepiece-style/tokenizer.json")
        let line = String(repeating: "the king and the queen ", count: 3000)
        let ids = tok.encode(line)
        XCTAssertLessThan(ids.count, line.utf8.count / 2)
        XCTAssertEqual(tok.decode(ids), line)
        let short = tok.encode("the king and the queen the king")
        XCTAssertEqual(Array(ids.prefix(short.count - 2)), Array(short.prefix(short.count - 2)))
    }

    func testUnimplementedTokenizerStepsAreRefusedByName() throws {
        let base = #""model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}"#
        for (extra, name) in [(#""normalizer": {"type": "NFKC"}"#, "NFKC"), (#""pre_tokenizer": {"type": "Digits"}"#, "Digits"),
                              (#""pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Removed", "invert": false}"#, "Removed"),
                              (#""pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": false}"#, "regex"),
                              (#""decoder": {"type": "WordPiece"}"#, "WordPiece"), (#""post_processor": {"type": "BertProcessing"}"#, "BertProcessing"),
                              (#""post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {}}"#, "<s>")] {
            XCTAssertThrowsError(try Tokenizer(data: Data("{\(base), \(extra)}".utf8), source: "t"), extra) { e in
                XCTAssertTrue("\(e)".contains(name) && !"\(e)".contains("\n"), "\(e)")
            }
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
