import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// The memory-mapped checkpoint: validated at open without reading data, widened a layer at a
/// time to exactly what the whole-model loader gives, and refusing bad shards and non-finite weights.
final class CheckpointWeightsTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTemporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func testLayersEqualTheWholeModelLoad() throws {
        for name in ["tiny-untied-k3", "tiny-statespaces", "tiny-falcon-untied-bf16"] {
            let c = try CheckpointWeights(directory: Fixtures.model(name))
            let whole = try MambaWeights.load(directory: Fixtures.model(name))
            for i in 0..<c.config.numLayers {
                let l = try c.readLayer(i)
                XCTAssertEqual(l.norm.storage, whole.layers[i].norm.storage)
                XCTAssertEqual(l.mixer.tensors.keys.sorted(), whole.layers[i].mixer.tensors.keys.sorted())
                XCTAssertEqual(l.mixer.modules.keys.sorted(), whole.layers[i].mixer.modules.keys.sorted())
                for (spec, _) in l.mixer.spec.presentParameters(c.config) {
                    XCTAssertEqual(l.mixer.tensor(of: spec)?.storage, whole.layers[i].mixer.tensor(of: spec)?.storage, "\(name) \(spec.key)")
                }
            }
            XCTAssertEqual(c.parameterCount, whole.parameterCount, name)
            XCTAssertEqual(c.config.parameterCount, whole.parameterCount, name)
        }
    }

    /// Widening a model that cannot fit is refused before anything is read, pointing at the
    /// layer-at-a-time path.
    func testWholeFloatModelThatCannotFitIsRefused() throws {
        let c = try CheckpointWeights(directory: Fixtures.model("tiny-tied"))
        XCTAssertThrowsError(try c.all(available: 1000)) { error in
            XCTAssertEqual((error as? MambaError)?.kind, .outOfMemory)
            XCTAssertTrue("\(error)".contains("MemAvailable") && "\(error)".contains("quantize"), "\(error)")
        }
        XCTAssertNoThrow(try c.all(available: 1e12))
    }

    /// A BF16 weight with NaN or Inf is named when it is read, not run into NaN logits.
    func testNonFiniteWeightsAreNamed() throws {
        var w = MambaWeights.random(MambaConfig(hiddenSize: 16, numLayers: 2, vocabSize: 30), seed: 1)
        var dtProj = w.layers[1].mixer.module("dt_proj").floatWeight
        dtProj.storage[5] = .infinity
        w.layers[1].mixer.modules["dt_proj"]!.weight = .float(dtProj)
        try w.save(directory: dir, dtype: .bf16)
        let c = try CheckpointWeights(directory: dir)
        XCTAssertNoThrow(try c.readLayer(0))
        XCTAssertThrowsError(try c.readLayer(1)) { error in
            XCTAssertTrue("\(error)".contains("backbone.layers.1.mixer.dt_proj.weight"), "\(error)")
            XCTAssertTrue("\(error)".contains("finite"), "\(error)")
        }
        XCTAssertThrowsError(try MambaLM.load(directory: dir))
    }

    /// Shards that disagree with the index: a missing shard, a tensor in two shards, a truncated shard.
    func testShardsThatDisagreeWithTheIndex() throws {
        let source = Fixtures.model("tiny-statespaces")
        let files = try FileManager.default.contentsOfDirectory(atPath: source).filter { $0.hasPrefix("model-") }.sorted()
        XCTAssertEqual(files.count, 2)
        func copy(_ label: String) throws -> String {
            let d = dir + "/" + label
            try FileManager.default.copyItem(atPath: source, toPath: d)
            return d
        }
        let missing = try copy("missing")
        try FileManager.default.removeItem(atPath: missing + "/" + files[1])
        XCTAssertThrowsError(try CheckpointWeights(directory: missing)) { XCTAssertTrue("\($0)".contains(files[1]), "\($0)") }

        let truncated = try copy("truncated")
        let data = try Data(contentsOf: URL(fileURLWithPath: truncated + "/" + files[0]))
        try data.prefix(data.count - 100).write(to: URL(fileURLWithPath: truncated + "/" + files[0]))
        XCTAssertThrowsError(try CheckpointWeights(directory: truncated)) { XCTAssertTrue("\($0)".contains(files[0]), "\($0)") }

        // The first shard's tensors written into the second shard as well.
        let twice = try copy("twice")
        let first = try SafeTensorsFile(path: source + "/" + files[0]), second = try SafeTensorsFile(path: source + "/" + files[1])
        var w = SafeTensorsWriter(metadata: ["format": "pt"])
        for n in second.names { w.add(n, try second.view(n).tensor()) }
        w.add(first.names[0], try first.view(first.names[0]).tensor())
        try w.write(to: twice + "/" + files[1])
        XCTAssertThrowsError(try CheckpointWeights(directory: twice)) { error in
            XCTAssertTrue("\(error)".contains(first.names[0]) && "\(error)".contains("both"), "\(error)")
        }
    }
}
