import Foundation
import TestSupport
import XCTest

/// The command line as a user runs it: real binary, real files, exit codes and one-line errors.
final class CLITests: XCTestCase {
    let tiny = Fixtures.model("tiny-tied")

    func testGenerateGreedyFromTokensIsDeterministic() throws {
        let a = try CLI.run(["generate", "--model", tiny, "--tokens", "1,2,3", "--max-new-tokens", "6"])
        XCTAssertEqual(a.status, 0, a.stderr)
        let b = try CLI.run(["generate", "--model", tiny, "--tokens", "1,2,3", "--max-new-tokens", "6", "--threads", "1"])
        XCTAssertEqual(a.stdout, b.stdout)
        XCTAssertFalse(a.stdout.isEmpty)
    }

    func testGeneratePromptStreamsText() throws {
        let r = try CLI.run(["generate", "--model", tiny, "--prompt", "ROMEO:", "--max-new-tokens", "5",
                             "--temperature", "0.8", "--top-k", "20", "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("ROMEO:"), r.stdout)
    }

    func testLogitsOutMatchesTransformers() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ref = try SafeTensorsFile(path: tiny + "/reference.safetensors")
        let ids = try ref.view("input_ids").integers()
        let out = dir + "/logits.safetensors"
        let r = try CLI.run(["generate", "--model", tiny, "--tokens", ids.map(String.init).joined(separator: ","),
                             "--max-new-tokens", "0", "--logits-out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ours = try SafeTensorsFile(path: out).view("logits")
        let theirs = try ref.view("logits").tensor()
        XCTAssertEqual(ours.shape, theirs.shape)
        XCTAssertLessThanOrEqual(maxAbsDifference(try ours.floats(), theirs.storage), 1e-4 * theirs.absMax)
    }

    func testTokenizeJSON() throws {
        let r = try CLI.run(["tokenize", "--tokenizer", Fixtures.tokenizers + "/gpt-neox-20b/tokenizer.json",
                             "--text", "Hello world", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        struct Ids: Decodable { let ids: [Int] }
        XCTAssertEqual(try JSONDecoder().decode(Ids.self, from: Data(r.stdout.utf8)).ids, [12092, 1533])
    }

    func testInspectJSON() throws {
        let r = try CLI.run(["inspect", Fixtures.model("tiny-untied-k3"), "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(obj?["convKernel"] as? Int, 3)
        XCTAssertEqual(obj?["tiedHead"] as? Bool, false)
        // Which kernels would run it here (the figures of a report name them).
        let runtime = obj?["runtime"] as? [String: String]
        XCTAssertFalse(runtime?["blas_core"]?.isEmpty ?? true, r.stdout)
        XCTAssertTrue(runtime?["int8_kernels"]?.hasPrefix("int8 (") ?? false, r.stdout)
    }

    /// Bits per weight: 8 x the safetensors bytes / the float model's parameters; a float32 file is
    /// just over 32 (headers and the norms), its int8 checkpoint near 8 plus scales and float parts.
    func testInspectCountsBitsPerWeight() throws {
        func summary(_ dir: String) throws -> [String: Any] {
            let r = try CLI.run(["inspect", dir, "--json"])
            XCTAssertEqual(r.status, 0, r.stderr)
            return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        }
        let float = try summary(Fixtures.model("tiny-tied"))
        let quantized = try summary(Fixtures.root + "/quantized/tiny-tied-mambaquant-w4a8-g8")
        XCTAssertEqual(float["modelParameters"] as? Int, float["parameters"] as? Int)
        XCTAssertEqual(quantized["modelParameters"] as? Int, float["parameters"] as? Int)
        let bits = (try XCTUnwrap(float["bitsPerWeight"] as? Double), try XCTUnwrap(quantized["bitsPerWeight"] as? Double))
        XCTAssertGreaterThan(bits.0, 32)
        XCTAssertLessThan(bits.0, 34)
        XCTAssertEqual(bits.1, 8 * Double(quantized["bytesOnDisk"] as! Int) / Double(float["parameters"] as! Int), accuracy: 1e-9)
        XCTAssertLessThan(bits.1, bits.0 / 2)
    }

    /// More windows than memory: refused before anything is allocated, nothing written.
    func testCalibrationThatCannotFitIsRefused() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run(["calibrate", "--model", tiny, "--samples", "100000000", "--seq-len", "100000", "--out", dir + "/s.safetensors"])
        XCTAssertNotEqual(r.status, 0)
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("MemAvailable") && r.stderr.contains("--samples"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/s.safetensors"))
    }

    func testInspectNamesTheFamilyAndDefaultedSettings() throws {
        let r = try CLI.run(["inspect", Fixtures.model("tiny-falcon-untied-bf16")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("falcon_mamba (falcon_mamba mixers)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("note: mixer_rms_eps absent from config.json"), r.stdout)
        let plain = try CLI.run(["inspect", Fixtures.model("tiny-falcon")])
        XCTAssertFalse(plain.stdout.contains("note:"), plain.stdout)
    }

    func testBadInputFailsWithOneLine() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let cases: [([String], String)] = [
            (["generate", "--model", "/no/such/model", "--tokens", "1"], "/no/such/model"),
            (["generate", "--model", Fixtures.bad("truncated"), "--tokens", "1"], "model.safetensors"),
            (["generate", "--model", Fixtures.bad("mamba2"), "--tokens", "1"], "in_proj.weight"),
            (["generate", "--model", tiny, "--tokens", "1,999"], "999"),
            (["generate", "--model", tiny, "--tokens", "1,x"], "x"),
            (["generate", "--model", Fixtures.model("tiny-untied-k3"), "--prompt", "hi"], "tokenizer.json"),
            (["generate", "--model", tiny, "--tokens", "1", "--logits-out", dir + "/missing/dir/l.safetensors"], "does not exist"),
        ]
        for (args, mention) in cases {
            let r = try CLI.run(args)
            XCTAssertNotEqual(r.status, 0, "\(args) succeeded")
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(mention), "\(args): \(r.stderr)")
        }
    }

    func testLogitsOutNeverOverwritesTheCheckpoint() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for f in ["config.json", "model.safetensors"] { try FileManager.default.copyItem(atPath: tiny + "/" + f, toPath: dir + "/" + f) }
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors"))
        let r = try CLI.run(["generate", "--model", dir, "--tokens", "1", "--logits-out", dir + "/model.safetensors"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors")), before)
    }

    /// bench on a checkpoint with --long-prompts: a prefill row per length (--tokens first) with both models'
    /// tokens/s and the scan's share of a step-by-step run.
    func testBenchLongPrompts() throws {
        let r = try CLI.run(["bench", "--model", Fixtures.model("tiny-tied"), "--runs", "1", "--tokens", "8", "--decode-steps", "2", "--gemm-rows", "",
                             "--long-prompts", "16,24", "--json", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let rows = report?["long_prompts"] as? [[String: Any]] ?? []
        XCTAssertEqual(rows.compactMap { $0["tokens"] as? Int }, [8, 16, 24])   // --tokens first, as the baseline row
        for row in rows {
            XCTAssertGreaterThan(row["int8_tokens_per_s"] as? Double ?? 0, 0)
            let share = row["scan_share_int8"] as? Double ?? -1
            XCTAssertTrue(share > 0 && share < 1, "\(row)")
        }
    }

    /// bench --read-bandwidth: the read test at 1...--threads threads, and decode's weight stream as
    /// a share of it at the run's thread count, for both models.
    func testBenchDecodeShareOfReadBandwidth() throws {
        let r = try CLI.run(["bench", "--model", Fixtures.model("tiny-tied"), "--runs", "1", "--tokens", "8", "--decode-steps", "2", "--gemm-rows", "",
                             "--read-bandwidth", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("memory read (256 MB, spinning workers): 1 thread "), r.stdout)
        let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("decode's weight stream at 1 thread: float32 ") }
        XCTAssertNotNil(line, r.stdout)
        // "float32 X GB/s (P% of the read), int8 Y GB/s (Q% of the read)": both rates positive.
        let rates = (line ?? "").components(separatedBy: " GB/s").dropLast().compactMap { Double($0.split(separator: " ").last ?? "") }
        XCTAssertEqual(rates.count, 2, String(line ?? ""))
        XCTAssertTrue(rates.allSatisfy { $0 > 0 }, String(line ?? ""))
    }
}
