import Foundation
import MambaTensors
import TestSupport
import XCTest

/// The streaming writer: one shard is byte for byte the in-memory writer's file; past the shard
/// limit it writes Hugging Face's sharded layout, which TensorStore reads back as one set.
final class SafeTensorsStreamTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTemporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// Odd sizes and dtypes from a fresh seed.
    func tensors() -> [(String, Tensor, DType)] {
        let seed = freshSeed(in: 1...1_000_000)
        return (0..<7).map { i in
            let shape = [1 + (Int(seed) + 3 * i) % 13, 1 + (Int(seed) / 7 + i) % 5]
            return ("t\(i).weight", randomTensor(shape, seed: seed &+ UInt64(i)), [DType.f32, .bf16, .f16][i % 3])
        }
    }

    func testOneShardIsTheInMemoryWritersFile() throws {
        let ts = tensors()
        var memory = SafeTensorsWriter(metadata: ["format": "pt", "x": "y"])
        let stream = ShardedSafeTensorsWriter(directory: dir, metadata: ["format": "pt", "x": "y"])
        for (name, t, dtype) in ts {
            memory.add(name, t, as: dtype)
            try stream.add(name, t, as: dtype)
        }
        try memory.write(to: dir + "/memory.safetensors")
        try stream.finish()
        XCTAssertEqual(stream.fileNames, ["model.safetensors"])
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: dir + "/memory.safetensors", andPath: dir + "/model.safetensors"))
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.hasSuffix(".data") })
    }

    func testShardsAndIndexReadBackAsOneStore() throws {
        let ts = tensors()
        let total = ts.reduce(0) { $0 + $1.1.count * $1.2.byteSize }
        let stream = ShardedSafeTensorsWriter(directory: dir, shardBytes: total / 3, metadata: ["format": "pt"])
        // A tensor larger than the limit goes alone into its own shard.
        let big = randomTensor([total / 4 + 1], seed: 3)
        for (name, t, dtype) in ts { try stream.add(name, t, as: dtype) }
        try stream.add("big", big)
        try stream.finish()
        XCTAssertGreaterThanOrEqual(stream.fileNames.count, 3)
        XCTAssertEqual(stream.fileNames.last, String(format: "model-%05d-of-%05d.safetensors", stream.fileNames.count, stream.fileNames.count))
        let store = try TensorStore(directory: dir)
        XCTAssertEqual(store.names.sorted(), (ts.map(\.0) + ["big"]).sorted())
        for (name, t, dtype) in ts {
            let v = try store.view(name)
            XCTAssertEqual(v.dtype, dtype)
            XCTAssertEqual(v.shape, t.shape)
            var expected = SafeTensorsWriter()
            expected.add("x", t, as: dtype)   // the same rounding
            try expected.write(to: dir + "/one.safetensors")
            XCTAssertEqual(try v.floats(), try SafeTensorsFile(path: dir + "/one.safetensors").view("x").floats(), name)
        }
        XCTAssertEqual(try store.view("big").floats(), big.storage)
        let index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))) as? [String: Any]
        XCTAssertEqual((index?["metadata"] as? [String: Any])?["total_size"] as? Int, stream.bytesWritten)
    }
}
