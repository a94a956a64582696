import MambaQuantization
import MambaTensors
import MambaTransforms
import TestSupport
import XCTest

/// The quantizers against their definitions (docs/DESIGN.md section 2): symmetric, round half away
/// from zero, [-qmax, qmax], one scale per row or per group.
final class QuantizedMatrixTests: XCTestCase {
    func randomMatrix(_ rows: Int, _ cols: Int, seed: UInt64) -> Matrix {
        var rng = SeededRandom(seed: seed)
        var m = Matrix(rows: rows, cols: cols, data: [Double](repeating: 0, count: rows * cols))
        for r in 0..<rows { for c in 0..<cols { m[r, c] = rng.nextGaussian() * Double(r % 3 + 1) } }
        return m
    }

    func testRoundingIsHalfAwayFromZeroAndClamped() {
        XCTAssertEqual(quantizeSymmetric(2.5, inverseScale: 1, qmax: 127), 3)
        XCTAssertEqual(quantizeSymmetric(-2.5, inverseScale: 1, qmax: 127), -3)
        XCTAssertEqual(quantizeSymmetric(2.49, inverseScale: 1, qmax: 127), 2)
        XCTAssertEqual(quantizeSymmetric(1000, inverseScale: 1, qmax: 127), 127)
        XCTAssertEqual(quantizeSymmetric(-1000, inverseScale: 1, qmax: 127), -127)   // never -128
        XCTAssertEqual(quantizeSymmetric(-9, inverseScale: 1, qmax: 7), -7)
        XCTAssertEqual(qmax(bits: 8), 127)
        XCTAssertEqual(qmax(bits: 4), 7)
        XCTAssertEqual(qmax(bits: 6), 31)
    }

    func testPerRowInt8ErrorIsAtMostHalfAStep() {
        let seed = freshSeed(in: 0...1_000_000)
        let w = randomMatrix(7, 37, seed: seed)
        let q = QuantizedMatrix(quantizing: w, bits: 8)
        XCTAssertEqual(q.scaleShape, [7])
        let d = q.dequantized()
        for r in 0..<7 {
            var absmax = 0.0
            for c in 0..<37 { absmax = max(absmax, abs(w[r, c])) }
            XCTAssertEqual(Double(q.scales[r]), absmax / 127, accuracy: 1e-6 * absmax, "seed \(seed)")
            XCTAssertTrue((0..<37).contains { abs(q.values[r * 37 + $0]) == 127 }, "row \(r): absmax maps to 127")
            for c in 0..<37 {
                XCTAssertLessThanOrEqual(abs(Double(d.storage[r * 37 + c]) - w[r, c]), Double(q.scales[r]) * 0.5 * (1 + 1e-5), "seed \(seed)")
            }
        }
        XCTAssertFalse(q.values.contains(-128))
    }

    /// The integers are quantizeSymmetric of each value narrowed to float32, on the scale chosen,
    /// whatever path rounds them (QuantizedMatrix.quantizeGroup: the int8 kernels' row quantizer),
    /// and the scale is the one the clipping search's definition picks (the candidate of least
    /// squared error, summed in Double in column order): long rows, groups, 8 and 4 bits, exact
    /// ties (the scale a power of 2, values at half steps) and clipped values (4 bits' search).
    func testIntegersAreTheScalarRoundingOfEachValue() {
        var rng = SeededRandom(seed: freshSeed())
        let (rows, cols) = (3, 2_571)
        var w = Matrix(rows: rows, cols: cols, data: (0..<(rows * cols)).map { _ in rng.nextGaussian() })
        for c in 0..<cols { w[1, c] = (Double(Int(rng.nextUnit() * 250)) - 125 + (c % 3 == 0 ? 0.5 : 0.3)) / 64 }
        w[1, 3] = 127.0 / 64   // row 1's absmax: a scale of 1/64 at 8 bits, so the half steps above are ties
        KernelPaths.forEachInt8Level { level in
            for (bits, group) in [(8, nil), (8, 300), (4, nil), (4, 128)] as [(Int, Int?)] {
                let q = QuantizedMatrix(quantizing: w, bits: bits, groupSize: group)
                let (g, groups) = (group ?? cols, q.groupsPerRow)
                let qm = Double(qmax(bits: bits))
                for r in 0..<rows {
                    for gi in 0..<groups {
                        let values = (gi * g..<min(cols, (gi + 1) * g)).map { w[r, $0] }
                        let absmax = values.map(abs).max()!
                        var best = (error: Double.infinity, scale: Float(0))
                        for ratio in bits == 8 ? [1.0] : stride(from: 1.0, through: 0.5, by: -0.025).map({ $0 }) {
                            let scale = Float(absmax * ratio / qm)
                            var err = 0.0
                            for v in values {
                                let d = Double(quantizeSymmetric(Float(v), inverseScale: 1 / scale, qmax: Float(qm))) * Double(scale) - v
                                err += d * d
                            }
                            if err < best.error { best = (err, scale) }
                        }
                        XCTAssertEqual(q.scales[r * groups + gi], best.scale, "bits \(bits) group \(String(describing: group)) level \(level): row \(r) group \(gi)")
                    }
                    for c in 0..<cols {
                        let scale = q.scales[r * groups + c / g]
                        let want = Int8(quantizeSymmetric(Float(w[r, c]), inverseScale: scale > 0 ? 1 / scale : 0, qmax: Float(qm)))
                        if q.values[r * cols + c] != want {
                            return XCTFail("bits \(bits) group \(String(describing: group)) level \(level): [\(r), \(c)] \(q.values[r * cols + c]) != \(want)")
                        }
                    }
                }
                if bits == 8, group == nil { XCTAssertEqual(q.scales[1], 1.0 / 64, "level \(level)") }
            }
        }
    }

    func testGroupsHaveTheirOwnScales() {
        let w = randomMatrix(3, 13, seed: 21)
        let q = QuantizedMatrix(quantizing: w, bits: 8, groupSize: 5)
        XCTAssertEqual(q.scaleShape, [3, 3])             // 5 + 5 + 3 columns
        for r in 0..<3 {
            for (g, cols) in [0..<5, 5..<10, 10..<13].enumerated() {
                let absmax = cols.map { abs(w[r, $0]) }.max()!
                XCTAssertEqual(Double(q.scales[r * 3 + g]), absmax / 127, accuracy: 1e-6 * absmax)
            }
        }
    }

    func testInt4ClippingSearchNeverLosesToPlainAbsmax() {
        var rng = SeededRandom(seed: freshSeed(in: 0...1_000_000))
        var w = randomMatrix(9, 41, seed: rng.next())
        w[2, 3] = 25                                      // an outlier makes clipping pay
        let q = QuantizedMatrix(quantizing: w, bits: 4)
        XCTAssertTrue(q.values.allSatisfy { (-7...7).contains($0) })
        let d = q.dequantized()
        for r in 0..<9 {
            let absmax = (0..<41).map { abs(w[r, $0]) }.max()!
            let plainScale = absmax / 7
            var plain = 0.0, searched = 0.0
            for c in 0..<41 {
                let p = Double(quantizeSymmetric(Float(w[r, c]), inverseScale: Float(1 / plainScale), qmax: 7)) * plainScale
                plain += (p - w[r, c]) * (p - w[r, c])
                searched += (Double(d.storage[r * 41 + c]) - w[r, c]) * (Double(d.storage[r * 41 + c]) - w[r, c])
            }
            XCTAssertLessThanOrEqual(searched, plain * (1 + 1e-6), "row \(r)")
        }
    }

    /// int4 packing (format 2): low nibble first, two's complement, odd rows padded; the round trip
    /// is exact for every value in [-7, 7].
    func testInt4PacksTwoPerByteLowNibbleFirst() {
        let m = QuantizedMatrix(rows: 2, cols: 3, bits: 4, groupSize: nil, values: [1, -1, 7, -7, 0, 3], scales: [1, 1])
        XCTAssertEqual(m.packedInt4, [0xF1, 0x07, 0x09, 0x03])
        var rng = SeededRandom(seed: freshSeed())
        for (rows, cols) in [(1, 1), (3, 7), (5, 64), (2, 129)] {
            let values = (0..<(rows * cols)).map { _ in Int8(Int(rng.next() % 15) - 7) }
            let q = QuantizedMatrix(rows: rows, cols: cols, bits: 4, groupSize: nil, values: values, scales: [Float](repeating: 1, count: rows))
            XCTAssertEqual(q.packedInt4.count, rows * ((cols + 1) / 2))
            XCTAssertEqual(QuantizedMatrix.unpackInt4(q.packedInt4, rows: rows, cols: cols), values, "\(rows) x \(cols)")
            XCTAssertEqual(q.storedBytes, rows * ((cols + 1) / 2) + 4 * rows)
        }
    }

    func testZeroRowGetsZeroScale() {
        var w = randomMatrix(2, 5, seed: 3)
        for c in 0..<5 { w[1, c] = 0 }
        let q = QuantizedMatrix(quantizing: w, bits: 8)
        XCTAssertEqual(q.scales[1], 0)
        XCTAssertEqual(Array(q.dequantized().storage[5...]), [0, 0, 0, 0, 0])
    }

    func testActivationFakeQuantization() {
        var rng = SeededRandom(seed: freshSeed(in: 0...1_000_000))
        let x = Tensor(shape: [3, 11], storage: (0..<33).map { _ in Float(rng.nextGaussian()) * 3 })
        // Dynamic: each row's absmax is exact, every value on that row's grid.
        var d = x
        ActivationQuantizer(bits: 8, scale: .dynamic).fakeQuantize(&d)
        for r in 0..<3 {
            let row = Array(x.storage[(r * 11)..<(r * 11 + 11)])
            let s = row.map(abs).max()! / 127
            for j in 0..<11 {
                let v = d.storage[r * 11 + j]
                XCTAssertEqual((v / s).rounded(), v / s, accuracy: 1e-3)
                XCTAssertLessThanOrEqual(abs(v - row[j]), s * 0.5 * 1.0001)
            }
        }
        // Static: values beyond the clip saturate at +-qmax * scale.
        var st = x
        ActivationQuantizer(bits: 6, scale: .static(0.05)).fakeQuantize(&st)
        for (v, o) in zip(st.storage, x.storage) {
            XCTAssertLessThanOrEqual(abs(v), 31 * 0.05 * 1.0001)
            if abs(o) < 31 * 0.05 { XCTAssertLessThanOrEqual(abs(v - o), 0.025 * 1.0001) }
        }
    }

    /// Group scales (one per contiguous channel group): the kernel path equals the reference, each
    /// group lands on its own grid, and a zero scale zeroes its group.
    func testGroupScalesFakeQuantizeEachGroupOnItsGrid() {
        var rng = SeededRandom(seed: freshSeed(in: 0...1_000_000))
        let (rows, cols) = (5, 12)
        let x = Tensor(shape: [rows, cols], storage: (0..<(rows * cols)).map { i in Float(rng.nextGaussian()) * Float(1 + i % cols / 4) })
        let scales: [Float] = [0.01, 0.03, 0]
        let q = ActivationQuantizer(bits: 8, scale: .groups(scales))
        var fast = x, slow = x
        q.fakeQuantize(&fast)
        q.fakeQuantizeReference(&slow)
        XCTAssertEqual(fast.storage, slow.storage)
        for r in 0..<rows {
            for j in 0..<cols {
                let (s, v) = (scales[j / 4], fast.storage[r * cols + j])
                if s == 0 { XCTAssertEqual(v, 0); continue }
                XCTAssertEqual((v / s).rounded(), v / s, accuracy: 1e-3)
                XCTAssertLessThanOrEqual(abs(v), 127 * s * 1.0001)
            }
        }
        XCTAssertEqual(q.scale.storedScales, scales)
    }

    func testBitsParsing() throws {
        XCTAssertEqual(try BitWidths(parsing: "w4a8"), BitWidths(weight: 4, activation: 8))
        XCTAssertEqual(try BitWidths(parsing: "W8A6").description, "w8a6")
        for bad in ["w3a8", "w8a9", "8/8", "w8", "wxa8"] {
            XCTAssertThrowsError(try BitWidths(parsing: bad), bad)
        }
    }
}
