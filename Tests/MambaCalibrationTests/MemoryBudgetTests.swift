import Foundation
import MambaCalibration
import MambaModel
import MambaTensors
import TestSupport
import XCTest

final class MemoryBudgetTests: XCTestCase {
    /// The estimate grows with what it names, and a job over MemAvailable is refused in one line
    /// that gives both numbers and what to lower.
    func testEstimateAndRefusal() throws {
        let c = ModelPreset.falconMamba7b.config
        let small = MemoryEstimate.layerStreamed(c, windows: 16, seqLength: 256, threads: 2)
        let big = MemoryEstimate.layerStreamed(c, windows: 128, seqLength: 512, threads: 2)
        XCTAssertGreaterThan(big.bytes, small.bytes)
        // 128 x 512 tokens x D 4096 in float32 is 1.07 GB of residual streams.
        XCTAssertEqual(big.parts.first { $0.0.hasPrefix("residual streams") }!.1, 4 * 128 * 512 * 4096)
        XCTAssertGreaterThan(MemoryEstimate.quantize(c, windows: 16, seqLength: 256, threads: 2).bytes, small.bytes)
        // GPTQ's Hessians at the linears' inputs (D 4096, E 8192 twice, R 256; 2 windows in flight
        // and 2 merged copies) and its working copies of the largest (E x E).
        let gptq = MemoryEstimate.quantize(c, windows: 16, seqLength: 256, threads: 2, gptq: true)
        let squares = 4096.0 * 4096 + 2 * 8192 * 8192 + 256 * 256
        XCTAssertEqual(gptq.parts.first { $0.0.hasPrefix("GPTQ Hessians") }?.1, 8 * squares * 4)
        XCTAssertGreaterThan(gptq.bytes, MemoryEstimate.quantize(c, windows: 16, seqLength: 256, threads: 2).bytes)
        XCTAssertNoThrow(try small.check(job: "calibration", lower: "--samples", available: 1e12))
        XCTAssertThrowsError(try big.check(job: "calibration", lower: "--samples, --seq-len or --threads", available: 1e9)) { error in
            let line = "\(error)"
            XCTAssertEqual((error as? MambaError)?.kind, .outOfMemory)
            XCTAssertFalse(line.contains("\n"))
            for word in ["calibration needs about", "1.0 GB is available", "MemAvailable", "--samples, --seq-len or --threads"] {
                XCTAssertTrue(line.contains(word), "\(line) lacks \(word)")
            }
        }
        XCTAssertNotNil(SystemMemory.available())
    }
}
