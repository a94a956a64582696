import CMambaKernels
import Foundation
@testable import MambaModel
import MambaTensors
import TestSupport
import XCTest

final class Mamba2MixerTests: XCTestCase {
    override func tearDown() { mq_force_scalar(0) }

    /// A random scan (A, D, dt_bias drawn from `s`), its inputs and a nonzero carried state.
    func randomScan(l: Int, h: Int, p: Int, n: Int, g: Int, seed s: UInt64, limit: (Float, Float))
        -> (scan: SSDScan, x: Tensor, dt: Tensor, b: Tensor, c: Tensor, state: [Float]) {
        let scan = SSDScan(aLog: randomTensor([h], seed: s, scale: 1, offset: 1), dSkip: randomTensor([h], seed: s + 1),
                           dtBias: randomTensor([h], seed: s + 2, scale: 1, offset: -1), headDim: p, groups: g, stateSize: n,
                           timeStepMin: limit.0, timeStepMax: limit.1)
        return (scan, randomTensor([l, h * p], seed: s + 3), randomTensor([l, h], seed: s + 4, scale: 3),
                randomTensor([l, g * n], seed: s + 5), randomTensor([l, g * n], seed: s + 6), randomTensor([h * p * n], seed: s + 7).storage)
    }

    /// One random scan's outputs and final state against the Double reference, within `tolerance`
    /// of the largest reference value (or 1): from its random state, or from zero.
    func assertScanMatchesReference(l: Int, h: Int, p: Int, n: Int, g: Int, seed: UInt64, limit: (Float, Float), form: SSDScan.Form,
                                    zeroState: Bool = false, tolerance: Float, _ context: String, line: UInt = #line) {
        let (scan, x, dt, b, c, state) = randomScan(l: l, h: h, p: p, n: n, g: g, seed: seed, limit: limit)
        var s1 = zeroState ? [Float](repeating: 0, count: state.count) : state
        var s2 = s1
        let fast = scan.forward(x: x, dtRaw: dt, b: b, c: c, s: &s1, Parallelism(threads: 2), form: form)
        let ref = scan.reference(x: x, dtRaw: dt, b: b, c: c, s: &s2)
        let what = "L\(l) H\(h) P\(p) N\(n) G\(g) limit \(limit.0)...\(limit.1) \(form) zero state \(zeroState) \(context)"
        XCTAssertLessThan(maxAbsDifference(fast.storage, ref.storage), tolerance * max(1, ref.absMax), what, line: line)
        XCTAssertLessThan(maxAbsDifference(s1, s2), tolerance * max(1, Tensor(shape: [s2.count], storage: s2).absMax), what, line: line)
    }

    /// The kernel (AVX2 and scalar) against the Double reference: odd sizes, N not a multiple of 8,
    /// 1 to 3 groups, one step and many, a clamp that binds on both sides, a carried state.
    func testSSDScanMatchesReference() {
        let seed = freshSeed(in: 0...999999)
        for scalar in [false, true] {
            mq_force_scalar(scalar ? 1 : 0)
            for (i, (l, h, p, n, g)) in [(1, 4, 8, 16, 1), (7, 6, 5, 9, 3), (33, 4, 12, 8, 2), (5, 3, 7, 19, 1), (40, 8, 4, 16, 8)].enumerated() {
                let s = seed &+ UInt64(17 * i)
                let limits: [(Float, Float)] = [(0, .infinity), (0.05, 0.5)]
                for (lo, hi) in limits {
                    assertScanMatchesReference(l: l, h: h, p: p, n: n, g: g, seed: s, limit: (lo, hi), form: .auto, tolerance: 1e-5,
                                               "scalar \(scalar) seed \(seed)")
                }
            }
        }
    }

    /// The chunked form (ChunkedSSD.swift) against the Double recurrence at every float kernel path:
    /// chunk boundaries crossed (L 150 = 64 + 64 + 22), exactly one chunk, fewer tokens than a chunk,
    /// several groups, odd sizes; a carried state and a zero one (a fresh prompt skips C s_inᵀ);
    /// dt limits where every head takes the separable form, where most take the masked one, and a
    /// mix; the state it leaves too.
    func testChunkedSSDMatchesReference() {
        let seed = freshSeed(in: 0...999999)
        KernelPaths.forEachFloatLevel { level in
            for (i, (l, h, p, n, g)) in [(150, 6, 5, 9, 3), (64, 4, 12, 8, 2), (3, 2, 7, 16, 1), (129, 8, 16, 32, 4)].enumerated() {
                let s = seed &+ UInt64(31 * i)
                for (lo, hi) in [(Float(0), Float.infinity), (0.05, 0.5), (0.001, 0.02)] {
                    for zeroState in [false, true] {
                        assertScanMatchesReference(l: l, h: h, p: p, n: n, g: g, seed: s, limit: (lo, hi), form: .chunked, zeroState: zeroState,
                                                   tolerance: 1e-4, "level \(level) seed \(seed)")
                    }
                }
            }
        }
    }

    /// The scan on the conv's output read in place (x, B, C as column blocks of xBC) gives the same
    /// bits as on the three copied out, in both forms.
    func testScanReadsTheConvOutputInPlace() {
        let seed = freshSeed(in: 0...999999)
        let (l, h, p, n, g) = (70, 4, 6, 8, 2)
        let (scan, _, dt, _, _, state) = randomScan(l: l, h: h, p: p, n: n, g: g, seed: seed, limit: (0.001, 0.1))
        let xBC = randomTensor([l, h * p + 2 * g * n], seed: seed + 9)
        let (e, gn) = (h * p, g * n)
        for form in [SSDScan.Form.recurrent, .chunked] {
            var (s1, s2) = (state, state)
            let inPlace = scan.forward(xBC: xBC, dtRaw: dt, s: &s1, Parallelism(threads: 2), form: form)
            let copied = scan.forward(x: xBC.columns(0..<e), dtRaw: dt, b: xBC.columns(e..<(e + gn)), c: xBC.columns((e + gn)..<(e + 2 * gn)),
                                      s: &s2, Parallelism(threads: 2), form: form)
            XCTAssertEqual(inPlace.storage, copied.storage, "\(form) seed \(seed)")
            XCTAssertEqual(s1, s2, "\(form) seed \(seed)")
        }
    }

    /// Which heads take the separable form: a chunk whose decay spans up to 80 (exp(-cum_last)), and
    /// the masked form past it; both give the recurrence's outputs at the span's edge.
    func testChunkedSSDSeparableSpan() {
        let (l, h, p, n) = (64, 4, 8, 16)
        // dt fixed by the clamp (dt_raw large, min = max): each head's span is 64 dt |A|.
        for span in [Float(79), 81, 200] {
            let dtValue = span / 64
            let scan = SSDScan(aLog: Tensor(zeros: [h]), dSkip: Tensor(repeating: 1, shape: [h]), dtBias: Tensor(zeros: [h]), headDim: p, groups: 1,
                               stateSize: n, timeStepMin: dtValue, timeStepMax: dtValue)
            let (x, dt) = (randomTensor([l, h * p], seed: 5), Tensor(repeating: 30, shape: [l, h]))
            let (b, c) = (randomTensor([l, n], seed: 6), randomTensor([l, n], seed: 7))
            var (s1, s2) = (randomTensor([h * p * n], seed: 8).storage, randomTensor([h * p * n], seed: 8).storage)
            let chunked = scan.forward(x: x, dtRaw: dt, b: b, c: c, s: &s1, Parallelism(threads: 1), form: .chunked)
            let ref = scan.reference(x: x, dtRaw: dt, b: b, c: c, s: &s2)
            XCTAssertLessThan(maxAbsDifference(chunked.storage, ref.storage), 1e-4 * max(1, ref.absMax), "span \(span)")
            XCTAssertLessThan(maxAbsDifference(s1, s2), 1e-4, "span \(span)")
        }
    }

    /// Head h reads B/C group h / (H / G) (transformers' repeat_interleave): moving group 1's B
    /// changes only the second half of the heads.
    func testHeadsReadTheirOwnGroup() {
        let (l, h, p, n, g) = (3, 4, 2, 8, 2)
        let scan = SSDScan(aLog: randomTensor([h], seed: 1), dSkip: Tensor(zeros: [h]), dtBias: Tensor(zeros: [h]), headDim: p, groups: g, stateSize: n)
        let x = randomTensor([l, h * p], seed: 2), dt = randomTensor([l, h], seed: 3), c = randomTensor([l, g * n], seed: 5)
        var b = randomTensor([l, g * n], seed: 4)
        var s = [Float](repeating: 0, count: h * p * n)
        let before = scan.forward(x: x, dtRaw: dt, b: b, c: c, s: &s, .serial)
        for t in 0..<l { for k in 0..<n { b.storage[t * g * n + n + k] += 1 } }
        s = [Float](repeating: 0, count: h * p * n)
        let after = scan.forward(x: x, dtRaw: dt, b: b, c: c, s: &s, .serial)
        for t in 0..<l {
            for ch in 0..<(h * p) {
                let changed = before.storage[t * h * p + ch] != after.storage[t * h * p + ch]
                XCTAssertEqual(changed, ch >= h * p / 2, "t \(t) channel \(ch)")
            }
        }
    }

    func testGroupRMSNormNormalizesEachGroup() {
        let x = randomTensor([3, 12], seed: 9, scale: 3)
        let y = GroupRMSNorm(weight: Tensor(repeating: 1, shape: [12]), groups: 3, eps: 0).forward(x)
        for r in 0..<3 {
            for g in 0..<3 {
                let part = y.storage[(r * 12 + g * 4)..<(r * 12 + g * 4 + 4)]
                XCTAssertEqual(part.reduce(0) { $0 + $1 * $1 } / 4, 1, accuracy: 1e-5)
            }
        }
        XCTAssertEqual(GroupRMSNorm(weight: Tensor(repeating: 1, shape: [12]), groups: 1, eps: 0).forward(x),
                       rmsNorm(x, weight: nil, eps: 0), "one group is the plain RMSNorm")
    }

    /// Random Mamba-2 weights run, save and load back to the same logits; prefill equals decode.
    func testRandomMamba2RoundTripsAndDecodesLikePrefill() throws {
        var c = MambaConfig(hiddenSize: 16, numLayers: 2, stateSize: 12, convKernel: 3, vocabSize: 40, useBias: true, tieWordEmbeddings: false,
                            mixer: MixerKind(Mamba2Mixer(heads: 4, headDim: 8, groups: 2, timeStepMin: 0.001, timeStepMax: 2)))
        c.json = c.hfJSON()
        let w = randomWeights(c, seed: 3)
        let lm = MambaLM(weights: w)
        let tokens = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
        let logits = try lm.logits(tokens)
        var state = lm.makeState()
        var rows: [Float] = []
        for t in tokens { rows += try lm.forward([t], state: &state).storage }
        XCTAssertLessThan(maxAbsDifference(rows, logits.storage), 1e-4 * max(1, logits.absMax))
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try w.save(directory: dir)
        let loaded = try MambaLM.load(directory: dir)
        XCTAssertEqual(try loaded.logits(tokens), logits)
        XCTAssertEqual(try MambaConfig.load(directory: dir).layerKinds, c.layerKinds)
    }
}
