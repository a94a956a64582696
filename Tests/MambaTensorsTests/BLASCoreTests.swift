import MambaTensors
import XCTest

final class BLASCoreTests: XCTestCase {
    func testAUserChoiceIsNeverOverridden() {
        XCTAssertNil(BLASCore.betterCore(environment: ["OPENBLAS_CORETYPE": "Prescott"]))
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
