import CMambaKernels
import Foundation
import MambaCalibration
import MambaModel
import MambaQuantization
import MambaTensors
import MambaTransforms
import TestSupport
import XCTest

/// The int8 kernels (CMambaKernels/int8.c) against their plain definitions on random data, every
/// path this CPU has (scalar, AVX2, AVX-512 VNNI, AMX), and the int8 model against the reference path.
/// `count` values uniform in [-limit, limit] (never -128: the kernels' contract); Int8ConvInputTests
/// uses it too.
func randomInt8(_ count: Int, _ rng: inout SeededRandom, limit: Int = 127) -> [Int8] {
    (0..<count).map { _ in Int8(Int(rng.next() % UInt64(2 * limit + 1)) - limit) }
}

/// The raw int32 sums of `gemm` (mq_gemm_s8, or one of its paths) over the given panel ranges (a
/// has row stride padded K); Int8AMXTests uses it too.
func int8Accumulators(m: Int, n: Int, k: Int, a: [Int8], packed: [Int8], sums: [Int32], panels: [Range<Int32>], weightBits: Int32 = 8,
                      gemm: (UnsafePointer<mq_gemm_s8_args>) -> Void = { mq_gemm_s8($0) }) -> [Int32] {
    var got = [Int32](repeating: -1, count: m * n)
    a.withUnsafeBufferPointer { ap in
        packed.withUnsafeBufferPointer { pp in
            sums.withUnsafeBufferPointer { sp in
                got.withUnsafeMutableBufferPointer { gp in
                    for r in panels {
                        var args = mq_gemm_s8_args(
                            m: Int32(m), n: Int32(n), k: Int32(k), a: ap.baseAddress, lda: mq_s8_padded_k(Int32(k)), packed: pp.baseAddress,
                            col_sums: sp.baseAddress, panel_begin: r.lowerBound, panel_end: r.upperBound, a_scale: nil, w_scale: nil,
                            bias: nil, c: nil, ldc: 0, acc: gp.baseAddress, ldacc: Int32(n), weight_bits: weightBits, quantized_columns: nil)
                        gemm(&args)
                    }
                }
            }
        }
    }
    return got
}

final class Int8OpsTests: XCTestCase {

    /// Exact int32 sums on odd shapes (M = 1, 3, 17; K not a multiple of 32; N not of 16). One row
    /// runs four accumulator chains over k-steps on VNNI: K of 5, 7, 66 and 385 k-steps leaves
    /// every remainder of four; on AVX2 it reads three panels at once (MQ_ROW_STREAMS): 8, 12 and
    /// 19 panels, in halves and whole, leave every remainder of three.
    func testGEMMAccumulatorsEqualTheReferenceOnEveryPath() {
        var rng = SeededRandom(seed: freshSeed())
        for (m, n, k) in [(1, 37, 45), (3, 16, 32), (17, 33, 67), (17, 100, 129), (7, 64, 258), (13, 48, 3), (2, 1, 1),
                          (1, 19, 20), (1, 40, 27), (1, 33, 263), (1, 300, 1537), (1, 117, 70), (1, 177, 33),
                          (40, 70, 200), (33, 48, 256)] {
            let kp = Int(mq_s8_padded_k(Int32(k)))
            var a = [Int8](repeating: 0, count: m * kp)
            let values = randomInt8(m * k, &rng)
            for i in 0..<m { for j in 0..<k { a[i * kp + j] = values[i * k + j] } }
            let w = randomInt8(n * k, &rng)
            var reference = [Int32](repeating: 0, count: m * n)
            mq_gemm_s8_reference(Int32(m), Int32(n), Int32(k), a, Int32(kp), w, Int32(k), &reference, Int32(n))
            var packed = [Int8](repeating: 0, count: mq_s8_packed_bytes(Int32(n), Int32(k)))
            var sums = [Int32](repeating: 0, count: n)
            mq_s8_pack(w, Int32(n), Int32(k), Int32(k), &packed, &sums)
            for r in 0..<n { XCTAssertEqual(sums[r], w[(r * k)..<((r + 1) * k)].reduce(0) { $0 + Int32($1) }) }
            let panels = Int32((n + 15) / 16)
            KernelPaths.forEachInt8Level { level in
                // Two calls over disjoint panel ranges, as the threads make them.
                let got = int8Accumulators(m: m, n: n, k: k, a: a, packed: packed, sums: sums, panels: [0..<(panels / 2), (panels / 2)..<panels])
                XCTAssertEqual(got, reference, "m \(m) n \(n) k \(k) level \(level)")
                // One row reads several panels at once (MQ_ROW_STREAMS, AVX2): the whole range in one call too.
                let whole = int8Accumulators(m: m, n: n, k: k, a: a, packed: packed, sums: sums, panels: [0..<panels])
                XCTAssertEqual(whole, reference, "m \(m) n \(n) k \(k) level \(level), one call")
            }
        }
    }

    /// int4 panels (two values per byte, unpacked in registers on VNNI and in the AVX2 decode form,
    /// from a scratch copy elsewhere): the same exact int32 sums as the definition on odd shapes
    /// (K with an odd number of k-steps, so the last pair is half empty), the extremes -8 and 7, M
    /// on both sides of every path's row threshold.
    func testInt4GEMMAccumulatorsEqualTheReferenceOnEveryPath() {
        var rng = SeededRandom(seed: freshSeed())
        for (m, n, k) in [(1, 37, 45), (3, 16, 36), (5, 33, 67), (17, 100, 129), (7, 64, 258), (13, 48, 3), (2, 1, 1), (1, 300, 1536),
                          (1, 21, 24), (1, 35, 100), (1, 17, 1544), (1, 117, 72), (1, 177, 40), (40, 70, 200)] {
            let kp = Int(mq_s8_padded_k(Int32(k)))
            let extreme = rng.next() % 3 == 0
            var a = [Int8](repeating: 0, count: m * kp)
            let values = extreme ? [Int8](repeating: -127, count: m * k) : randomInt8(m * k, &rng)
            for i in 0..<m { for j in 0..<k { a[i * kp + j] = values[i * k + j] } }
            let w = extreme ? (0..<(n * k)).map { $0 % 2 == 0 ? Int8(-8) : 7 } : (0..<(n * k)).map { _ in Int8(Int(rng.next() % 16) - 8) }
            var reference = [Int32](repeating: 0, count: m * n)
            mq_gemm_s8_reference(Int32(m), Int32(n), Int32(k), a, Int32(kp), w, Int32(k), &reference, Int32(n))
            var packed = [Int8](repeating: 0, count: mq_s8_packed_bytes(Int32(n), Int32(k)))
            var sums = [Int32](repeating: 0, count: n)
            mq_s8_pack(w, Int32(n), Int32(k), Int32(k), &packed, &sums)
            var half = [Int8](repeating: 0, count: mq_s4_packed_bytes(Int32(n), Int32(k)))
            half.withUnsafeMutableBytes { mq_s4_pack(packed, Int32(n), Int32(k), $0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
            let panels = Int32((n + 15) / 16)
            XCTAssertEqual(half.count, Int(panels) * 16 * ((k + 7) / 8 * 8) / 2, "int4 panels: half a byte per value, K padded to 8")
            KernelPaths.forEachInt8Level { level in
                let got = int8Accumulators(m: m, n: n, k: k, a: a, packed: half, sums: sums, panels: [0..<(panels / 2), (panels / 2)..<panels], weightBits: 4)
                XCTAssertEqual(got, reference, "m \(m) n \(n) k \(k) extreme \(extreme) level \(level)")
                let whole = int8Accumulators(m: m, n: n, k: k, a: a, packed: half, sums: sums, panels: [0..<panels], weightBits: 4)
                XCTAssertEqual(whole, reference, "m \(m) n \(n) k \(k) extreme \(extreme) level \(level), one call")
            }
        }
    }

    /// The float epilogue (acc * a_scale[i]) * w_scale[j] + bias[j] gives the same floats on every
    /// path (VNNI computes it in registers with masked tails, the others in store_block), with and
    /// without a bias, on odd N (a masked last panel) and M past the VNNI flipped-copy threshold.
    func testGEMMEpilogueIsTheSameOnEveryPath() {
        var rng = SeededRandom(seed: freshSeed())
        for (m, n, k) in [(1, 37, 45), (5, 51, 67), (19, 100, 129), (9, 16, 8)] {
            let kp = Int(mq_s8_padded_k(Int32(k)))
            var a = [Int8](repeating: 0, count: m * kp)
            let values = randomInt8(m * k, &rng)
            for i in 0..<m { for j in 0..<k { a[i * kp + j] = values[i * k + j] } }
            let w = randomInt8(n * k, &rng)
            var packed = [Int8](repeating: 0, count: mq_s8_packed_bytes(Int32(n), Int32(k)))
            var sums = [Int32](repeating: 0, count: n)
            mq_s8_pack(w, Int32(n), Int32(k), Int32(k), &packed, &sums)
            var reference = [Int32](repeating: 0, count: m * n)
            mq_gemm_s8_reference(Int32(m), Int32(n), Int32(k), a, Int32(kp), w, Int32(k), &reference, Int32(n))
            let aScale = (0..<m).map { _ in Float(rng.nextUnit() + 0.01) * 0.02 }
            let wScale = (0..<n).map { _ in Float(rng.nextUnit() + 0.01) * 0.03 }
            let bias = (0..<n).map { _ in Float(rng.nextGaussian()) }
            for withBias in [false, true] {
                var want = [Float](repeating: 0, count: m * n)
                for i in 0..<m {
                    for j in 0..<n {
                        let v = Float(reference[i * n + j]) * aScale[i] * wScale[j]
                        want[i * n + j] = withBias ? v + bias[j] : v
                    }
                }
                KernelPaths.forEachInt8Level { level in
                    var got = [Float](repeating: .nan, count: m * n)
                    a.withUnsafeBufferPointer { ap in
                        packed.withUnsafeBufferPointer { pp in
                            sums.withUnsafeBufferPointer { sp in
                                aScale.withUnsafeBufferPointer { asp in
                                    wScale.withUnsafeBufferPointer { wsp in
                                        bias.withUnsafeBufferPointer { bp in
                                            got.withUnsafeMutableBufferPointer { gp in
                                                var args = mq_gemm_s8_args(
                                                    m: Int32(m), n: Int32(n), k: Int32(k), a: ap.baseAddress, lda: Int32(kp),
                                                    packed: pp.baseAddress, col_sums: sp.baseAddress, panel_begin: 0,
                                                    panel_end: Int32((n + 15) / 16), a_scale: asp.baseAddress, w_scale: wsp.baseAddress,
                                                    bias: withBias ? bp.baseAddress : nil, c: gp.baseAddress, ldc: Int32(n), acc: nil, ldacc: 0,
                                                    weight_bits: 8, quantized_columns: nil)
                                                mq_gemm_s8(&args)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    XCTAssertEqual(got, want, "m \(m) n \(n) k \(k) bias \(withBias) level \(level)")
                }
            }
        }
    }

    /// The blocked GEMM (scales per block of K) against its definition on every path: the same
    /// floats (each block's int32 sum is exact and the float sums run in one order everywhere),
    /// odd shapes, a partial last block, extreme values, with and without a bias.
    func testBlockedGEMMEqualsItsDefinitionOnEveryPath() {
        var rng = SeededRandom(seed: freshSeed())
        for (m, n, k, block) in [(1, 37, 64, 32), (5, 51, 67, 32), (19, 100, 129, 16), (9, 16, 8, 4), (3, 33, 96, 96), (6, 20, 200, 32), (2, 40, 300, 8), (1, 17, 261, 128)] {
            let kp = Int(mq_s8_padded_k(Int32(k))), nb = Int(mq_s8_block_count(Int32(k), Int32(block)))
            var a = [Int8](repeating: 0, count: m * kp)
            let extreme = rng.next() % 2 == 0
            let values = extreme ? [Int8](repeating: -127, count: m * k) : randomInt8(m * k, &rng)
            for i in 0..<m { for j in 0..<k { a[i * kp + j] = values[i * k + j] } }
            let w = extreme ? [Int8](repeating: -127, count: n * k) : randomInt8(n * k, &rng)
            let aScale = (0..<(m * nb)).map { _ in Float(rng.nextUnit() + 0.01) * 0.02 }
            let wScale = (0..<(n * nb)).map { _ in Float(rng.nextUnit() + 0.01) * 0.03 }
            let bias = (0..<n).map { _ in Float(rng.nextGaussian()) }
            let q = QuantizedMatrix(rows: n, cols: k, bits: 8, groupSize: block, values: w, scales: wScale)
            // The same values at 4 bits (clamped into [-8, 7]) in int4 panels, where the block allows.
            let w4 = w.map { max(-8, min(7, $0)) }
            let q4 = QuantizedMatrix(rows: n, cols: k, bits: 4, groupSize: block, values: w4, scales: wScale)
            var cases = [(w, PackedInt8Matrix(q))]
            if PackedInt8Matrix.supports(q4, inputBlock: nil) { cases.append((w4, PackedInt8Matrix(q4))) }
            for (w, packed) in cases {
            for withBias in [false, true] {
                var want = [Float](repeating: .nan, count: m * n)
                callBlocked(m: m, n: n, k: k, block: block, a: a, packed: packed, aScale: aScale, bias: withBias ? bias : nil, into: &want) { args in
                    w.withUnsafeBufferPointer { wp in wScale.withUnsafeBufferPointer { sp in
                        withUnsafePointer(to: args) { mq_gemm_s8_blocked_reference($0, wp.baseAddress, Int32(k), sp.baseAddress) }
                    } }
                }
                KernelPaths.forEachInt8Level { level in
                    var got = [Float](repeating: .nan, count: m * n)
                    callBlocked(m: m, n: n, k: k, block: block, a: a, packed: packed, aScale: aScale, bias: withBias ? bias : nil, into: &got) { args in
                        withUnsafePointer(to: args) { mq_gemm_s8_blocked($0) }
                    }
                    XCTAssertEqual(got, want, "m \(m) n \(n) k \(k) block \(block) bits \(packed.weightBits) bias \(withBias) extreme \(extreme) level \(level)")
                }
            }
            }
        }
    }

    func callBlocked(m: Int, n: Int, k: Int, block: Int, a: [Int8], packed: PackedInt8Matrix, aScale: [Float], bias: [Float]?,
                     into c: inout [Float], _ body: (mq_gemm_s8_blocked_args) -> Void) {
        let kp = Int32(mq_s8_padded_k(Int32(k)))
        a.withUnsafeBufferPointer { ap in
            packed.withBlockedPointers { pp, cs, ws in
                aScale.withUnsafeBufferPointer { asp in
                    c.withUnsafeMutableBufferPointer { cp in
                        func run(_ b: UnsafePointer<Float>?) {
                            body(mq_gemm_s8_blocked_args(
                                m: Int32(m), n: Int32(n), k: Int32(k), block: Int32(block), a: ap.baseAddress, lda: kp, packed: pp, col_sums: cs,
                                panel_begin: 0, panel_end: Int32(packed.panels), a_scale: asp.baseAddress, w_scale: ws, bias: b, c: cp.baseAddress, ldc: Int32(n),
                                weight_bits: Int32(packed.weightBits)))
                        }
                        guard let bias else { return run(nil) }
                        bias.withUnsafeBufferPointer { run($0.baseAddress) }
                    }
                }
            }
        }
    }

    /// Int8Linear with weight groups or input blocks (Q8_0-style) against the reference linear, and
    /// block quantization of activations against fakeQuantize's definition.
    func testBlockScaledLinearsMatchTheReference() {
        var rng = SeededRandom(seed: freshSeed())
        for (m, n, k) in [(1, 50, 64), (7, 33, 96), (17, 130, 100)] {
            let w = Matrix(rows: n, cols: k, data: (0..<(n * k)).map { _ in rng.nextGaussian() * 0.1 })
            let x = Tensor(shape: [m, k], storage: (0..<(m * k)).map { _ in Float(rng.nextGaussian()) * (rng.next() % 7 == 0 ? 20 : 1) })
            let bias = Tensor(shape: [n], storage: (0..<n).map { _ in Float(rng.nextGaussian()) })
            let blocks = ActivationQuantizer(bits: 8, scale: .dynamicBlocks(32))
            var fake = x, reference = x
            blocks.fakeQuantize(&fake)
            blocks.fakeQuantizeReference(&reference)
            XCTAssertEqual(fake, reference, "m \(m) k \(k)")
            for (groups, input) in [(32, blocks), (nil, blocks), (32, ActivationQuantizer(bits: 8, scale: .dynamic)),
                                    (4, ActivationQuantizer(bits: 8, scale: .static(0.05)))] as [(Int?, ActivationQuantizer)] {
            // int4 panels too (groups of 4 are not whole step pairs: 8-bit only).
            for bits in groups == 4 ? [8] : [8, 4] {
                let qw = QuantizedMatrix(quantizing: w, bits: bits, groupSize: groups)
                let want = ReferenceQuantizedLinear(weight: qw, bias: bias, input: input).forward(x, .serial)
                let layer = QuantizedLayer(weight: qw, floatWeight: nil, bias: bias, input: input)
                XCTAssertTrue(layer.linear(.int8) is Int8Linear, "groups \(String(describing: groups)) \(input.scale)")
                KernelPaths.forEachInt8Level { level in
                    for threads in [1, 2] {
                        let got = layer.linear(.int8).forward(x, Parallelism(threads: threads))
                        XCTAssertLessThanOrEqual(maxAbsDifference(got.storage, want.storage), 2e-5 * max(1, want.absMax),
                                                 "m \(m) n \(n) k \(k) bits \(bits) groups \(String(describing: groups)) \(input.scale) level \(level)")
                    }
                }
            }
            }
            // Groups and input blocks of different sizes: the reference path.
            let mixed = QuantizedLayer(weight: QuantizedMatrix(quantizing: w, bits: 8, groupSize: 16), floatWeight: nil, bias: nil, input: blocks)
            XCTAssertFalse(mixed.linear(.int8) is Int8Linear)
        }
    }

    /// The extremes of the range: -127 * -127 summed over a long K must not saturate any int16 step.
    func testExtremeValuesDoNotSaturate() {
        // m = 3 takes the AVX2 sign trick, m = 9 its int16 form.
        for m in [3, 9] { checkExtremeValues(m: m) }
    }

    func checkExtremeValues(m: Int) {
        let (n, k) = (20, 1001)
        let kp = Int(mq_s8_padded_k(Int32(k)))
        var a = [Int8](repeating: 0, count: m * kp)
        for i in 0..<m { for j in 0..<k { a[i * kp + j] = (i % 2 == 1 && j % 2 == 0) ? 127 : -127 } }
        let w = (0..<(n * k)).map { Int8($0 % 3 == 0 ? 127 : -127) }
        var reference = [Int32](repeating: 0, count: m * n)
        mq_gemm_s8_reference(Int32(m), Int32(n), Int32(k), a, Int32(kp), w, Int32(k), &reference, Int32(n))
        var packed = [Int8](repeating: 0, count: mq_s8_packed_bytes(Int32(n), Int32(k)))
        var sums = [Int32](repeating: 0, count: n)
        mq_s8_pack(w, Int32(n), Int32(k), Int32(k), &packed, &sums)
        KernelPaths.forEachInt8Level { level in
            let got = int8Accumulators(m: m, n: n, k: k, a: a, packed: packed, sums: sums, panels: [0..<2])
            XCTAssertEqual(got, reference, "m \(m) level \(level)")
        }
    }

    /// Row quantization equals quantizeSymmetric element for element, ties and clamping included.
    func testQuantizeRowsEqualsQuantizeSymmetric() {
        var rng = SeededRandom(seed: freshSeed())
        let (m, k) = (5, 77)
        var x = (0..<(m * k)).map { _ in Float(rng.nextGaussian() * 60) }
        // Exact ties (x * inv lands on n + 0.5) and values past the clamp.
        for j in 0..<10 { x[j] = Float(j) - 4.5; x[k + j] = 200 * (j % 2 == 0 ? 1 : -1) }
        let inverse: [Float] = [1, 0.37, 2.5, 0, 1.0 / 3]
        let ldq = Int(mq_s8_padded_k(Int32(k))) + 4
        for bits in [8, 6, 4] { KernelPaths.forEachInt8Level { level in
            let q = qmax(bits: bits)
            var out = [Int8](repeating: 99, count: m * ldq)
            mq_quantize_rows_s8(x, Int32(m), Int32(k), Int32(k), inverse, Int32(q), &out, Int32(ldq))
            for i in 0..<m {
                for j in 0..<ldq {
                    let want = j < k ? Int8(quantizeSymmetric(x[i * k + j], inverseScale: inverse[i], qmax: Float(q))) : 0
                    XCTAssertEqual(out[i * ldq + j], want, "bits \(bits) level \(level) [\(i), \(j)] x \(j < k ? x[i * k + j] : 0)")
                }
            }
            var absmax = [Float](repeating: -1, count: m)
            mq_absmax_rows_f32(x, Int32(m), Int32(k), Int32(k), &absmax)
            for i in 0..<m { XCTAssertEqual(absmax[i], x[(i * k)..<((i + 1) * k)].map(abs).max()!) }
        } }
    }

    /// The fake-quantize kernel (conv and SSM inputs) equals its plain definition bit for bit.
    func testFakeQuantizeEqualsItsDefinition() {
        var rng = SeededRandom(seed: freshSeed())
        let (m, k) = (6, 53)
        var x = Tensor(shape: [m, k], storage: (0..<(m * k)).map { _ in Float(rng.nextGaussian() * 3) })
        for j in 0..<8 { x.storage[j] = (Float(j) - 3.5) * 0.25 }      // ties at scale 0.25
        for j in 0..<k { x.storage[5 * k + j] = 0 }                      // an all-zero row (dynamic scale 0)
        KernelPaths.forEachInt8Level { level in
            for quantizer in [ActivationQuantizer(bits: 8, scale: .static(0.25)), ActivationQuantizer(bits: 4, scale: .static(0.3)),
                              ActivationQuantizer(bits: 8, scale: .dynamic), ActivationQuantizer(bits: 8, scale: .static(0))] {
                var (got, want) = (x, x)
                quantizer.fakeQuantize(&got)
                quantizer.fakeQuantizeReference(&want)
                XCTAssertEqual(got.storage, want.storage, "\(quantizer.scale) \(quantizer.bits) bits, level \(level)")
            }
        }
    }

    /// Fake quantization of a column block in place (Mamba-2's x, B and C inside the conv's output)
    /// gives the same bits as on the block copied out, and leaves the other columns alone: static,
    /// group, dynamic and block scales, every int8 path.
    func testFakeQuantizeOfColumnsInPlace() {
        var rng = SeededRandom(seed: freshSeed())
        let (m, k, columns) = (5, 47, 9..<33)
        let x = Tensor(shape: [m, k], storage: (0..<(m * k)).map { _ in Float(rng.nextGaussian() * 3) })
        KernelPaths.forEachInt8Level { level in
            for scale in [ActivationScale.static(0.2), .groups([0.1, 0.3, 0.05]), .dynamic, .dynamicBlocks(8)] {
                let quantizer = ActivationQuantizer(bits: 8, scale: scale)
                var (inPlace, part, want) = (x, x.columns(columns), x)
                quantizer.fakeQuantize(&inPlace, columns: columns)
                quantizer.fakeQuantize(&part)
                want.setColumns(columns, from: part)
                XCTAssertEqual(inPlace.storage, want.storage, "\(scale), level \(level)")
                XCTAssertNotEqual(inPlace.storage, x.storage, "\(scale): nothing quantized")
            }
        }
    }

    /// Int8Linear against ReferenceQuantizedLinear (quantize-dequantize in float): the same integers,
    /// so the outputs differ only by float rounding; static and dynamic scales, bias, 1 and 2 threads.
    func testInt8LinearMatchesTheReferenceLinear() {
        var rng = SeededRandom(seed: freshSeed())
        for (m, n, k) in [(1, 50, 70), (3, 33, 45), (17, 130, 96)] {
            let w = Matrix(rows: n, cols: k, data: (0..<(n * k)).map { _ in rng.nextGaussian() * 0.1 })
            let qw = QuantizedMatrix(quantizing: w, bits: 8)
            let x = Tensor(shape: [m, k], storage: (0..<(m * k)).map { _ in Float(rng.nextGaussian()) })
            let bias = Tensor(shape: [n], storage: (0..<n).map { _ in Float(rng.nextGaussian()) })
            for input in [ActivationQuantizer(bits: 8, scale: .static(x.absMax / 127 * 0.8)), ActivationQuantizer(bits: 8, scale: .dynamic),
                          ActivationQuantizer(bits: 6, scale: .static(0.05))] {
                let reference = ReferenceQuantizedLinear(weight: qw, bias: bias, input: input).forward(x, .serial)
                KernelPaths.forEachInt8Level { level in
                    for threads in [1, 2] {
                        let got = Int8Linear(weight: qw, bias: bias, input: input).forward(x, Parallelism(threads: threads))
                        XCTAssertEqual(got.shape, reference.shape)
                        XCTAssertLessThanOrEqual(maxAbsDifference(got.storage, reference.storage), 1e-5 * max(1, reference.absMax),
                                                 "m \(m) n \(n) k \(k) \(input.scale) level \(level) threads \(threads)")
                    }
                }
            }
        }
    }

    /// The online rotation fused into the input quantization (Int8Rows rotatedBy, each row rotated
    /// in cache) gives the integers and scales of rotating x first, and Int8Linear the same floats:
    /// static, dynamic and block scales, rows split between threads (131 rows: two chunks of at
    /// least 64), rotations with a 12 or 20 factor and a power of two, every int8 path.
    func testRotationFusedIntoTheInputQuantizationEqualsRotatingFirst() {
        var rng = SeededRandom(seed: freshSeed())
        for (m, n, k) in [(1, 50, 48), (3, 33, 160), (131, 40, 64)] {
            guard let hadamard = Hadamard(size: k) else { return XCTFail("no Hadamard of size \(k)") }
            let rotation = OnlineHadamard(signs: (0..<k).map { _ in rng.next() % 2 == 0 ? 1 : -1 }, hadamard: hadamard)
            let x = Tensor(shape: [m, k], storage: (0..<(m * k)).map { _ in Float(rng.nextGaussian() * 2) })
            let rotated = rotation.rotate(x)
            let qw = QuantizedMatrix(quantizing: Matrix(rows: n, cols: k, data: (0..<(n * k)).map { _ in rng.nextGaussian() * 0.1 }), bits: 8)
            let bias = Tensor(shape: [n], storage: (0..<n).map { _ in Float(rng.nextGaussian()) })
            for input in [ActivationQuantizer(bits: 8, scale: .static(rotated.absMax / 127 * 0.8)), ActivationQuantizer(bits: 8, scale: .dynamic),
                          ActivationQuantizer(bits: 8, scale: .dynamicBlocks(16))] {
                KernelPaths.forEachInt8Level { level in
                    for threads in [1, 2] {
                        let par = Parallelism(threads: threads)
                        let fused = Int8Rows(quantizing: x, with: input, rotatedBy: rotation, par)
                        let twoPasses = Int8Rows(quantizing: rotated, with: input, par)
                        let context = "m \(m) k \(k) \(input.scale) level \(level) threads \(threads)"
                        XCTAssertEqual(fused.values, twoPasses.values, context)
                        XCTAssertEqual(fused.scales, twoPasses.scales, context)
                        XCTAssertTrue(fused.values.contains { $0 != 0 }, context)
                        let linear = Int8Linear(weight: qw, bias: bias, input: input)
                        XCTAssertEqual(linear.forward(x, rotatedBy: rotation, par).storage, linear.forward(rotated, par).storage, context)
                    }
                }
            }
        }
    }

    /// Int8Conv against ReferenceQuantizedConv, across two calls that hand the state on; its fused
    /// SiLU against silu of its output.
    func testInt8ConvMatchesTheReferenceConv() {
        var rng = SeededRandom(seed: freshSeed())
        for (e, k) in [(37, 4), (64, 3), (5, 1), (130, 4)] {
            let w = Matrix(rows: e, cols: k, data: (0..<(e * k)).map { _ in rng.nextGaussian() * 0.5 })
            let qw = QuantizedMatrix(quantizing: w, bits: 8)
            let bias = Tensor(shape: [e], storage: (0..<e).map { _ in Float(rng.nextGaussian()) })
            let input = ActivationQuantizer(bits: 8, scale: .static(0.03))
            let (int8, reference) = (Int8Conv(weight: qw, bias: bias, input: input), ReferenceQuantizedConv(weight: qw, bias: bias, input: input))
            var (s1, s2) = ([Float](repeating: 0, count: (k - 1) * e), [Float](repeating: 0, count: (k - 1) * e))
            for l in [7, 1, 2, 70] {
                let x = Tensor(shape: [l, e], storage: (0..<(l * e)).map { _ in Float(rng.nextGaussian()) })
                let want = reference.forward(x, state: &s2, .serial)
                // Every path and thread count from the same state: the same floats.
                var outputs: [[Float]] = [], fusedOutputs: [[Float]] = [], states: [[Float]] = []
                KernelPaths.forEachInt8Level { level in
                    for threads in [1, 2] {
                        var state = s1
                        var fusedState = state
                        let got = int8.forward(x, state: &state, Parallelism(threads: threads))
                        XCTAssertLessThanOrEqual(maxAbsDifference(got.storage, want.storage), 1e-5 * max(1, want.absMax), "e \(e) k \(k) l \(l) level \(level)")
                        // The fused SiLU: silu of the same sums (row by row, so a row's tail of
                        // E mod 8 may take the scalar SiLU where the whole tensor's vector did).
                        let fused = int8.forwardSiLU(x, state: &fusedState, Parallelism(threads: threads))
                        XCTAssertLessThanOrEqual(maxAbsDifference(fused.storage, silu(got).storage), 1e-6 * max(1, want.absMax), "silu e \(e) k \(k) l \(l) level \(level)")
                        XCTAssertEqual(fusedState, state)
                        outputs.append(got.storage)
                        fusedOutputs.append(fused.storage)
                        states.append(state)
                    }
                }
                XCTAssertEqual(Set(outputs).count, 1, "e \(e) k \(k) l \(l): paths disagree")
                XCTAssertEqual(Set(fusedOutputs).count, 1, "e \(e) k \(k) l \(l): the fused SiLU's paths disagree")
                XCTAssertEqual(Set(states).count, 1, "e \(e) k \(k) l \(l): states disagree")
                s1 = states[0]
            }
        }
    }

    /// mq_conv_step_s8 (a decode step on the float-held state) against mq_conv_s8 over the state's
    /// integers and the quantized input, then the state moved up a row: the same floats, every path.
    func testConvStepEqualsTheConvOverTheStateAndTheInput() {
        var rng = SeededRandom(seed: freshSeed())
        for (e, k, qmax) in [(37, 4, 127), (130, 4, 127), (1_537, 4, 127), (64, 3, 31), (5, 1, 127), (19, 2, 127)] {
            let w = randomInt8(k * e, &rng)
            let outScale = (0..<e).map { _ in Float(0.001 + 0.01 * rng.nextUnit()) }
            let bias = (0..<e).map { _ in Float(rng.nextGaussian()) }
            let state = (0..<((k - 1) * e)).map { _ in Float(Int(rng.next() % UInt64(2 * qmax + 1)) - qmax) }
            let x = (0..<e).map { _ in Float(rng.nextGaussian()) }
            let inv: Float = 1 / 0.02
            // The reference: [state; quantize(x)] as int8 rows through mq_conv_s8.
            var q = state.map { Int8($0) } + [Int8](repeating: 0, count: e)
            q.withUnsafeMutableBufferPointer { qp in mq_quantize_rows_s8(x, 1, Int32(e), Int32(e), [inv], Int32(qmax), qp.baseAddress! + (k - 1) * e, Int32(e)) }
            for silu in [false, true] {
                var want = [Float](repeating: 0, count: e)
                let conv = silu ? mq_conv_silu_s8 : mq_conv_s8
                conv(q, 0, 1, Int32(e), Int32(k), w, outScale, bias, &want)
                let wantState = q[e...].map { Float($0) }
                KernelPaths.forEachInt8Level { level in
                    var got = [Float](repeating: 0, count: e)
                    var s = state
                    mq_conv_step_s8(&s, x, Int32(e), Int32(k), inv, Int32(qmax), w, outScale, bias, &got, silu ? 1 : 0)
                    XCTAssertEqual(got, want, "e \(e) k \(k) silu \(silu) level \(level)")
                    XCTAssertEqual(s, Array(wantState), "state: e \(e) k \(k) level \(level)")
                }
            }
        }
    }

    /// The whole quantized model on the int8 runtime gives the reference path's logits up to float
    /// rounding, prefill and decode alike.
    func testInt8ModelMatchesTheReferenceModel() throws {
        for name in ["tiny-untied-k3", "tiny-mamba2-g2-untied"] {
            try int8MatchesReference(name)
        }
    }

    func int8MatchesReference(_ name: String) throws {
        let w = try MambaWeights.load(directory: Fixtures.model(name))
        let file = try calibratedStats(w, text: (0..<300).map { ($0 * 7 + $0 / 9) % 50 }, samples: 4, seqLength: 24, seed: 1)
        let tokens = (0..<29).map { ($0 * 11 + 3) % 50 }
        var accurate = QuantizationRecipe(method: .mambaquant)
        QuantizationProfile.accurate.apply(to: &accurate, config: w.config)
        var q8 = QuantizationRecipe(method: .hadamard, groupSize: 8)   // Q8_0-like: blocks and groups of 8 on these widths
        q8.activations = .perTokenBlocks(8)
        for recipe in [QuantizationRecipe(method: .rtn), QuantizationRecipe(method: .mambaquant), accurate, q8] {
            let method = recipe.tag.isEmpty ? recipe.method.rawValue : recipe.tag
            let q = try QuantizedModel.quantize(weights: w, stats: file, recipe: recipe, parallelism: .serial)
            let reference = try q.model(runtime: .reference).logits(tokens)
            let int8 = q.model(runtime: .int8)
            let got = try int8.logits(tokens)
            XCTAssertLessThanOrEqual(maxAbsDifference(got.storage, reference.storage), 1e-3 * reference.absMax, "\(method) on \(name)")
            XCTAssertGreaterThan(reference.absMax, 0)
            // Decode: a prefill of all but the last token, then one step, equals the last row.
            var state = int8.makeState()
            _ = try int8.forward(Array(tokens.dropLast()), state: &state, logits: .none)
            let step = try int8.forward([tokens.last!], state: &state, logits: .all)
            let last = Array(got.storage[((tokens.count - 1) * got.cols)...])
            XCTAssertLessThanOrEqual(maxAbsDifference(step.storage, last), 1e-4 * reference.absMax, "\(method) decode on \(name)")
        }
    }
}
