import MambaTensors
import XCTest

final class BLASCoreTests: XCTestCase {
    func testAUserChoiceIsNeverOverridden() {
        XCTAssertNil(BLASCore.betterCore(environment: ["OPENBLAS_CORETYPE": "Prescott"]))
        XCTAssertNil(BLASCore.threadTimeout(environment: ["OPENBLAS_THREAD_TIMEOUT": "28"]))
        XCTAssertEqual(BLASCore.threadTimeout(environment: [:]), "4")
    }

    func testBetterCoreOnlyReplacesAWeakerClass() {
        // OpenBLAS's own choice on the CPUs seen: a generic core on Sapphire Rapids, Haswell on a Zen 4.
        XCTAssertEqual(BLASCore.betterCore(environment: [:], running: "Prescott", forCPU: "SkylakeX"), "SkylakeX")
        XCTAssertEqual(BLASCore.betterCore(environment: [:], running: "Haswell", forCPU: "SkylakeX"), "SkylakeX")
        XCTAssertEqual(BLASCore.betterCore(environment: [:], running: "Zen", forCPU: "SkylakeX"), "SkylakeX")
        XCTAssertEqual(BLASCore.betterCore(environment: [:], running: "Prescott", forCPU: "Haswell"), "Haswell")
        // Already the right class: left alone.
        XCTAssertNil(BLASCore.betterCore(environment: [:], running: "Cooperlake", forCPU: "SkylakeX"))
        XCTAssertNil(BLASCore.betterCore(environment: [:], running: "Zen", forCPU: "Haswell"))
        XCTAssertNil(BLASCore.betterCore(environment: [:], running: "Prescott", forCPU: nil))
        XCTAssertNil(BLASCore.betterCore(environment: ["OPENBLAS_CORETYPE": "Haswell"], running: "Haswell", forCPU: "SkylakeX"))
        // In this process the re-exec has happened (or was not needed).
        XCTAssertFalse(BLASCore.current.isEmpty)
    }

    func testCandidatesAreTheRunningCoreAndEachSupportedClass() {
        XCTAssertEqual(BLASCore.candidates(running: "Cooperlake", forCPU: "SkylakeX"), ["Cooperlake", "Haswell", "SkylakeX"])
        XCTAssertEqual(BLASCore.candidates(running: "Haswell", forCPU: "SkylakeX"), ["Haswell", "SkylakeX"])
        XCTAssertEqual(BLASCore.candidates(running: "Haswell", forCPU: "Haswell"), ["Haswell"])
        XCTAssertEqual(BLASCore.candidates(running: "Prescott", forCPU: nil), ["Prescott"])
    }
}
