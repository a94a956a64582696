import Foundation

/// A progress bar on stderr (only when stderr is a terminal, and not with --quiet): done / total,
/// a rate and an ETA, redrawn in place.
final class ProgressBar {
    private let label: String
    private let unit: String
    private let unitsPerStep: Double
    private let enabled: Bool
    private let start = Date()

    init(_ label: String, unit: String, unitsPerStep: Double, quiet: Bool) {
        self.label = label
        self.unit = unit
        self.unitsPerStep = unitsPerStep
        self.enabled = !quiet && isatty(2) != 0
    }

    func update(_ done: Int, _ total: Int) {
        guard enabled else { return }
        let elapsed = Date().timeIntervalSince(start)
        let rate = Double(done) * unitsPerStep / max(elapsed, 1e-9)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let width = 24
        let filled = total > 0 ? width * done / total : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = String(format: "\r%@ [%@] %d/%d  %.0f %@/s  ETA %@ ", label, bar, done, total, rate, unit, formatDuration(eta))
        FileHandle.standardError.write(Data(line.utf8))
        if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

func formatDuration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
}
