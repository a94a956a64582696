import Dispatch
import Foundation
import MambaTensors

// Timing and process memory for bench and compare (side-by-side medians; peak RSS).

/// Seconds of one call of `body`.
public func measureSeconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

public func median(_ values: [Double]) -> Double {
    precondition(!values.isEmpty)
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Prefill and decode throughput of one model (medians over `runs`).
public struct ThroughputResult: Sendable, Encodable {
    public let prefillTokens: Int
    public let prefillTokensPerSecond: Double
    public let decodeSteps: Int
    public let decodeTokensPerSecond: Double
    public let prefillRuns: [Double]
    public let decodeRuns: [Double]
}

/// Prefill: `tokens` from a fresh state with logits at every position (what a perplexity
/// evaluation needs, and what transformers' forward returns). Decode: `decodeSteps` single-token
/// steps after a short prompt, logits of the last position only.
public func measureThroughput(
    _ model: MambaLM, tokens: Int, decodeSteps: Int = 64, runs: Int, parallelism: Parallelism, seed: UInt64 = 0
) throws -> ThroughputResult {
    try measureThroughputSideBySide([model], tokens: tokens, decodeSteps: decodeSteps, runs: runs, parallelism: parallelism, seed: seed)[0]
}

/// `measureThroughput` of several models with their runs interleaved (run r of every model, then
/// run r + 1), so that a noisy stretch of a shared machine hits all of them alike.
public func measureThroughputSideBySide(
    _ models: [MambaLM], tokens: Int, decodeSteps: Int = 64, runs: Int, parallelism: Parallelism, seed: UInt64 = 0,
    prefillLogits: LogitPositions = .all
) throws -> [ThroughputResult] {
    precondition(!models.isEmpty && models.allSatisfy { $0.vocabSize == models[0].vocabSize })
    var rng = SeededRandom(seed: seed)
    let ids = (0..<tokens).map { _ in Int(rng.next() % UInt64(models[0].vocabSize)) }
    for model in models { _ = try model.logits(Array(ids.prefix(16)), parallelism: parallelism) }   // warm-up
    var prefill = [[Double]](repeating: [], count: models.count), decode = prefill
    for _ in 0..<runs {
        for (i, model) in models.enumerated() {
            prefill[i].append(Double(tokens) / (try measureSeconds {
                var fresh = model.makeState()
                _ = try model.forward(ids, state: &fresh, logits: prefillLogits, parallelism: parallelism)
            }))
            var state = model.makeState()
            _ = try model.forward(Array(ids.prefix(8)), state: &state, logits: .last, parallelism: parallelism)
            let steps = ids.prefix(decodeSteps)
            // The decode steps as a generation runs them: with the spinning workers (their start timed too).
            decode[i].append(Double(steps.count) / (try measureSeconds {
                try parallelism.withSpinningWorkers { par in
                    for t in steps { _ = try model.forward([t], state: &state, logits: .last, parallelism: par) }
                }
            }))
        }
    }
    return models.indices.map { i in
        ThroughputResult(
            prefillTokens: tokens, prefillTokensPerSecond: median(prefill[i]), decodeSteps: decodeSteps,
            decodeTokensPerSecond: median(decode[i]), prefillRuns: prefill[i], decodeRuns: decode[i])
    }
}

/// Resident memory of this process from /proc/self/status (Linux). The peak (VmHWM) can be reset
/// by writing 5 to /proc/self/clear_refs (Linux 4.0+), which lets one process measure the peak of
/// several models in turn.
public enum ResidentMemory {
    public static func current() -> Int? { field("VmRSS:") }
    public static func peak() -> Int? { field("VmHWM:") }

    /// Resets the peak to the current resident size; false where the kernel does not allow it.
    @discardableResult
    public static func resetPeak() -> Bool {
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return write(fd, "5", 1) == 1
    }

    private static func field(_ name: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name) {
            let kb = line.dropFirst(name.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) }
            return kb.map { $0 * 1024 }
        }
        return nil
    }
}
