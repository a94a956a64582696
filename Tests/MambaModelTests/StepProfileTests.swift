import Dispatch
import MambaModel
import MambaTensors
import TestSupport
import XCTest

final class StepProfileTests: XCTestCase {
    func spin(_ seconds: Double) {
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        while DispatchTime.now().uptimeNanoseconds < end {}
    }

    /// Nested steps are named parent/child and their time is taken out of the parent's; unbound,
    /// `profiled` only runs its body.
    func testNestedStepsAreExclusive() {
        let profile = StepProfile()
        StepProfile.$current.withValue(profile) {
            profiled("outer") {
                spin(0.02)
                profiled("inner") { spin(0.05) }
            }
            profiled("outer") { spin(0.01) }
        }
        let steps = Dictionary(uniqueKeysWithValues: profile.steps.map { ($0.step, $0.seconds) })
        XCTAssertEqual(profile.steps.map(\.step), ["outer/inner", "outer"])
        XCTAssertGreaterThanOrEqual(steps["outer/inner"]!, 0.05)
        XCTAssertGreaterThanOrEqual(steps["outer"]!, 0.03)
        XCTAssertLessThan(steps["outer"]!, 0.03 + 0.04, "the inner step's 0.05 s was charged to the outer one")
        var ran = false
        profiled("unbound") { ran = true }
        XCTAssertTrue(ran)
        XCTAssertEqual(profile.steps.count, 2)
    }

    /// A profiled prefill of a tiny model covers its steps, and profiling does not change the logits.
    func testProfiledPrefillCoversTheForward() throws {
        let model = MambaLM(weights: try MambaWeights.load(directory: Fixtures.model("tiny-tied")))
        let times = try profilePrefill([model], names: ["float32"], tokens: 9, runs: 2, parallelism: .serial)
        XCTAssertEqual(times.count, 1)
        for step in ["embedding", "norm", "in_proj", "conv", "x_proj", "dt_proj", "scan", "gate", "out_proj", "lm_head"] {
            XCTAssertNotNil(times[0].milliseconds[step], step)
        }
        XCTAssertGreaterThanOrEqual(times[0].totalMilliseconds * 1.5, times[0].milliseconds.values.reduce(0, +))
        let tokens = [1, 5, 9, 2]
        let plain = try model.logits(tokens)
        let profiled = try StepProfile.$current.withValue(StepProfile()) { try model.logits(tokens) }
        XCTAssertEqual(plain, profiled)
        XCTAssertTrue(StepTimes.table(times).contains("| scan |"))
    }
}
