import Foundation
import MambaCalibration
import MambaModel
import MambaTensors
import TestSupport
import XCTest

final class StatsFileTests: XCTestCase {
    func testRoundTripIsExactAndDeterministic() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = MambaConfig(hiddenSize: 16, numLayers: 2, stateSize: 4, vocabSize: 30)
        let lm = MambaLM(weights: randomWeights(c, seed: 1))
        let w = try CalibrationWindows.draw(from: [("t", (0..<100).map { $0 % 30 })], samples: 3, seqLength: 12, seed: 2)
        let stats = try Calibrator.run(model: lm, windows: w, parallelism: .serial)
        let file = StatsFile(stats: stats, windows: w, provenance: .init(checkpointSHA256: "abc", dataSHA256: "def", dataFiles: ["t"], seed: 2))
        try file.write(to: dir + "/a.safetensors")
        try file.write(to: dir + "/b.safetensors")
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/a.safetensors"), FileManager.default.contents(atPath: dir + "/b.safetensors"))
        let back = try StatsFile.read(path: dir + "/a.safetensors")
        XCTAssertEqual(back.windows, w)
        XCTAssertEqual(back.provenance, file.provenance)
        XCTAssertEqual(back.stats.sites.keys.sorted(), stats.sites.keys.sorted())
        for (k, s) in stats.sites {
            let b = back.stats.sites[k]!
            XCTAssertEqual(b.range, s.range, "\(k)")
            XCTAssertEqual(b.histogram, s.histogram)
            XCTAssertEqual(b.sum, s.sum)
            XCTAssertEqual(b.count, s.count)
            XCTAssertEqual(b.moments?.secondMoment, s.moments?.secondMoment)
        }
        XCTAssertEqual(back.stats.pooledResidual.secondMoment, stats.pooledResidual.secondMoment)
        XCTAssertThrowsError(try back.checkBelongs(toCheckpointSHA256: "other", checkpoint: "m")) {
            XCTAssertTrue("\($0)".contains("another checkpoint"), "\($0)")
        }
    }

    func testNotAStatsFileIsRefused() throws {
        XCTAssertThrowsError(try StatsFile.read(path: Fixtures.model("tiny-tied") + "/model.safetensors")) {
            XCTAssertTrue("\($0)".contains("not a mambaquant stats file"), "\($0)")
        }
        XCTAssertThrowsError(try StatsFile.read(path: "/no/such.safetensors")) {
            XCTAssertEqual(($0 as? MambaError)?.kind, .missingFile)
        }
    }

    /// A stats file whose tensors were tampered with (empty count, wrong shapes, Inf, NaN) is
    /// refused naming the tensor, before any transform could trap on it.
    func testTamperedTensorsAreNamed() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = MambaConfig(hiddenSize: 16, numLayers: 2, stateSize: 4, vocabSize: 30)
        let w = try CalibrationWindows.draw(from: [("t", (0..<100).map { $0 % 30 })], samples: 2, seqLength: 12, seed: 2)
        let stats = try Calibrator.run(model: MambaLM(weights: randomWeights(c, seed: 1)), windows: w, parallelism: .serial)
        let good = dir + "/good.safetensors"
        try StatsFile(stats: stats, windows: w, provenance: .init(checkpointSHA256: "a", dataSHA256: "b", dataFiles: ["t"], seed: 2)).write(to: good)
        let f = try SafeTensorsFile(path: good)
        /// The file again with `name` replaced (nil: removed).
        func tampered(_ name: String, _ replacement: (dtype: DType, shape: [Int], bytes: [UInt8])?) throws -> String {
            var out = SafeTensorsWriter(metadata: f.metadata)
            for n in f.names {
                let v = try f.view(n)
                if n == name {
                    if let r = replacement { out.add(n, dtype: r.dtype, shape: r.shape, bytes: r.bytes) }
                } else {
                    out.add(n, dtype: v.dtype, shape: v.shape, bytes: Array(v.bytes))
                }
            }
            let path = dir + "/t.safetensors"
            try out.write(to: path)
            return path
        }
        func f32(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
        func f64(_ values: [Double]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
        let channels = try f.view("layers.0.x.absmax").count
        let cases: [(String, (dtype: DType, shape: [Int], bytes: [UInt8])?, String)] = [
            ("layers.0.x.count", (.i64, [0], []), "layers.0.x.count must hold one non-negative integer"),
            ("layers.0.x.sum", (.f64, [3], f64([1, 2, 3])), "layers.0.x.sum has shape [3]"),
            ("layers.1.dt_low.sumsq_matrix", (.f64, [0], []), "layers.1.dt_low.sumsq_matrix has shape [0]"),
            ("layers.0.x.absmax", (.f32, [channels], f32([Float](repeating: .infinity, count: channels))), "layers.0.x.absmax holds inf"),
            ("residual.sumsq_matrix", (.f64, [16, 16], f64([Double](repeating: .nan, count: 256))), "residual.sumsq_matrix holds nan"),
            ("layers.0.x.absmax", (.f32, [], f32([1])), "expected [channels]"),
            ("residual.count", nil, "residual.count must hold one non-negative integer"),
        ]
        for (name, replacement, needle) in cases {
            XCTAssertThrowsError(try StatsFile.read(path: try tampered(name, replacement)), name) { e in
                XCTAssertTrue("\(e)".contains(needle), "\(e)")
            }
        }
    }
}
