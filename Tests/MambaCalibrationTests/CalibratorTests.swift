import Foundation
import MambaCalibration
import MambaModel
import MambaTensors
import TestSupport
import XCTest

final class CalibratorTests: XCTestCase {
    let config = MambaConfig(hiddenSize: 16, numLayers: 2, stateSize: 4, expand: 2, convKernel: 3, timeStepRank: 3, vocabSize: 40)

    func windows(_ n: Int, _ l: Int, seed: UInt64) throws -> CalibrationWindows {
        let text = (0..<300).map { ($0 * 7 + Int(seed)) % 40 }
        return try CalibrationWindows.draw(from: [("a", text), ("b", Array(text.prefix(30)))], samples: n, seqLength: l, seed: seed)
    }

    func testEverySiteIsObservedWithItsChannels() throws {
        let lm = MambaLM(weights: randomWeights(config, seed: 2))
        let stats = try Calibrator.run(model: lm, windows: try windows(3, 20, seed: 1), parallelism: .serial)
        for layer in 0..<2 {
            XCTAssertEqual(Set(stats.sites.keys.filter { $0.layer == layer }.map(\.site)), Set(config.mixer(layer: layer).sites + [.residual]))
            for site in config.mixer(layer: layer).sites + [.residual] {
                let s = try stats.site(layer, site)
                let expected: Int = switch site {
                case .residual, .inProjInput: 16
                case .dtLow: 3
                case .B, .C: 4
                default: 32
                }
                XCTAssertEqual(s.channels, expected, "\(site)")
                XCTAssertEqual(s.count, 60)
                XCTAssertEqual(s.moments != nil, site == .dtLow, "\(site)")
            }
        }
        XCTAssertEqual(try stats.site(nil, .lmHeadInput).count, 60)
        XCTAssertEqual(stats.pooledResidual.count, 120)          // 2 layers x 60 tokens
        XCTAssertEqual(stats.pooledResidual.channels, 16)
    }

    func testThreadsAndSplittingDoNotChangeTheResult() throws {
        let lm = MambaLM(weights: randomWeights(config, seed: 3))
        let w = try windows(5, 16, seed: 9)
        let one = try Calibrator.run(model: lm, windows: w, parallelism: Parallelism(threads: 1))
        let two = try Calibrator.run(model: lm, windows: w, parallelism: Parallelism(threads: 2))
        XCTAssertTrue(one == two, "1 and 2 threads differ")
        // Two partial runs merged = one run over both (sums up to Double rounding).
        var first = try Calibrator.run(model: lm, windows: CalibrationWindows(seqLength: 16, windows: Array(w.windows[0..<2])), parallelism: .serial)
        first.merge(try Calibrator.run(model: lm, windows: CalibrationWindows(seqLength: 16, windows: Array(w.windows[2...])), parallelism: .serial))
        XCTAssertEqual(first.sites.keys.sorted(), one.sites.keys.sorted())
        for (k, s) in one.sites {
            let f = first.sites[k]!
            XCTAssertTrue(f.range == s.range && f.histogram == s.histogram && f.count == s.count, "\(k)")
            XCTAssertLessThan(zip(f.sum, s.sum).map { abs($0 - $1) }.max()!, 1e-9 * max(1, s.sum.map(abs).max()!), "\(k)")
        }
        let (a, b) = (first.pooledResidual.secondMoment, one.pooledResidual.secondMoment)
        XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()!, 1e-9 * b.map(abs).max()!)
    }

    func testASecondPassWithoutKLTMomentsGathersTheSameRangesAndOnlyItsHessians() throws {
        let lm = MambaLM(weights: randomWeights(config, seed: 11))
        let w = try windows(4, 18, seed: UInt64.random(in: 0..<1000))
        let calibration = try Calibrator.run(model: lm, windows: w, parallelism: Parallelism(threads: 2))
        let streams = WindowStreams(try lm.embed(w.windows), config: config, parallelism: Parallelism(threads: 2),
                                    hessianSites: [.outProjInput, .dtLow], kltMoments: false)
        for i in 0..<config.numLayers {
            try streams.advance(through: lm.blocks[i], layer: i)
            if i == 0 { streams.dropHessians(layer: i) }
        }
        let pass = streams.stats
        XCTAssertEqual(pass.sites.keys.sorted(), calibration.sites.keys.filter { $0.layer != nil }.sorted())
        for (k, s) in pass.sites {
            let c = calibration.sites[k]!
            XCTAssertTrue(s.range == c.range && s.histogram == c.histogram && s.sum == c.sum && s.count == c.count, "\(k)")
            // No KLT moments (dt path, pooled residual); the Hessians only where asked and not yet
            // dropped, a KLT site's too (dt_proj's input when GPTQ rounds it).
            XCTAssertEqual(s.moments != nil, [.outProjInput, .dtLow].contains(k.site) && k.layer == 1, "\(k)")
        }
        XCTAssertTrue(try pass.site(1, .dtLow).moments == calibration.site(1, .dtLow).moments)
        XCTAssertEqual(pass.pooledResidual.count, 0)
        XCTAssertEqual(pass.pooledResidual.channels, 0)
        XCTAssertGreaterThan(try pass.site(1, .outProjInput).moments!.count, 0)
    }

    func testWindowsAreSeededAndStayInsideFiles() throws {
        let a = try windows(50, 25, seed: 4), b = try windows(50, 25, seed: 4), c = try windows(50, 25, seed: 5)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
        // File "b" has 30 tokens: windows from it are its own consecutive tokens, never a join.
        let text = (0..<300).map { ($0 * 7 + 4) % 40 }
        for w in a.windows {
            XCTAssertEqual(w.count, 25)
            let starts = (0...(300 - 25)).filter { Array(text[$0..<($0 + 25)]) == w }
            XCTAssertFalse(starts.isEmpty)
        }
    }

    func testBadDataIsRefused() {
        XCTAssertThrowsError(try CalibrationWindows.draw(from: [("x.txt", [1, 2, 3])], samples: 2, seqLength: 10, seed: 0)) {
            XCTAssertTrue("\($0)".contains("too short"), "\($0)")
        }
        XCTAssertThrowsError(try CalibrationWindows.draw(from: [("empty.txt", [])], samples: 2, seqLength: 10, seed: 0)) {
            XCTAssertTrue("\($0)".contains("empty.txt"), "\($0)")
        }
        XCTAssertThrowsError(try CalibrationWindows.draw(from: [("x.txt", [1, 2, 3])], samples: 2, seqLength: 0, seed: 0))
        XCTAssertThrowsError(try CalibrationWindows.draw(from: [], samples: 2, seqLength: 4, seed: 0))
    }
}
