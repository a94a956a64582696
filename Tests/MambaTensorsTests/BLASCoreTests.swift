import MambaTensors
import XCTest

final class BLASCoreTests: XCTestCase {
    func testAUserChoiceIsNeverOverridden() {
        XCTAssertNil(BLASCore.betterCore(environment: ["OPENBLAS_CORETYPE": "Prescott"]))
        XCTAssertNil(BLASCore.threadTimeout(environment: ["OPENBLAS_THREAD_TIMEOUT": "28"]))
        XCTAssertEqual(BLASCore.threadTimeout(environment: [:]), "4")
    }

    func testBetterCoreOnlyReplacesAGenericOne() {
        let better = BLASCore.betterCore(environment: [:])
        if let better {
            XCTAssertTrue(["SkylakeX", "Haswell"].contains(better))
            XCTAssertNotEqual(better.lowercased(), BLASCore.current.lowercased())
        }
        XCTAssertFalse(BLASCore.current.isEmpty)
    }
}
