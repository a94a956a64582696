import MambaTensors

/// The token windows calibration runs on: `samples` windows of `seqLength` tokens drawn with a
/// seeded generator from tokenized data files, never crossing a file boundary. The windows go into
/// the stats file, so quantize can re-run the float pass on a transformed model without the text.
public struct CalibrationWindows: Sendable, Equatable {
    public let seqLength: Int
    public var windows: [[Int]]

    public init(seqLength: Int, windows: [[Int]]) {
        self.seqLength = seqLength
        self.windows = windows
    }

    /// Draws windows uniformly over every start position that fits in some file. Overlapping
    /// windows are possible when the data is short; the data must hold at least one window.
    public static func draw(from files: [(name: String, tokens: [Int])], samples: Int, seqLength: Int, seed: UInt64) throws -> CalibrationWindows {
        guard samples > 0 else { throw MambaError(.badInput, "--samples must be at least 1, got \(samples)") }
        guard seqLength > 0 else { throw MambaError(.badInput, "--seq-len must be at least 1, got \(seqLength)") }
        guard !files.isEmpty else { throw MambaError(.badInput, "no calibration data given") }
        if let empty = files.first(where: { $0.tokens.isEmpty }) {
            throw MambaError(.badInput, "calibration data file \(empty.name) is empty")
        }
        let starts = files.map { max(0, $0.tokens.count - seqLength + 1) }
        let total = starts.reduce(0, +)
        guard total > 0 else {
            let longest = files.map(\.tokens.count).max() ?? 0
            throw MambaError(.badInput, "the calibration data is too short: its longest file has \(longest) tokens, --seq-len \(seqLength) needs at least \(seqLength)")
        }
        var rng = SeededRandom(seed: seed)
        var windows: [[Int]] = []
        windows.reserveCapacity(samples)
        for _ in 0..<samples {
            var pick = Int(rng.next() % UInt64(total))
            var f = 0
            while pick >= starts[f] { pick -= starts[f]; f += 1 }
            windows.append(Array(files[f].tokens[pick..<(pick + seqLength)]))
        }
        return CalibrationWindows(seqLength: seqLength, windows: windows)
    }

    public var tokenCount: Int { windows.count * seqLength }
}
