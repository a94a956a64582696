import Foundation
import MambaModel
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
        // Fresh pages straight from the kernel (malloc may hand back memory that is already resident).
        let size = 64 << 20
        let block = try XCTUnwrap(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        defer { munmap(block, size) }
        memset(block, 1, size)
        let high = try XCTUnwrap(ResidentMemory.peak())
        XCTAssertGreaterThanOrEqual(high - before, 60 << 20)
        #endif
    }
}
