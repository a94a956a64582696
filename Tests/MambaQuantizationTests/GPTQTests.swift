import Foundation
import MambaQuantization
import MambaTransforms
import TestSupport
import XCTest

/// GPTQ (GPTQ.swift) against the reference written from the paper (scripts/reference/gptq_reference.py,
/// committed as Tests/Fixtures/gptq/gptq-reference.json), and against round-to-nearest on the
/// error it minimizes.
final class GPTQTests: XCTestCase {
    struct Case: Decodable {
        let name: String
        let n: Int, k: Int, bits: Int, group: Int, block: Int
        let act_order: Bool
        let W: [Double], H: [Double], q: [Int], q_rtn: [Int]
        let scales: [Float]
        let error_gptq: Double, error_rtn: Double
    }

    struct Reference: Decodable {
        let damp: Double
        let cases: [Case]
    }

    /// The same integers as the reference on every case (per row and groups of 16, with and
    /// without act-order, 4 and 8 bits, a dead input column, blocks that do not divide K), on 1
    /// and 3 threads, and the same output errors.
    func testGPTQMatchesTheReferenceImplementation() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/gptq/gptq-reference.json"))
        let reference = try JSONDecoder().decode(Reference.self, from: data)
        XCTAssertGreaterThanOrEqual(reference.cases.count, 5)
        for c in reference.cases {
            let w = Matrix(rows: c.n, cols: c.k, data: c.W)
            let group = c.group > 0 ? c.group : nil
            let options = GPTQ.Options(dampening: reference.damp, blockSize: c.block, actOrder: c.act_order)
            for threads in [1, 3] {
                let q = try GPTQ.round(w, hessian: c.H, bits: c.bits, groupSize: group, scales: c.scales, options: options, threads: threads)
                XCTAssertEqual(q.map(Int.init), c.q, "\(c.name) threads \(threads)")
            }
            let q = try GPTQ.round(w, hessian: c.H, bits: c.bits, groupSize: group, scales: c.scales, options: options)
            let error = GPTQ.outputError(w, values: q, scales: c.scales, groupSize: group, hessian: c.H)
            XCTAssertEqual(error, c.error_gptq, accuracy: 1e-6 * c.error_gptq, c.name)
            let rtn = GPTQ.outputError(w, values: c.q_rtn.map { Int8($0) }, scales: c.scales, groupSize: group, hessian: c.H)
            XCTAssertEqual(rtn, c.error_rtn, accuracy: 1e-6 * c.error_rtn, c.name)
        }
    }

    /// On random correlated inputs (fresh seed, odd sizes) GPTQ's ||W Xᵀ - Q Xᵀ||² is below round-
    /// to-nearest's on the same scales (QuantizedMatrix's clip search), per row and per group, with
    /// and without act-order, at 4 and 8 bits.
    func testGPTQErrorIsBelowRoundToNearest() throws {
        var rng = SeededRandom(seed: freshSeed())
        let (n, k, m) = (23, 72, 300)
        // X = Z A: correlated channels, a few of them 8x larger (the outliers GPTQ must work around).
        let a = (0..<(k * k)).map { _ in rng.nextGaussian() / Double(k).squareRoot() }
        var x = [Double](repeating: 0, count: m * k)
        for t in 0..<m {
            let z = (0..<k).map { _ in rng.nextGaussian() }
            for j in 0..<k { for i in 0..<k { x[t * k + j] += z[i] * a[i * k + j] } }
            for j in [3, 40] { x[t * k + j] *= 8 }
        }
        let xm = Matrix(rows: m, cols: k, data: x)
        let h = xm.transposedTimes(xm).data
        let w = Matrix(rows: n, cols: k, data: (0..<(n * k)).map { _ in rng.nextGaussian() * 0.1 })
        for bits in [4, 8] {
            for group in [nil, 24] as [Int?] {
                let rtn = QuantizedMatrix(quantizing: w, bits: bits, groupSize: group)
                let rtnError = GPTQ.outputError(w, values: rtn.values, scales: rtn.scales, groupSize: group, hessian: h)
                for actOrder in [false, true] {
                    let q = try GPTQ.round(w, hessian: h, bits: bits, groupSize: group, scales: rtn.scales,
                                           options: .init(blockSize: 16, actOrder: actOrder), threads: 2)
                    XCTAssertTrue(q.allSatisfy { abs(Int($0)) <= qmax(bits: bits) })
                    let error = GPTQ.outputError(w, values: q, scales: rtn.scales, groupSize: group, hessian: h)
                    XCTAssertLessThan(error, 0.9 * rtnError, "bits \(bits) group \(String(describing: group)) act-order \(actOrder)")
                }
            }
        }
    }
}
