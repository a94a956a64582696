import Foundation
import MambaTensors
import TestSupport
import XCTest

/// The streaming writer: one shard is the in-memory writer's file with its header padded to a page;
/// past the shard limit it writes Hugging Face's sharded layout, which TensorStore reads back as one
/// set; the header inserted in place and the copy give the same bytes.
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
        XCTAssertTrue(try sameTensorFile(dir + "/memory.safetensors", dir + "/model.safetensors"))
        let (header, data) = try safeTensorsParts(dir + "/model.safetensors")
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: dir + "/model.safetensors")[.size] as? Int)
        XCTAssertEqual((size - data.count) % ShardedSafeTensorsWriter.dataAlignment, 0, "the data starts at a page")
        XCTAssertLessThan(size - data.count - 8 - header.count, ShardedSafeTensorsWriter.dataAlignment)
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

    /// Several shards of a few pages each, with a tensor ending mid-page: inserting each header in
    /// place and copying write the same files, and on ext4 or XFS (FALLOC_FL_INSERT_RANGE) every
    /// shard went in place, leaving no data file behind.
    func testHeadersInPlaceAndCopiedGiveTheSameFiles() throws {
        let seed = freshSeed()
        // 3,600 to 10,788 bytes each: always three shards or more of 12,000.
        let ts = (0..<9).map { i in ("layers.\(i).w", randomTensor([300 + (Int(seed) + 7 * i) % 600, 3], seed: seed &+ UInt64(i))) }
        var written: [[String: [UInt8]]] = []
        for inPlace in [true, false] {
            let out = dir + "/\(inPlace)"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
            let stream = ShardedSafeTensorsWriter(directory: out, shardBytes: 12_000, metadata: ["format": "pt"], headersInPlace: inPlace)
            for (name, t) in ts { try stream.add(name, t) }
            try stream.finish()
            XCTAssertGreaterThan(stream.fileNames.count, 1)
            if !inPlace || !Self.canInsertRanges(out) { XCTAssertEqual(stream.shardsWrittenInPlace, 0) }
            else { XCTAssertEqual(stream.shardsWrittenInPlace, stream.fileNames.count) }
            let files = try FileManager.default.contentsOfDirectory(atPath: out)
            XCTAssertEqual(Set(files), Set(stream.fileNames + ["model.safetensors.index.json"]))
            written.append(Dictionary(uniqueKeysWithValues: try files.map { ($0, [UInt8](try Data(contentsOf: URL(fileURLWithPath: out + "/" + $0)))) }))
            let store = try TensorStore(directory: out)
            for (name, t) in ts { XCTAssertEqual(try store.view(name).floats(), t.storage, name) }
        }
        XCTAssertEqual(written[0], written[1])
    }

    /// Whether `path` lies on ext4 or XFS (the longest mount point of /proc/mounts above it), whose
    /// FALLOC_FL_INSERT_RANGE takes 4 KiB blocks as made by default.
    static func canInsertRanges(_ path: String) -> Bool {
        guard let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return false }
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        var best = (point: "", type: "")
        for line in mounts.split(separator: "\n") {
            let f = line.split(separator: " ").map(String.init)
            guard f.count > 2, real == f[1] || real.hasPrefix(f[1] == "/" ? "/" : f[1] + "/"), f[1].count > best.point.count else { continue }
            best = (f[1], f[2])
        }
        return ["ext4", "xfs"].contains(best.type)
    }
}
