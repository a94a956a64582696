import CMambaKernels
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// The fused gate kernel (CMambaKernels/activations.c mq_gate_rows_f32) against the separate passes
/// it replaced, on both paths and split between threads.
final class GateTests: XCTestCase {
    override func tearDown() { mq_force_scalar(0) }

    /// y * silu(z) and silu(s z) * (y / s), written out with the elementwise SiLU.
    func definition(y: Tensor, z: Tensor, s: [Float]?) -> Tensor {
        let e = z.cols
        var sz = z
        if let s { for i in 0..<sz.count { sz.storage[i] *= s[i % e] } }
        var g = silu(sz)
        for i in 0..<g.count { g.storage[i] *= s.map { y.storage[i] / $0[i % e] } ?? y.storage[i] }
        return g
    }

    func testGateMatchesItsDefinitionOnEveryPath() {
        var rng = SeededRandom(seed: freshSeed())
        for (rows, e) in [(1, 5), (7, 37), (33, 64), (20, 1536)] {
            let y = Tensor(shape: [rows, e], storage: (0..<(rows * e)).map { _ in Float(rng.nextGaussian()) })
            let z = Tensor(shape: [rows, e], storage: (0..<(rows * e)).map { _ in Float(rng.nextGaussian() * 4) })
            let s = (0..<e).map { _ in Float(rng.nextUnit() * 3 + 0.1) }
            for smoothing in [nil, s] {
                let want = definition(y: y, z: z, s: smoothing)
                var results: [Tensor] = []
                for scalar in [Int32(1), 0] {
                    mq_force_scalar(scalar)
                    for threads in [1, 2] {
                        let got = smoothing.map { SmoothSiLUGate(s: $0).forward(y: y, z: z, Parallelism(threads: threads)) }
                            ?? SiLUGate().forward(y: y, z: z, Parallelism(threads: threads))
                        XCTAssertEqual(got.shape, want.shape)
                        XCTAssertLessThanOrEqual(maxAbsDifference(got.storage, want.storage), 1e-6 * max(1, want.absMax),
                                                 "rows \(rows) e \(e) smoothing \(smoothing != nil) scalar \(scalar) threads \(threads)")
                        results.append(got)
                    }
                    // Threads split rows; each row is computed the same way.
                    XCTAssertEqual(results[results.count - 1], results[results.count - 2], "rows \(rows) e \(e) scalar \(scalar)")
                }
            }
        }
    }
}

/// The fused conv + SiLU kernel (mq_conv_silu_f32) against silu(causalConv), the two passes it
/// replaced: odd channel counts (vector tails), kernels of 1 to 5 taps, prompts shorter than the
/// history, a carried state, both paths, rows split between threads.
final class ConvSiLUTests: XCTestCase {
    override func tearDown() { mq_force_scalar(0) }

    func testFusedConvMatchesTheTwoPasses() {
        let seed = freshSeed()
        var rng = SeededRandom(seed: seed)
        for (l, e, k) in [(1, 5, 4), (2, 13, 4), (37, 24, 4), (40, 61, 3), (9, 16, 1), (70, 33, 5)] {
            let weight = Tensor(shape: [e, k], storage: (0..<(e * k)).map { _ in Float(rng.nextGaussian() * 0.5) })
            let bias = Tensor(shape: [e], storage: (0..<e).map { _ in Float(rng.nextGaussian() * 0.2) })
            let conv = FloatConv(weight: weight, bias: bias)
            let x = Tensor(shape: [l, e], storage: (0..<(l * e)).map { _ in Float(rng.nextGaussian() * 2) })
            let start = (0..<((k - 1) * e)).map { _ in Float(rng.nextGaussian()) }
            var refState = start
            let want = silu(conv.forward(x, state: &refState, .serial))
            for scalar in [Int32(1), 0] {
                mq_force_scalar(scalar)
                for threads in [1, 2] {
                    var state = start
                    let got = conv.forwardSiLU(x, state: &state, Parallelism(threads: threads))
                    XCTAssertLessThanOrEqual(maxAbsDifference(got.storage, want.storage), 1e-6 * max(1, want.absMax),
                                             "L \(l) E \(e) K \(k) scalar \(scalar) threads \(threads) seed \(seed)")
                    XCTAssertEqual(state, refState, "L \(l) E \(e) K \(k): the carried state")
                }
            }
        }
    }
}

/// The RMSNorm kernel (CMambaKernels/activations.c mq_rmsnorm_f32) against the plain loop, on every
/// float path: rows whole and in groups, widths off the vector lengths, with and without a weight.
final class RMSNormTests: XCTestCase {
    func testRMSNormMatchesThePlainLoopOnEveryPath() {
        var rng = SeededRandom(seed: freshSeed())
        for (rows, cols, groups) in [(1, 5, 1), (7, 37, 1), (3, 768, 1), (5, 96, 3), (4, 1536, 2), (2, 17, 17)] {
            let x = Tensor(shape: [rows, cols], storage: (0..<(rows * cols)).map { _ in Float(rng.nextGaussian() * 3) })
            let w = Tensor(shape: [cols], storage: (0..<cols).map { _ in Float(rng.nextGaussian()) })
            for weight in [nil, w] {
                let want = rmsNormReference(x, weight: weight, eps: 1e-5, groups: groups)
                KernelPaths.forEachFloatLevel { level in
                    let got = rmsNorm(x, weight: weight, eps: 1e-5, groups: groups)
                    XCTAssertLessThanOrEqual(maxAbsDifference(got.storage, want.storage), 2e-6 * want.absMax,
                                             "rows \(rows) cols \(cols) groups \(groups) weight \(weight != nil) level \(level)")
                }
            }
        }
    }
}

/// A linear of an online-rotated input (Ops.swift `forward(_:rotatedBy:_:observer:site:layer:)`):
/// the product of the rotated input, which an observer sees at the site; without a rotation, of
/// the input itself.
final class RotatedLinearTests: XCTestCase {
    final class Recorder: ActivationObserver {
        var seen: [(Tensor, Site, Int?)] = []
        func observe(_ activation: Tensor, site: Site, layer: Int?) { seen.append((activation, site, layer)) }
    }

    func testRotatedInputIsWhatTheProductAndTheObserverSee() {
        var rng = SeededRandom(seed: freshSeed())
        let (rows, n, out) = (3, 48, 5)
        let x = Tensor(shape: [rows, n], storage: (0..<(rows * n)).map { _ in Float(rng.nextGaussian()) })
        let linear = FloatLinear(weight: Tensor(shape: [out, n], storage: (0..<(out * n)).map { _ in Float(rng.nextGaussian()) }))
        let rotation = OnlineHadamard(signs: (0..<n).map { _ in rng.next() % 2 == 0 ? 1 : -1 }, hadamard: Hadamard(size: n)!)
        let rotated = rotation.rotate(x)
        XCTAssertGreaterThan(maxAbsDifference(rotated.storage, x.storage), 0.1)
        let want = linear.forward(rotated, .serial)
        XCTAssertEqual(linear.forward(x, rotatedBy: rotation, .serial).storage, want.storage)
        let recorder = Recorder()
        let observed = linear.forward(x, rotatedBy: rotation, .serial, observer: recorder, site: .outProjInput, layer: 2)
        XCTAssertEqual(observed.storage, want.storage)
        XCTAssertEqual(recorder.seen.count, 1)
        XCTAssertEqual(recorder.seen.first?.0.storage, rotated.storage)
        XCTAssertEqual(recorder.seen.first?.1, .outProjInput)
        XCTAssertEqual(recorder.seen.first?.2, 2)
        let plain = linear.forward(x, rotatedBy: nil, .serial, observer: recorder, site: .outProjInput, layer: 3)
        XCTAssertEqual(plain.storage, linear.forward(x, .serial).storage)
        XCTAssertEqual(recorder.seen.last?.0.storage, x.storage)
    }
}
