import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import TestSupport
import XCTest

/// `mambaquant compare` on the tiny fixture: the JSON schema, the cache, the plot, the refusals.
final class CompareCommandTests: XCTestCase {
    let tiny = Fixtures.model("tiny-tied")

    func testJSONReportOnTheFixture() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = String(repeating: "The quality of mercy is not strained.\nIt droppeth as the gentle rain from heaven\n", count: 12)
        try text.write(toFile: dir + "/eval.txt", atomically: true, encoding: .utf8)
        try text.write(toFile: dir + "/calib.txt", atomically: true, encoding: .utf8)
        let args = ["compare", "--model", tiny, "--methods", "rtn,mambaquant", "--bits", "w8a8,w4a8", "--data", dir + "/eval.txt",
                    "--calib-data", dir + "/calib.txt", "--calib-samples", "2", "--calib-seq-len", "24", "--seq-len", "32",
                    "--max-tokens", "160", "--task-items", "6", "--no-speed", "--quiet", "--cache-dir", dir + "/cache"]
        try #"{"source": "llama.cpp (made up for the test)", "points": [{"name": "Q8_0", "bits_per_weight": 8.5, "kl": 0.0001}]}"#
            .write(toFile: dir + "/points.json", atomically: true, encoding: .utf8)
        let r = try CLI.run(args + ["--format", "json", "--out", dir + "/report.json", "--plot", dir + "/plot.svg", "--plot-reference", dir + "/points.json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/report.json"))) as! [String: Any]
        XCTAssertEqual(json["schema_version"] as? Int, 2)
        let data = json["data"] as! [String: Any]
        XCTAssertEqual(data["files"] as? [String], [dir + "/eval.txt"])
        XCTAssertEqual(data["tokens"] as? Int, 155)                  // 5 windows of 32 tokens, 31 scored each
        let results = json["results"] as! [[String: Any]]
        XCTAssertEqual(results.map { "\($0["method"]!) \($0["bits"]!)" }, ["none fp32", "rtn w8a8", "rtn w4a8", "mambaquant w8a8", "mambaquant w4a8"])
        for key in ["name", "perplexity", "bits_per_token", "bits_per_byte", "kl", "top1_agreement", "last_word_accuracy", "choice_accuracy",
                    "task_sizes", "confidence_intervals", "weight_bytes"] {
            XCTAssertNotNil(results[1][key], key)
        }
        XCTAssertEqual(results[0]["kl"] as? Double, 0)
        XCTAssertGreaterThan(results[2]["kl"] as! Double, 0)
        XCTAssertLessThan(results[1]["weight_bytes"] as! Int, results[0]["weight_bytes"] as! Int)
        // Bits per weight: float32 is 32; int8 with its scales and float parts more than 8 on a
        // model this small, w4 less than w8.
        let bits = results.map { $0["bits_per_weight"] as! Double }
        XCTAssertEqual(bits[0], 32, accuracy: 1e-9)
        XCTAssertGreaterThan(bits[1], 8)
        XCTAssertLessThan(bits[1], 32)
        XCTAssertLessThan(bits[2], bits[1])
        XCTAssertEqual(bits[1], 8 * Double(results[1]["weight_bytes"] as! Int) / (Double(results[0]["weight_bytes"] as! Int) / 4), accuracy: 1e-9)
        let sites = json["sites"] as! [[String: Any]]
        XCTAssertFalse(sites.isEmpty)
        XCTAssertNotNil(sites[0]["sqnr_db"] as? Double)
        let svg = try String(contentsOfFile: dir + "/plot.svg", encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<svg"))
        // The size panel: every quantized row and the reference point.
        XCTAssertTrue(svg.contains("KL from float against bits per weight"), svg)
        XCTAssertTrue(svg.contains(">Q8_0</text>") && svg.contains("llama.cpp (made up for the test)"), svg)
        XCTAssertTrue(svg.contains(">mambaquant w4a8</text>"), svg)
        // Well-formed XML (a browser shows nothing otherwise).
        let parser = XMLParser(contentsOf: URL(fileURLWithPath: dir + "/plot.svg"))!
        XCTAssertTrue(parser.parse(), "plot.svg is not well-formed: \(parser.parserError.map { "\($0)" } ?? "?")")
        // The second run finds the calibration in the cache and prints Markdown.
        let md = try CLI.run(Array(args.filter { $0 != "--quiet" }))
        XCTAssertEqual(md.status, 0, md.stderr)
        XCTAssertTrue(md.stderr.contains("calibration from cache"), md.stderr)
        XCTAssertTrue(md.stdout.contains("| mambaquant | w8a8 |"), md.stdout)
    }

    func testRefusals() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "some text here\n".write(toFile: dir + "/t.txt", atomically: true, encoding: .utf8)
        let base = ["compare", "--model", tiny, "--data", dir + "/t.txt", "--calib-data", dir + "/t.txt", "--no-speed", "--quiet"]
        let cases: [([String], String)] = [
            (["--methods", "gptq"], "gptq"),
            (["--methods", "rtn", "--bits", "w2a8"], "w2a8"),
            (["--quantized", tiny], "quantization"),
            (["--data", dir + "/missing.txt"], "missing.txt"),
            (["--out", dir + "/t.txt"], "overwrite"),
            (["--plot-reference", dir + "/t.txt"], "--plot"),
            (["--plot", dir + "/p.svg", "--plot-reference", dir + "/t.txt"], "bits_per_weight"),
            (["--plot", dir + "/p.svg", "--plot-reference", dir + "/none.json"], "none.json"),
        ]
        for (args, mention) in cases {
            let r = try CLI.run(base + args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(mention), "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(args): \(r.stderr)")
        }
        XCTAssertEqual(try String(contentsOfFile: dir + "/t.txt", encoding: .utf8), "some text here\n")
    }

    /// Two checkpoints of one method and bit width that differ in their recipe (static vs dynamic
    /// scales) are two rows, each naming its recipe, never one row with a seed spread.
    func testCheckpointsWithOtherRecipesAreSeparateRows() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = String(repeating: "The quality of mercy is not strained.\n", count: 20)
        try text.write(toFile: dir + "/t.txt", atomically: true, encoding: .utf8)
        let c = try CLI.run(["calibrate", "--model", tiny, "--data", dir + "/t.txt", "--samples", "2", "--seq-len", "24", "--quiet", "--out", dir + "/s.safetensors"])
        XCTAssertEqual(c.status, 0, c.stderr)
        for (name, extra) in [("static", [String]()), ("dynamic", ["--act-scale", "dynamic"])] {
            let q = try CLI.run(["quantize", "--model", tiny, "--stats", dir + "/s.safetensors", "--method", "rtn", "--quiet", "--out", dir + "/" + name] + extra)
            XCTAssertEqual(q.status, 0, q.stderr)
        }
        let r = try CLI.run(["compare", "--model", tiny, "--quantized", dir + "/static", "--quantized", dir + "/dynamic", "--data", dir + "/t.txt",
                             "--seq-len", "32", "--max-tokens", "96", "--task-items", "0", "--no-speed", "--quiet", "--format", "json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let rows = (json["results"] as! [[String: Any]]).filter { $0["method"] as? String == "rtn" }
        XCTAssertEqual(rows.map { $0["name"] as! String }, ["static", "dynamic [dynamic]"])
        XCTAssertTrue((rows[0]["recipe"] as! String).contains("static activation scales"), "\(rows[0])")
        XCTAssertTrue((rows[1]["recipe"] as! String).contains("dynamic per-token"), "\(rows[1])")
        XCTAssertTrue(rows.allSatisfy { $0["seed_spread"] == nil }, "no seed spread between different recipes")
    }

    /// --budget: one row per variant, named for what it isolates, the baseline first.
    func testBudgetRowsNameWhatTheyIsolate() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try String(repeating: "The quality of mercy is not strained.\n", count: 20).write(toFile: dir + "/t.txt", atomically: true, encoding: .utf8)
        let r = try CLI.run(["compare", "--model", tiny, "--budget", "--data", dir + "/t.txt", "--calib-data", dir + "/t.txt", "--calib-samples", "2",
                             "--calib-seq-len", "24", "--seq-len", "32", "--max-tokens", "64", "--task-items", "0", "--no-speed", "--quiet",
                             "--format", "json", "--cache-dir", dir + "/cache"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let names = (json["results"] as! [[String: Any]]).map { $0["name"] as! String }
        XCTAssertEqual(names.first, "float")
        XCTAssertEqual(names.dropFirst().first, "baseline: all sites, static per-tensor")
        for expected in ["only in_proj", "only ssm_inputs.dt", "activations: dynamic, blocks of 32", "dynamic per token + Q8_0's float set", "method: rtn"] {
            XCTAssertTrue(names.contains(expected), "\(expected) in \(names)")
        }
        XCTAssertFalse(names.contains { $0.hasPrefix("8 bits alone") }, "per-module width rows are a 4-bit budget's")

        // At 4 bits, each layer's modules and the head alone at 8 bits, a row each (tiny-tied: 2 layers of 4 modules).
        let w4 = try CLI.run(["compare", "--model", tiny, "--budget", "--bits", "w4a8", "--data", dir + "/t.txt", "--calib-data", dir + "/t.txt",
                              "--calib-samples", "2", "--calib-seq-len", "24", "--seq-len", "32", "--max-tokens", "64", "--task-items", "0", "--no-speed",
                              "--quiet", "--format", "json", "--cache-dir", dir + "/cache"])
        XCTAssertEqual(w4.status, 0, w4.stderr)
        let rows = (try JSONSerialization.jsonObject(with: Data(w4.stdout.utf8)) as! [String: Any])["results"] as! [[String: Any]]
        let widths = rows.map { $0["name"] as! String }.filter { $0.hasPrefix("8 bits alone: ") }
        XCTAssertEqual(Set(widths), Set((0..<2).flatMap { i in ["in_proj", "conv1d", "x_proj", "dt_proj", "out_proj"].map { "8 bits alone: backbone.layers.\(i).mixer.\($0)" } } + ["8 bits alone: lm_head"]))
    }
}
