import CMambaKernels
import Foundation
@testable import MambaModel
import MambaTensors
import TestSupport
import XCTest

final class SelectiveScanTests: XCTestCase {
    /// The fast kernel against the plain Double reference, on odd sizes (state not a multiple of
    /// 8, one time step, more steps than channels, N = 16 (sixteen channels per register, blocks split
    /// unevenly between two threads, tails, lengths across and off the 32-step tiles) and 32 for the
    /// AVX-512 paths), on every path this CPU has: AVX-512, AVX2 and the scalar fallback.
    func testFastScanMatchesReference() {
        let seed = freshSeed(in: 0...999999)
        KernelPaths.forEachFloatLevel { level in
            for (l, e, n) in [(1, 8, 16), (7, 13, 16), (33, 24, 5), (5, 17, 9), (64, 40, 16), (9, 7, 32), (11, 35, 16), (5, 48, 16),
                                 (70, 200, 16), (33, 131, 16)] {
                let scan = SelectiveScan(
                    aLog: randomTensor([e, n], seed: seed, scale: 0.7, offset: 1),
                    dSkip: randomTensor([e], seed: seed + 1))
                let x = randomTensor([l, e], seed: seed + 2)
                let dt = randomTensor([l, e], seed: seed + 3, scale: 3, offset: -2)   // softplus on both sides of 0
                let b = randomTensor([l, n], seed: seed + 4)
                let c = randomTensor([l, n], seed: seed + 5)
                var h1 = randomTensor([e, n], seed: seed + 6).storage
                var h2 = h1
                let fast = scan.forward(x: x, dtRaw: dt, b: b, c: c, h: &h1, Parallelism(threads: 2))
                let ref = scan.reference(x: x, dtRaw: dt, b: b, c: c, h: &h2)
                let tolerance = 1e-5 * max(1, ref.absMax)
                XCTAssertLessThan(maxAbsDifference(fast.storage, ref.storage), tolerance, "y L\(l) E\(e) N\(n) level \(level) seed \(seed)")
                XCTAssertLessThan(maxAbsDifference(h1, h2), 1e-5 * max(1, Tensor(shape: [h2.count], storage: h2).absMax), "h seed \(seed)")
            }
        }
    }

    /// Decode steps (L = 1) with spinning workers split a large layer's channels between threads
    /// (SelectiveScan.forward's minimum work): the same as the reference, step after step, on an
    /// odd channel count.
    func testDecodeStepsSplitBetweenSpinningWorkersMatchReference() {
        let seed = freshSeed(in: 0...999999)
        let (e, n) = (1101, 16)
        let scan = SelectiveScan(aLog: randomTensor([e, n], seed: seed, scale: 0.7, offset: 1), dSkip: randomTensor([e], seed: seed + 1))
        var h1 = [Float](repeating: 0, count: e * n), h2 = h1
        Parallelism(threads: 2).withSpinningWorkers { par in
            for t in 0..<3 {
                let x = randomTensor([1, e], seed: seed + 2 + UInt64(t)), dt = randomTensor([1, e], seed: seed + 9 + UInt64(t), scale: 3, offset: -2)
                let b = randomTensor([1, n], seed: seed + 16 + UInt64(t)), c = randomTensor([1, n], seed: seed + 23 + UInt64(t))
                let fast = scan.forward(x: x, dtRaw: dt, b: b, c: c, h: &h1, par)
                let ref = scan.reference(x: x, dtRaw: dt, b: b, c: c, h: &h2)
                XCTAssertLessThan(maxAbsDifference(fast.storage, ref.storage), 1e-5 * max(1, ref.absMax), "step \(t) seed \(seed)")
            }
        }
        XCTAssertLessThan(maxAbsDifference(h1, h2), 1e-5 * max(1, Tensor(shape: [h2.count], storage: h2).absMax), "h seed \(seed)")
    }

    /// Running a sequence in pieces with the state carried equals running it whole.
    func testChunkedScanEqualsWholeScan() {
        let (l, e, n) = (20, 16, 8)
        let scan = SelectiveScan(aLog: randomTensor([e, n], seed: 1, scale: 0.5), dSkip: randomTensor([e], seed: 2))
        let x = randomTensor([l, e], seed: 3), dt = randomTensor([l, e], seed: 4), b = randomTensor([l, n], seed: 5), c = randomTensor([l, n], seed: 6)
        var hWhole = [Float](repeating: 0, count: e * n)
        let whole = scan.forward(x: x, dtRaw: dt, b: b, c: c, h: &hWhole, .serial)
        var h = [Float](repeating: 0, count: e * n)
        var pieces: [Float] = []
        for range in [0..<1, 1..<9, 9..<20] {
            pieces += scan.forward(x: x.rows(range), dtRaw: dt.rows(range), b: b.rows(range), c: c.rows(range), h: &h, .serial).storage
        }
        XCTAssertLessThan(maxAbsDifference(pieces, whole.storage), 1e-6)
        XCTAssertLessThan(maxAbsDifference(h, hWhole), 1e-6)
    }

    func testVectorMathMatchesLibm() {
        let seed = freshSeed(in: 0...999999)
        var rng = SeededRandom(seed: seed)
        // Cover exp's clamp, softplus's threshold at 20 and tiny outputs; 1003 values: not a multiple of 8.
        let x = (0..<1003).map { _ in Float(rng.nextUnit() * 120 - 90) } + [0, -0.0, 20, 20.5, 19.99, -87.5, 88]
        // Every float path this CPU has (AVX-512's softplus is its own polynomial, the scan's dt).
        KernelPaths.forEachFloatLevel { level in
            var out = [Float](repeating: 0, count: x.count)
            mq_exp_f32(x, &out, x.count)
            for (i, v) in x.enumerated() where v > -87 && v < 88 {
                XCTAssertEqual(Double(out[i]), Foundation.exp(Double(v)), accuracy: 4e-7 * Foundation.exp(Double(v)), "exp(\(v)) seed \(seed)")
            }
            mq_softplus_f32(x, &out, x.count)
            for (i, v) in x.enumerated() where v > -80 {
                let want = v > 20 ? Double(v) : Foundation.log1p(Foundation.exp(Double(v)))
                XCTAssertEqual(Double(out[i]), want, accuracy: 1e-6 * max(want, 1e-30) + 1e-37, "softplus(\(v)) level \(level)")
            }
            mq_silu_f32(x, &out, x.count)
            for (i, v) in x.enumerated() {
                let want = Double(v) / (1 + Foundation.exp(-Double(v)))
                XCTAssertEqual(Double(out[i]), want, accuracy: 1e-6 * max(abs(want), 1e-30) + 1e-37, "silu(\(v))")
            }
        }
    }
}
