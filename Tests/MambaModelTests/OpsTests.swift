import CMambaKernels
import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// The gate kernel (CMambaKernels/activations.c mq_gate_rows_f32) against its definition in
/// Double, on every float path and split between threads, and the gated norm (gate and norm in one
/// pass over the rows) against the two passes.
final class GateTests: XCTestCase {
    /// y * silu(z) and silu(s z) * (y / s), in Double.
    func definition(y: Tensor, z: Tensor, s: [Float]?) -> [Double] {
        let e = z.cols
        return (0..<z.count).map { i in
            let scale = s.map { Double($0[i % e]) } ?? 1
            let v = scale * Double(z.storage[i])
            return v / (1 + Foundation.exp(-v)) * (Double(y.storage[i]) / scale)
        }
    }

    func inputs(_ rng: inout SeededRandom, rows: Int, e: Int) -> (y: Tensor, z: Tensor, s: [Float]) {
        let y = Tensor(shape: [rows, e], storage: (0..<(rows * e)).map { _ in Float(rng.nextGaussian()) })
        let z = Tensor(shape: [rows, e], storage: (0..<(rows * e)).map { _ in Float(rng.nextGaussian() * 4) })
        return (y, z, (0..<e).map { _ in Float(rng.nextUnit() * 3 + 0.1) })
    }

    func testGateMatchesItsDefinitionOnEveryPath() {
        var rng = SeededRandom(seed: freshSeed())
        for (rows, e) in [(1, 5), (7, 37), (33, 64), (3, 100), (20, 1536)] {
            let (y, z, s) = inputs(&rng, rows: rows, e: e)
            for smoothing in [nil, s] {
                let want = definition(y: y, z: z, s: smoothing)
                let bound = 1e-6 * max(1, want.map(abs).max()!)
                KernelPaths.forEachFloatLevel { level in
                    var results: [Tensor] = []
                    for threads in [1, 2] {
                        let got = smoothing.map { SmoothSiLUGate(s: $0).forward(y: y, z: z, Parallelism(threads: threads)) }
                            ?? SiLUGate().forward(y: y, z: z, Parallelism(threads: threads))
                        XCTAssertEqual(got.shape, y.shape)
                        let worst = zip(got.storage, want).map { abs(Double($0) - $1) }.max()!
                        XCTAssertLessThanOrEqual(worst, bound, "rows \(rows) e \(e) smoothing \(smoothing != nil) level \(level) threads \(threads)")
                        results.append(got)
                    }
                    // Threads split rows; each row is computed the same way.
                    XCTAssertEqual(results[0], results[1], "rows \(rows) e \(e) level \(level)")
                }
            }
        }
    }

    /// Mamba-2's gated RMSNorm in one pass (GateOp.forward(y:z:normalizedBy:)) gives the floats of
    /// the gate over all rows and then the norm over all rows, with and without smoothing, groups.
    func testGatedNormIsTheGateThenTheNorm() {
        var rng = SeededRandom(seed: freshSeed())
        for (rows, e, groups) in [(1, 16, 1), (9, 40, 2), (37, 96, 3), (5, 1536, 1)] {
            let (y, z, s) = inputs(&rng, rows: rows, e: e)
            let norm = GroupRMSNorm(weight: Tensor(shape: [e], storage: (0..<e).map { _ in Float(rng.nextGaussian()) }), groups: groups, eps: 1e-5)
            for gate in [SiLUGate() as any GateOp, SmoothSiLUGate(s: s)] {
                KernelPaths.forEachFloatLevel { level in
                    let want = norm.forward(gate.forward(y: y, z: z, .serial))
                    for threads in [1, 2] {
                        XCTAssertEqual(gate.forward(y: y, z: z, normalizedBy: norm, Parallelism(threads: threads)), want,
                                       "rows \(rows) e \(e) groups \(groups) \(type(of: gate)) level \(level) threads \(threads)")
                    }
                }
            }
        }
    }
}

/// The fused conv + SiLU kernel (mq_conv_silu_f32) against silu(causalConv), the two passes it
/// replaced: odd channel counts (vector tails), kernels of 1 to 5 taps, prompts shorter than the
/// history, a carried state, every float path, rows split between threads.
final class ConvSiLUTests: XCTestCase {
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
            KernelPaths.forEachFloatLevel { level in
                for threads in [1, 2] {
                    var state = start
                    let got = conv.forwardSiLU(x, state: &state, Parallelism(threads: threads))
                    XCTAssertLessThanOrEqual(maxAbsDifference(got.storage, want.storage), 1e-6 * max(1, want.absMax),
                                             "L \(l) E \(e) K \(k) level \(level) threads \(threads) seed \(seed)")
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
