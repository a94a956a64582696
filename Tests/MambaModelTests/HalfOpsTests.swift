import CMambaKernels
import Foundation
@testable import MambaModel
import MambaTensors
import TestSupport
import XCTest

final class HalfOpsTests: XCTestCase {
    override func tearDown() { mq_force_scalar(0) }

    /// Random 16-bit weights of roughly unit scale (never NaN or Inf).
    private func randomHalf(_ format: HalfFormat, rows: Int, cols: Int, seed: UInt64) -> HalfMatrix {
        let values = randomTensor([rows, cols], seed: seed, scale: 1).storage
        let bits = values.map { format == .bf16 ? floatToBF16($0) : Float16($0).bitPattern }
        return HalfMatrix(format: format, rows: rows, cols: cols, bits: bits)
    }

    /// Widening is exact on both paths for every 16-bit pattern: Swift's own conversions are the
    /// reference (NaNs only need to stay NaN).
    func testWideningIsExactForEveryBitPattern() {
        let all = (0...UInt16.max).map { $0 }
        for format in [HalfFormat.bf16, .f16] {
            let expected = all.map { format == .bf16 ? bf16ToFloat($0) : Float(Float16(bitPattern: $0)) }
            for scalar in [true, false] {
                mq_force_scalar(scalar ? 1 : 0)
                let got = HalfMatrix(format: format, rows: 1, cols: all.count, bits: all).widened().storage
                for (i, (g, e)) in zip(got, expected).enumerated() {
                    if e.isNaN { XCTAssertTrue(g.isNaN, "\(format) \(i)") } else if g.bitPattern != e.bitPattern {
                        XCTFail("\(format) bits \(i): \(g) != \(e) (scalar \(scalar))")
                        break
                    }
                }
            }
        }
    }

    func testFirstNonFiniteFindsInfinityAndNaN() {
        for format in [HalfFormat.bf16, .f16] {
            let inf: UInt16 = format == .bf16 ? 0x7F80 : 0x7C00, nan: UInt16 = format == .bf16 ? 0xFFC1 : 0xFE01
            var bits = randomHalf(format, rows: 1, cols: 101, seed: freshSeed(in: 0...999999)).bits
            XCTAssertEqual(mq_first_nonfinite_half(bits, format.kernelFormat, bits.count), bits.count)
            bits[57] = nan
            bits[90] = inf
            XCTAssertEqual(mq_first_nonfinite_half(bits, format.kernelFormat, bits.count), 57)
            bits[57] = 0
            XCTAssertEqual(mq_first_nonfinite_half(bits, format.kernelFormat, bits.count), 90)
        }
    }

    /// HalfLinear (GEMV kernel up to gemvRows rows, widened panels and sgemm above) against the
    /// widened matrix through the float32 FloatLinear, on both kernel paths and odd shapes; one
    /// shape spans several widened panels.
    func testHalfLinearMatchesWidenedReference() {
        let seed = freshSeed(in: 0...999999)
        let shapes = [(1, 1, 1), (1, 37, 19), (3, 100, 65), (5, 17, 250), (8, 64, 33), (9, 37, 19), (33, 130, 71), (12, 1000, 1100)]
        for format in [HalfFormat.bf16, .f16] {
            for scalar in [true, false] {
                mq_force_scalar(scalar ? 1 : 0)
                for (i, (m, k, n)) in shapes.enumerated() {
                    let s = seed &+ UInt64(31 * i)
                    let w = randomHalf(format, rows: n, cols: k, seed: s)
                    let bias = randomTensor([n], seed: s + 1)
                    let x = randomTensor([m, k], seed: s + 2, scale: 2)
                    let got = HalfLinear(weight: w, bias: bias).forward(x, Parallelism(threads: 2))
                    let want = FloatLinear(weight: w.widened(), bias: bias).forward(x, .serial)
                    XCTAssertEqual(got.shape, [m, n])
                    // Only the summation order differs: bound by k ulps of the largest term.
                    let bound = 4e-7 * Float(k) * x.absMax * w.widened().absMax + 1e-6
                    XCTAssertLessThan(maxAbsDifference(got.storage, want.storage), bound, "\(format) m\(m) k\(k) n\(n) scalar \(scalar) seed \(seed)")
                }
            }
        }
    }

    func testHalfEmbeddingWidensRows() {
        let table = randomHalf(.bf16, rows: 11, cols: 7, seed: 5)
        let tokens = [3, 0, 10, 3]
        XCTAssertEqual(HalfEmbedding(table: table).forward(tokens), FloatEmbedding(table: table.widened()).forward(tokens))
    }

    /// The float runtime keeps a 16-bit checkpoint's matrices in 16 bits and gives the logits of
    /// the whole-model float32 widening (the transformers comparison is ReferenceLogitsTests).
    func testSixteenBitCheckpointRunsInPlace() throws {
        let tokens = [1, 5, 2, 9, 4, 4, 7, 3, 0, 6, 2]
        for name in ["tiny-untied-k3", "tiny-statespaces", "tiny-falcon-untied-bf16"] {
            let checkpoint = try CheckpointWeights(directory: Fixtures.model(name))
            let inPlace = try MambaLM(checkpoint: checkpoint)
            XCTAssertTrue(inPlace.lmHead is HalfLinear, name)
            XCTAssertTrue(inPlace.embedding is HalfEmbedding, name)
            XCTAssertLessThan(Double(checkpoint.runtimeBytes), 0.6 * 4 * Double(checkpoint.parameterCount), name)
            let widened = MambaLM(weights: try checkpoint.all())
            let (a, b) = (try inPlace.logits(tokens), try widened.logits(tokens))
            XCTAssertLessThan(maxAbsDifference(a.storage, b.storage), 1e-5 * max(1, b.absMax), name)
            // Decode (one row: the GEMV path) agrees with prefill.
            var state = inPlace.makeState()
            var last = Tensor(zeros: [0])
            for t in tokens { last = try inPlace.forward([t], state: &state, logits: .last) }
            XCTAssertLessThan(maxAbsDifference(last.storage, Array(a[row: tokens.count - 1])), 1e-4 * max(1, b.absMax), name)
        }
        XCTAssertTrue(try MambaLM.load(directory: Fixtures.model("tiny-tied")).lmHead is FloatLinear, "an F32 checkpoint stays float32")
    }

    func testFloatRuntimeRefusedWhenItCannotFit() throws {
        let checkpoint = try CheckpointWeights(directory: Fixtures.model("tiny-falcon-untied-bf16"))
        XCTAssertThrowsError(try MambaLM(checkpoint: checkpoint, available: 1000)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("bf16 weights") && message.contains("MemAvailable"), message)
        }
    }
}
