import Foundation
@testable import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// The sgemm attention of a prefill against the plain loop, on random inputs with odd sizes, a
/// cache already holding keys (start > 0), grouped-query heads and query rows across a block edge.
final class AttentionKernelsTests: XCTestCase {
    func testBLASAttentionEqualsTheLoop() {
        let seed = freshSeed()
        var rng = SeededRandom(seed: seed)
        for (l, start, heads, kvHeads, p) in [(9, 0, 2, 2, 3), (300, 17, 3, 1, 5), (37, 5, 4, 2, 8)] {
            let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: p, scale: 0.7)
            let t = start + l
            let q = Tensor(shape: [l, heads * p], storage: (0..<(l * heads * p)).map { _ in Float(rng.nextGaussian()) })
            let keys = (0..<(t * kvHeads * p)).map { _ in Float(rng.nextGaussian()) }
            let values = (0..<(t * kvHeads * p)).map { _ in Float(rng.nextGaussian()) }
            let fast = attentionBLAS(q, keys: keys, values: values, start: start, shape)
            let reference = attentionReference(q, keys: keys, values: values, start: start, shape, .serial)
            XCTAssertEqual(fast.shape, reference.shape)
            XCTAssertLessThanOrEqual(maxAbsDifference(fast.storage, reference.storage), 1e-5 * max(1, reference.absMax), "L \(l) start \(start) seed \(seed)")
        }
    }
}
