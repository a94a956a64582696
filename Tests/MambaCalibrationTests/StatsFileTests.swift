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
}
