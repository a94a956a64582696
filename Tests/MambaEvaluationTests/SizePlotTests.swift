@testable import MambaEvaluation
import XCTest

/// The plot panels' labels (SizePlot.swift labelLines, ComparisonPlot.swift deltaPanel's axis).
final class SizePlotTests: XCTestCase {
    /// Labels of coincident points go to successive lines; a label with room keeps its point's line.
    func testCoincidentLabelsGetTheirOwnLines() {
        let y = ComparisonPlot.labelLines([(100, 50, "rtn w8a8"), (100, 50, "smoothquant w8a8"), (101, 52, "hadamard w8a8"),
                                           (400, 50, "Q8_0"), (100, 200, "mambaquant w4a8")])
        XCTAssertEqual(y[0], 50)
        XCTAssertEqual(y[1], 62)
        XCTAssertEqual(y[2], 76)    // 52 overlaps 50 and 62 (both within a line of 52 or 64): the next free line
        XCTAssertEqual(y[3], 50)    // far to the right of the others' boxes
        XCTAssertEqual(y[4], 200)   // far below
        for i in 0..<3 { for j in 0..<i { XCTAssertGreaterThanOrEqual(abs(y[i] - y[j]), 12) } }
    }

    /// Labels that only share a line but not their horizontal extent do not move.
    func testSideBySideLabelsStay() {
        let y = ComparisonPlot.labelLines([(0, 10, "abc"), (18, 10, "def")])   // 3 characters: 18 px wide
        XCTAssertEqual(y, [10, 10])
    }

    /// The delta panel's axis labels 0 always, and an end only where its label stands clear of 0's
    /// (the bundled Mamba-2's -0.0062 printed over +0.0000).
    func testDeltaAxisEndsClearOfZero() {
        func ticks(_ rows: [ComparisonPlot.DeltaRow]) -> [String] {
            let svg = ComparisonPlot.deltaPanel(rows, title: "t", format: "%+.4f", unit: "bits", methods: ["m"], rowHeight: 18)
            return svg.components(separatedBy: "\n").filter { $0.contains("text-anchor=\"middle\"") }
                .compactMap { $0.components(separatedBy: ">").dropFirst().first?.components(separatedBy: "<").first }
        }
        let near = [ComparisonPlot.DeltaRow(label: "a", method: "m", value: 0.01, interval: Interval(low: -0.0062, high: 0.0375))]
        XCTAssertEqual(ticks(near), ["+0.0000", "+0.0375"])
        let far = [ComparisonPlot.DeltaRow(label: "a", method: "m", value: 0.01, interval: Interval(low: -0.03, high: 0.0375))]
        XCTAssertEqual(ticks(far), ["-0.0300", "+0.0000", "+0.0375"])
    }
}
