import CMambaKernels
import MambaTensors
import TestSupport
import XCTest

/// The AMX GEMM (CMambaKernels/int8_amx.c): its loop nest over the plain-C tile instructions on
/// every CPU, and over the hardware tiles where the CPU has them (Int8OpsTests runs every path,
/// AMX included, on its shapes too). Shapes cover what the tiles pad: M below, at and past 16 and
/// 32 rows (and from 8, where mq_gemm_s8 takes the tiles), K short of a 64-byte tile and whole tiles (read in place), an odd panel count (a last
/// panel without its pair) and a range starting at an odd panel (the threads' split).
final class Int8AMXTests: XCTestCase {
    static let shapes = [(16, 16, 64), (17, 37, 45), (40, 100, 200), (64, 33, 256), (33, 48, 130), (1, 20, 70), (96, 17, 4), (9, 40, 100)]

    /// Random a [m, padded k] (zero padded), the weights' int8 panels and column sums, and the
    /// definition's sums.
    func operands(_ m: Int, _ n: Int, _ k: Int, _ rng: inout SeededRandom, int4: Bool) -> (a: [Int8], w: [Int8], packed: [Int8], sums: [Int32], want: [Int32]) {
        let kp = Int(mq_s8_padded_k(Int32(k)))
        var a = [Int8](repeating: 0, count: m * kp)
        let values = randomInt8(m * k, &rng)
        for i in 0..<m { for j in 0..<k { a[i * kp + j] = values[i * k + j] } }
        let w = int4 ? (0..<(n * k)).map { _ in Int8(Int(rng.next() % 16) - 8) } : randomInt8(n * k, &rng)
        var want = [Int32](repeating: 0, count: m * n)
        mq_gemm_s8_reference(Int32(m), Int32(n), Int32(k), a, Int32(kp), w, Int32(k), &want, Int32(n))
        var packed = [Int8](repeating: 0, count: mq_s8_packed_bytes(Int32(n), Int32(k)))
        var sums = [Int32](repeating: 0, count: n)
        mq_s8_pack(w, Int32(n), Int32(k), Int32(k), &packed, &sums)
        if int4 {
            var half = [Int8](repeating: 0, count: mq_s4_packed_bytes(Int32(n), Int32(k)))
            half.withUnsafeMutableBytes { mq_s4_pack(packed, Int32(n), Int32(k), $0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
            packed = half
        }
        return (a, w, packed, sums, want)
    }

    /// The tiling over the plain-C tiles: the exact int32 sums, int8 and int4 panels, whole and
    /// split panel ranges.
    func testEmulatedTilesEqualTheReference() {
        var rng = SeededRandom(seed: freshSeed())
        for int4 in [false, true] {
            for (m, n, k) in Self.shapes {
                let o = operands(m, n, k, &rng, int4: int4)
                let panels = Int32((n + 15) / 16)
                for split in [[0..<panels], [0..<1, 1..<panels]] {
                    let got = int8Accumulators(m: m, n: n, k: k, a: o.a, packed: o.packed, sums: o.sums, panels: split,
                                               weightBits: int4 ? 4 : 8, gemm: { mq_gemm_s8_amx_emulated($0) })
                    XCTAssertEqual(got, o.want, "m \(m) n \(n) k \(k) int4 \(int4) panels \(split)")
                }
            }
        }
    }

    /// The hardware tiles: the same sums, and the float epilogue (with a bias) the same floats as
    /// the VNNI path's.
    func testHardwareTilesEqualTheReference() throws {
        guard mq_s8_level() >= 3 else { throw XCTSkip("this CPU has no AMX tiles (or the kernel did not grant them)") }
        var rng = SeededRandom(seed: freshSeed())
        for int4 in [false, true] {
            for (m, n, k) in Self.shapes where m >= 8 {   // MQ_AMX_MIN_ROWS: mq_gemm_s8 takes the tiles
                let o = operands(m, n, k, &rng, int4: int4)
                let panels = Int32((n + 15) / 16)
                for split in [[0..<panels], [0..<1, 1..<panels]] {
                    let got = int8Accumulators(m: m, n: n, k: k, a: o.a, packed: o.packed, sums: o.sums, panels: split, weightBits: int4 ? 4 : 8)
                    XCTAssertEqual(got, o.want, "m \(m) n \(n) k \(k) int4 \(int4) panels \(split)")
                }
                let aScale = (0..<m).map { _ in Float(rng.nextUnit() + 0.01) * 0.02 }
                let wScale = (0..<n).map { _ in Float(rng.nextUnit() + 0.01) * 0.03 }
                let bias = (0..<n).map { _ in Float(rng.nextGaussian()) }
                var floats: [[Float]] = []
                KernelPaths.forEachInt8Level { level in
                    guard level >= 2 else { return }
                    var c = [Float](repeating: .nan, count: m * n)
                    o.a.withUnsafeBufferPointer { ap in
                        o.packed.withUnsafeBufferPointer { pp in
                            o.sums.withUnsafeBufferPointer { sp in
                                aScale.withUnsafeBufferPointer { asp in
                                    wScale.withUnsafeBufferPointer { wsp in
                                        bias.withUnsafeBufferPointer { bp in
                                            c.withUnsafeMutableBufferPointer { cp in
                                                var args = mq_gemm_s8_args(
                                                    m: Int32(m), n: Int32(n), k: Int32(k), a: ap.baseAddress, lda: mq_s8_padded_k(Int32(k)),
                                                    packed: pp.baseAddress, col_sums: sp.baseAddress, panel_begin: 0, panel_end: panels,
                                                    a_scale: asp.baseAddress, w_scale: wsp.baseAddress, bias: bp.baseAddress, c: cp.baseAddress,
                                                    ldc: Int32(n), acc: nil, ldacc: 0, weight_bits: int4 ? 4 : 8, quantized_columns: nil)
                                                mq_gemm_s8(&args)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    floats.append(c)
                }
                XCTAssertEqual(floats.count, 2)
                XCTAssertEqual(floats[1], floats[0], "m \(m) n \(n) k \(k) int4 \(int4): AMX's epilogue against VNNI's")
                XCTAssertFalse(floats[1].contains { $0.isNaN }, "every output written")
            }
        }
    }
}
