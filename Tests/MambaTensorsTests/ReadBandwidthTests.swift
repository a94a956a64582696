import CMambaKernels
import MambaTensors
import TestSupport
import XCTest

final class ReadBandwidthTests: XCTestCase {
    /// The read kernel's sum equals a plain wrapping sum, on odd lengths (the unrolled tails), on
    /// the vector path and the scalar one.
    func testReadKernelSumsEveryWord() {
        defer { mq_force_scalar(0) }
        var rng = SeededRandom(seed: freshSeed())
        for scalar: Int32 in [0, 1] {
            mq_force_scalar(scalar)
            for n in [0, 1, 3, 5, 15, 17, 63, 65, 1001, 4099, 100_003] {
                let words = (0..<n).map { _ in rng.next() }
                let expected = words.reduce(0 as UInt64) { $0 &+ $1 }
                XCTAssertEqual(words.withUnsafeBufferPointer { mq_read_words($0.baseAddress, n) }, expected, "n \(n) scalar \(scalar)")
            }
        }
    }

    /// One figure per thread count, each positive and finite (the size is small: this checks the
    /// plumbing, not the machine).
    func testMeasuresEachThreadCount() {
        let r = ReadBandwidth.measure(maxThreads: 2, bytes: 1 << 20, runs: 1)
        XCTAssertEqual(r.map(\.threads), [1, 2])
        XCTAssertTrue(r.allSatisfy { $0.gigabytesPerSecond > 0 && $0.gigabytesPerSecond.isFinite }, "\(r)")
    }
}
