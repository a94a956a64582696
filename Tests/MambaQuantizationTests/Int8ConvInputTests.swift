import CMambaKernels
import Foundation
import MambaCalibration
import MambaModel
import MambaQuantization
import MambaTensors
import MambaTransforms
import TestSupport
import XCTest

// The conv's input quantized in in_proj's epilogue (Int8Ops.swift: Int8Linear.forward(_:quantizing:
// into:), Int8Conv.quantizedInput; int8.c: mq_s8_column_quantizer), kept apart from
// Int8OpsTests.swift for length. The property throughout: the integers written in the epilogue are
// the float output quantized afterwards, so a fused prefill gives the unfused one's logits exactly.
final class Int8ConvInputTests: XCTestCase {
    /// mq_gemm_s8 over the given panel ranges (the threads' split), into c [m, n] or, with a
    /// quantizer, c [m, begin], its q and its `after`.
    func gemm(m: Int, n: Int, k: Int, a: [Int8], packed: [Int8], sums: [Int32], aScale: [Float], wScale: [Float], bias: [Float]?,
              panels: [Range<Int32>], quantizer: mq_s8_column_quantizer?, c: inout [Float]) {
        let ldc = quantizer.map { Int($0.begin) } ?? n
        func run(_ columns: UnsafePointer<mq_s8_column_quantizer>?) {
            for r in panels {
                var args = mq_gemm_s8_args(
                    m: Int32(m), n: Int32(n), k: Int32(k), a: a, lda: mq_s8_padded_k(Int32(k)), packed: packed, col_sums: sums,
                    panel_begin: r.lowerBound, panel_end: r.upperBound, a_scale: aScale, w_scale: wScale, bias: bias,
                    c: &c, ldc: Int32(ldc), acc: nil, ldacc: 0, weight_bits: 8, quantized_columns: columns)
                mq_gemm_s8(&args)
            }
        }
        guard var quantizer else { return run(nil) }
        withUnsafePointer(to: &quantizer) { run($0) }
    }

    /// Columns [begin, end) written as int8 in the epilogue equal mq_quantize_rows_s8 of the floats
    /// the plain GEMM writes there, and the columns before and after the range are those floats:
    /// every path, with and without a bias, ranges inside, across and at the ends of
    /// 16-column panels, one row (decode's kernels) and many, the panels in one call or two.
    func testColumnsQuantizedInTheEpilogueAreTheFloatsQuantized() {
        var rng = SeededRandom(seed: freshSeed())
        for (m, n, k, begin, end) in [(1, 51, 45, 5, 37), (7, 100, 67, 0, 48), (19, 83, 130, 32, 83), (3, 40, 8, 17, 18), (6, 64, 36, 16, 48),
                                         (40, 100, 64, 16, 80), (33, 70, 96, 7, 64)] {
            let kp = Int(mq_s8_padded_k(Int32(k)))
            var a = [Int8](repeating: 0, count: m * kp)
            let values = randomInt8(m * k, &rng)
            for i in 0..<m { for j in 0..<k { a[i * kp + j] = values[i * k + j] } }
            var packed = [Int8](repeating: 0, count: mq_s8_packed_bytes(Int32(n), Int32(k)))
            var sums = [Int32](repeating: 0, count: n)
            mq_s8_pack(randomInt8(n * k, &rng), Int32(n), Int32(k), Int32(k), &packed, &sums)
            let aScale = (0..<m).map { _ in Float(rng.nextUnit() + 0.01) * 0.02 }
            let wScale = (0..<n).map { _ in Float(rng.nextUnit() + 0.01) * 0.03 }
            let bias = (0..<n).map { _ in Float(rng.nextGaussian()) }
            let panelCount = Int32((n + 15) / 16)
            let width = end - begin
            for withBias in [false, true] {
                KernelPaths.forEachInt8Level { level in
                    var plain = [Float](repeating: .nan, count: m * n)
                    gemm(m: m, n: n, k: k, a: a, packed: packed, sums: sums, aScale: aScale, wScale: wScale, bias: withBias ? bias : nil,
                         panels: [0..<panelCount], quantizer: nil, c: &plain)
                    // A static scale that clips some values, as a calibrated one does.
                    var absmax: Float = 0
                    for i in 0..<m { for j in begin..<end { absmax = max(absmax, abs(plain[i * n + j])) } }
                    let inverse: Float = 127 / (0.7 * absmax)
                    var want = [Int8](repeating: 0, count: m * width)
                    plain.withUnsafeBufferPointer { p in
                        mq_quantize_rows_s8(p.baseAddress! + begin, Int32(m), Int32(width), Int32(n), [Float](repeating: inverse, count: m), 127, &want, Int32(width))
                    }
                    var (wantBefore, wantAfter): ([Float], [Float]) = ([], [])
                    for i in 0..<m {
                        wantBefore += plain[(i * n)..<(i * n + begin)]
                        wantAfter += plain[(i * n + end)..<(i * n + n)]
                    }
                    for split in [[0..<panelCount], [0..<panelCount / 2, panelCount / 2..<panelCount]] {
                        var q = [Int8](repeating: 99, count: m * width)
                        var before = [Float](repeating: .nan, count: m * begin)
                        var after = [Float](repeating: .nan, count: m * (n - end))
                        q.withUnsafeMutableBufferPointer { qp in
                            after.withUnsafeMutableBufferPointer { ap in
                                let quantizer = mq_s8_column_quantizer(begin: Int32(begin), end: Int32(end), inv_scale: inverse, qmax: 127,
                                                                       q: qp.baseAddress, ldq: Int32(width), after: ap.baseAddress, ldafter: Int32(n - end))
                                gemm(m: m, n: n, k: k, a: a, packed: packed, sums: sums, aScale: aScale, wScale: wScale, bias: withBias ? bias : nil,
                                     panels: split, quantizer: quantizer, c: &before)
                            }
                        }
                        let context = "m \(m) n \(n) k \(k) [\(begin), \(end)) bias \(withBias) level \(level) calls \(split.count)"
                        XCTAssertEqual(q, want, context)
                        XCTAssertEqual(before, wantBefore, context)
                        XCTAssertEqual(after, wantAfter, context)
                        // The scale clips some values and leaves others inside (a range of a few values, as
                        // [17, 18) with 3 rows, may have all of them clipped).
                        if q.count >= 16 { XCTAssertTrue(q.contains { $0 == 127 || $0 == -127 } && q.contains { $0 != 0 && abs(Int($0)) < 127 }, context) }
                    }
                }
            }
        }
    }

    /// Ties round away from zero in the epilogue's quantization as in mq_quantize_rows_s8 (the
    /// registers' rounding is to even): unit scales and an inverse scale of 0.5 make every odd sum
    /// a tie, on every path, one row and past the AMX threshold.
    func testQuantizedColumnsRoundTiesAwayFromZero() {
        var rng = SeededRandom(seed: freshSeed())
        for m in [1, 5, 37] {
            let (n, k) = (48, 8)
            // Each row's first value 1 and the others even, so a sum's parity is its weight row's
            // first value's: odd (a tie) in column 0 always, and in others at random.
            var a = randomInt8(m * k, &rng, limit: 1).map { 2 * $0 }
            for i in 0..<m { a[i * k] = 1 }
            var packed = [Int8](repeating: 0, count: mq_s8_packed_bytes(Int32(n), Int32(k)))
            var sums = [Int32](repeating: 0, count: n)
            var w = randomInt8(n * k, &rng, limit: 3)
            w[0] = 1
            mq_s8_pack(w, Int32(n), Int32(k), Int32(k), &packed, &sums)
            var acc = [Int32](repeating: 0, count: m * n)
            mq_gemm_s8_reference(Int32(m), Int32(n), Int32(k), a, Int32(k), w, Int32(k), &acc, Int32(n))
            let want = acc.map { Int8(($0 < 0 ? -1 : 1) * ((abs(Int($0)) + 1) / 2)) }   // |acc| / 2, halves away from zero
            XCTAssertTrue(acc.contains { $0 % 2 != 0 } && acc.contains { $0 % 2 != 0 && $0 < 0 }, "ties of both signs")
            KernelPaths.forEachInt8Level { level in
                var q = [Int8](repeating: 99, count: m * n)
                var none: [Float] = []
                q.withUnsafeMutableBufferPointer { qp in
                    let quantizer = mq_s8_column_quantizer(begin: 0, end: Int32(n), inv_scale: 0.5, qmax: 127, q: qp.baseAddress, ldq: Int32(n),
                                                           after: nil, ldafter: 0)
                    gemm(m: m, n: n, k: k, a: a, packed: packed, sums: sums, aScale: [Float](repeating: 1, count: m),
                         wScale: [Float](repeating: 1, count: n), bias: nil, panels: [0..<3], quantizer: quantizer, c: &none)
                }
                XCTAssertEqual(q, want, "m \(m) level \(level)")
            }
        }
    }

    /// Int8Linear writing the conv's integers (rows K-1 on of the conv's input) and Int8Conv
    /// convolving them: the floats and the state of quantizing in_proj's float output in the conv,
    /// across two calls that hand the state on; 1 and 2 threads.
    func testInt8LinearIntoTheConvEqualsTheConvOfItsFloats() {
        var rng = SeededRandom(seed: freshSeed())
        for (d, e, k, begin) in [(24, 37, 4, 0), (40, 64, 3, 19), (17, 20, 2, 33)] {
            let n = begin + e + 11
            let qw = QuantizedMatrix(quantizing: Matrix(rows: n, cols: d, data: (0..<(n * d)).map { _ in rng.nextGaussian() * 0.2 }), bits: 8)
            let bias = Tensor(shape: [n], storage: (0..<n).map { _ in Float(rng.nextGaussian() * 0.1) })
            let linear = Int8Linear(weight: qw, bias: bias, input: ActivationQuantizer(bits: 8, scale: .static(0.02)))
            let cw = QuantizedMatrix(quantizing: Matrix(rows: e, cols: k, data: (0..<(e * k)).map { _ in rng.nextGaussian() * 0.5 }), bits: 8)
            let conv = Int8Conv(weight: cw, bias: Tensor(shape: [e], storage: (0..<e).map { _ in Float(rng.nextGaussian()) }),
                                input: ActivationQuantizer(bits: 8, scale: .static(0.01)))
            for threads in [1, 2] {
                let par = Parallelism(threads: threads)
                var (fusedState, plainState) = ([Float](repeating: 0, count: (k - 1) * e), [Float](repeating: 0, count: (k - 1) * e))
                for l in [9, 70] {
                    let x = Tensor(shape: [l, d], storage: (0..<(l * d)).map { _ in Float(rng.nextGaussian()) })
                    let y = linear.forward(x, par)
                    let want = conv.forwardSiLU(y.columns(begin..<(begin + e)), state: &plainState, par)
                    guard var input = conv.quantizedInput(rows: l, state: fusedState),
                          let rest = linear.forward(x, quantizing: begin..<(begin + e), into: &input, par) else {
                        return XCTFail("Int8Linear and Int8Conv fuse for a prompt of \(l)")
                    }
                    let got = conv.forwardSiLU(input, state: &fusedState, par)
                    let context = "d \(d) e \(e) k \(k) begin \(begin) l \(l) threads \(threads)"
                    XCTAssertEqual(got.storage, want.storage, context)
                    XCTAssertEqual(fusedState, plainState, context)
                    XCTAssertEqual(rest.before.shape, [l, begin], context)
                    XCTAssertEqual(rest.before.storage, y.columns(0..<begin).storage, context)
                    XCTAssertEqual(rest.after.storage, y.columns((begin + e)..<n).storage, context)
                }
                XCTAssertNil(conv.quantizedInput(rows: 1, state: fusedState), "decode's step quantizes inline")
            }
            XCTAssertTrue(linear.quantizesColumns)
            // Block-scaled weights (group recipes): no column quantizer, so the mixers leave the conv on floats.
            let grouped = Int8Linear(weight: QuantizedMatrix(quantizing: Matrix(qw.dequantized()), bits: 8, groupSize: 8), bias: bias,
                                     input: ActivationQuantizer(bits: 8, scale: .static(0.02)))
            XCTAssertFalse(grouped.quantizesColumns)
            var input = conv.quantizedInput(rows: 5, state: [Float](repeating: 0, count: (k - 1) * e))!
            XCTAssertNil(grouped.forward(Tensor(zeros: [5, d]), quantizing: begin..<(begin + e), into: &input, .serial))
        }
    }

    /// A whole int8 model's prefill with the fused conv input gives the logits of the unfused one
    /// (an observer, as calibration passes, turns the fusion off) to the bit, over two prompt calls
    /// and a decode step, Mamba-1 and Mamba-2, every path, 1 and 2 threads.
    func testFusedPrefillGivesTheUnfusedLogits() throws {
        final class Silent: ActivationObserver { func observe(_ activation: Tensor, site: Site, layer: Int?) {} }
        for name in ["tiny-untied-k3", "tiny-mamba2-g2-untied"] {
            let w = try MambaWeights.load(directory: Fixtures.model(name))
            let stats = try calibratedStats(w, text: (0..<300).map { ($0 * 7 + $0 / 9) % 50 }, samples: 4, seqLength: 24, seed: 1)
            let model = try QuantizedModel.quantize(weights: w, stats: stats, recipe: QuantizationRecipe(method: .mambaquant), parallelism: .serial)
                .model(runtime: .int8)
            let tokens = (0..<29).map { ($0 * 11 + 3) % 50 }
            try KernelPaths.forEachInt8Level { level in
                for threads in [1, 2] {
                    let par = Parallelism(threads: threads)
                    var (fused, plain) = (model.makeState(), model.makeState())
                    for part in [0..<13, 13..<28, 28..<29] {
                        let chunk = Array(tokens[part])
                        let got = try model.forward(chunk, state: &fused, logits: .all, parallelism: par)
                        let want = try model.forward(chunk, state: &plain, logits: .all, parallelism: par, observer: Silent())
                        XCTAssertEqual(got.storage, want.storage, "\(name) tokens \(part) level \(level) threads \(threads)")
                    }
                }
            }
        }
    }
}
