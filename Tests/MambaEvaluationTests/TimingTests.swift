import MambaEvaluation
import XCTest

final class TimingTests: XCTestCase {
    func testMedian() {
        XCTAssertEqual(median([3, 1, 2]), 2)
        XCTAssertEqual(median([4, 1, 3, 2]), 2.5)
    }

    /// The peak can be reset on Linux and then follows a fresh allocation.
    func testResidentPeakResetsAndGrows() throws {
        #if os(Linux)
        XCTAssertTrue(ResidentMemory.resetPeak())
        let before = try XCTUnwrap(ResidentMemory.current())
        let peakBefore = try XCTUnwrap(ResidentMemory.peak())
        XCTAssertLessThan(peakBefore, before + (8 << 20), "the reset brought the peak down to about the current size")
        var block = [UInt8](repeating: 1, count: 64 << 20)
        block[block.count - 1] = 2
        let high = try XCTUnwrap(ResidentMemory.peak())
        XCTAssertGreaterThanOrEqual(high - before, 60 << 20)
        XCTAssertEqual(block.last, 2)
        #endif
    }
}
