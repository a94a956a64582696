import Foundation
import MambaTensors
import TestSupport
import XCTest

/// The free-space check before a job writes: one line naming the directory and both sizes.
final class DiskSpaceTests: XCTestCase {
    func testFreeSpaceIsReadAndTooMuchIsRefusedInOneLine() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let free = try XCTUnwrap(DiskSpace.available(at: dir))
        XCTAssertGreaterThan(free, 0)
        XCTAssertNoThrow(try DiskSpace.check(1, directory: dir, job: "quantize", writing: "the 8-bit weights"))
        XCTAssertThrowsError(try DiskSpace.check(free * 2 + 1e12, directory: dir, job: "quantize", writing: "the 8-bit weights")) { e in
            let message = "\(e)"
            XCTAssertTrue(message.hasPrefix("quantize needs at least ") && message.contains("of disk for the 8-bit weights but \(dir) has "), message)
            XCTAssertFalse(message.contains("\n"))
        }
        // A given free size (what the check reads), and a directory statvfs cannot read: no refusal.
        XCTAssertThrowsError(try DiskSpace.check(7.3e9, directory: dir, job: "quantize", writing: "x", available: 2.1e9)) { e in
            XCTAssertTrue("\(e)".contains("at least 7.3 GB of disk for x but \(dir) has 2.1 GB free"), "\(e)")
        }
        XCTAssertNil(DiskSpace.available(at: dir + "/absent/deeper"))
        XCTAssertNoThrow(try DiskSpace.check(1e30, directory: dir + "/absent/deeper", job: "quantize", writing: "x"))
    }
}
