import Foundation
import MambaCalibration
import MambaQuantization
import MambaTransforms
import TestSupport
import XCTest

/// One table for a tied embedding and head (QuantizedModel.tiedHead, docs/DESIGN.md section 2):
/// the lookup from the head's packed panels equals the plain one, a tied source's checkpoint
/// stores the table once with the head-input matrix, and it runs as quantized.
final class TiedHeadTests: XCTestCase {
    /// PackedTableEmbedding (rows read back from int8 or int4 panels, scales per row or group)
    /// gives QuantizedEmbedding's floats on random tables of odd shapes.
    func testPackedTableLookupEqualsThePlainLookup() {
        var rng = SeededRandom(seed: freshSeed())
        for (rows, cols, bits, group) in [(37, 45, 8, nil), (50, 64, 4, nil), (33, 96, 4, 32), (17, 40, 8, 8), (300, 12, 4, 8)] as [(Int, Int, Int, Int?)] {
            let w = Matrix(rows: rows, cols: cols, data: (0..<(rows * cols)).map { _ in rng.nextGaussian() })
            let q = QuantizedMatrix(quantizing: w, bits: bits, groupSize: group)
            let tokens = [0, rows - 1] + (0..<20).map { _ in Int(rng.next() % UInt64(rows)) }
            let want = QuantizedEmbedding(table: q).forward(tokens)
            let got = PackedTableEmbedding(table: PackedInt8Matrix(q)).forward(tokens)
            XCTAssertEqual(got.storage, want.storage, "[\(rows), \(cols)] bits \(bits) group \(String(describing: group))")
        }
    }

    /// A tied source: the head is the embedding's table (the head's bits and groups), stored once,
    /// beside the head-input matrix (F16); the checkpoint is format 4, reads back with the same logits
    /// on both runtimes, and the int8 runtime's lookup reads the head's panels. Kept float, the
    /// head is a float copy of the table beside the int8 embedding (two tables, as untied).
    func testTiedSourceStoresOneTable() throws {
        let source = Fixtures.model("tiny-tied")
        let w = try MambaWeights.load(directory: source)
        XCTAssertNil(w.lmHead)
        let stats = try calibratedStats(w, text: (0..<400).map { ($0 * 7 + $0 / 9) % 50 }, samples: 4, seqLength: 24, seed: 3)
        let tokens = (0..<29).map { ($0 * 11 + 3) % 50 }
        let (d, v) = (w.config.hiddenSize, w.config.vocabSize)
        var keptFloat = QuantizationRecipe(method: .mambaquant)
        keptFloat.keepFloat = ["lm_head"]
        let recipes = [QuantizationRecipe(method: .mambaquant), QuantizationRecipe(method: .rtn, bits: .init(weight: 4, activation: 8), groupSize: 8),
                       QuantizationRecipe(method: .hadamard, bits: .init(weight: 4, activation: 8)), keptFloat]
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (k, recipe) in recipes.enumerated() {
            let label = "\(recipe.method) \(recipe.bits) \(recipe.tag)"
            let q = try QuantizedModel.quantize(weights: w, stats: stats, recipe: recipe, parallelism: .serial)
            let tied = recipe.keepFloat.isEmpty
            XCTAssertEqual(q.tiedHead, tied, label)
            XCTAssertEqual(q.headInput?.shape, [d, d], label)
            if tied {
                XCTAssertEqual(q.lmHead.weight, q.embedding, label)
                XCTAssertEqual(q.embedding.bits, recipe.bits.weight, label)
                XCTAssertEqual(q.embedding.groupSize, recipe.groupSize, label)
            } else {
                XCTAssertEqual(q.embedding.bits, 8, label)
                XCTAssertEqual(q.lmHead.floatWeight?.shape, [v, d], label)
            }
            let out = dir + "/q\(k)"
            try q.write(directory: out, sourceDirectory: source, provenance: .init(sourceSHA256: "s", statsSHA256: "t"))
            let store = try TensorStore(directory: out)
            XCTAssertEqual(store.contains("lm_head.weight"), !tied, label)
            XCTAssertTrue(store.contains("lm_head.input_transform"), label)
            let config = try MambaConfig.load(directory: out).json["quantization"]!.object!
            XCTAssertEqual(config["format_version"]?.int, 4, label)
            XCTAssertEqual(try store.view("lm_head.input_transform").dtype, .f16, "format 4 stores the head-input matrix in F16: \(label)")
            XCTAssertEqual(config["tied_head"]?.bool, tied, label)
            let file = try FileManager.default.attributesOfItem(atPath: out + "/model.safetensors")[.size] as! Int
            XCTAssertLessThan(file, q.weightBytes + 64 * 1024, "the table is stored once: \(label)")
            let loaded = try QuantizedModel.load(directory: out)
            XCTAssertEqual(loaded.tiedHead, tied, label)
            XCTAssertEqual(loaded.weightBytes, q.weightBytes, label)
            for runtime in [QuantizedRuntime.int8, .reference] {
                let want = try q.model(runtime: runtime).logits(tokens)
                XCTAssertEqual(try loaded.model(runtime: runtime).logits(tokens).storage, want.storage, "\(label) \(runtime)")
                XCTAssertEqual(try QuantizedModel.loadModel(directory: out, runtime: runtime).logits(tokens).storage, want.storage, "\(label) \(runtime)")
            }
            let int8 = try QuantizedModel.loadModel(directory: out, runtime: .int8)
            XCTAssertEqual(int8.embedding is PackedTableEmbedding, tied, label)
            let reference = try q.model(runtime: .reference).logits(tokens)
            XCTAssertLessThanOrEqual(maxAbsDifference(try q.model(runtime: .int8).logits(tokens).storage, reference.storage), 1e-3 * reference.absMax, label)
        }
    }
}
