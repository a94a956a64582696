import MambaTensors
import XCTest

final class ParallelismTests: XCTestCase {
    func testChunksCoverTheRangeOnceEach() {
        for threads in [1, 2, 3] {
            for count in [0, 1, 5, 64, 1000] {
                var seen = [Int](repeating: 0, count: count)
                seen.withUnsafeMutableBufferPointer { p in
                    let base = UncheckedSendable(p)
                    Parallelism(threads: threads).forEachChunk(count) { range in
                        for i in range { base.value[i] += 1 }
                    }
                }
                XCTAssertEqual(seen, [Int](repeating: 1, count: count), "threads \(threads) count \(count)")
            }
        }
    }

    func testSeededRandomIsReproducible() {
        var a = SeededRandom(seed: 42), b = SeededRandom(seed: 42), c = SeededRandom(seed: 43)
        let xs = (0..<5).map { _ in a.next() }
        XCTAssertEqual(xs, (0..<5).map { _ in b.next() })
        XCTAssertNotEqual(xs, (0..<5).map { _ in c.next() })
        var g = SeededRandom(seed: 7)
        let samples = (0..<20000).map { _ in g.nextGaussian() }
        let mean = samples.reduce(0, +) / Double(samples.count)
        let variance = samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(samples.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
    }
}
