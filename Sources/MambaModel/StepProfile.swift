import Dispatch
import MambaTensors
import Foundation

// Where a forward spends its time, step by step (`bench --steps`). Off unless a profile is bound
// with `StepProfile.$current.withValue`: an unbound `profiled` call costs one task-local read.

/// Seconds per forward step, exclusive of nested steps: a step profiled inside another (the
/// activation quantization inside in_proj) is recorded as "in_proj/quantize" and its time is not
/// counted again in "in_proj".
public final class StepProfile: @unchecked Sendable {
    @TaskLocal public static var current: StepProfile?

    private let lock = NSLock()
    private var totals: [String: Double] = [:]
    private var order: [String] = []
    private var stack: [(name: String, start: UInt64, children: UInt64)] = []

    public init() {}

    func begin(_ step: String) {
        lock.lock(); defer { lock.unlock() }
        let name = stack.last.map { "\($0.name)/\(step)" } ?? step
        stack.append((name, DispatchTime.now().uptimeNanoseconds, 0))
    }

    func end() {
        lock.lock(); defer { lock.unlock() }
        let top = stack.removeLast()
        let elapsed = DispatchTime.now().uptimeNanoseconds - top.start
        if !stack.isEmpty { stack[stack.count - 1].children += elapsed }
        if totals[top.name] == nil { order.append(top.name) }
        totals[top.name, default: 0] += Double(elapsed - min(elapsed, top.children)) / 1e9
    }

    /// (step, seconds) in the order steps first ran.
    public var steps: [(step: String, seconds: Double)] {
        lock.lock(); defer { lock.unlock() }
        return order.map { ($0, totals[$0]!) }
    }
}

/// Runs `body`, charging its time to `step` when a profile is bound (otherwise just runs it).
@inline(__always)
public func profiled<T>(_ step: String, _ body: () throws -> T) rethrows -> T {
    guard let profile = StepProfile.current else { return try body() }
    profile.begin(step)
    defer { profile.end() }
    return try body()
}

/// One model's prefill, step by step: medians over runs of each step's milliseconds.
public struct StepTimes: Sendable, Encodable {
    public let model: String
    public let tokens: Int
    public let milliseconds: [String: Double]
    /// Step names in the order they first ran.
    public let order: [String]
    /// Median of the runs' wall time (the steps plus what no step covers).
    public let totalMilliseconds: Double

    enum CodingKeys: String, CodingKey {
        case model, tokens, milliseconds, order
        case totalMilliseconds = "total_milliseconds"
    }

    /// A markdown table with one column per model: milliseconds (times `scale`, in the unit the
    /// `title` names) and share of the model's total.
    public static func table(_ models: [StepTimes], title: String = "prefill step (ms, share)", scale: Double = 1) -> String {
        var names: [String] = []
        for m in models { for n in m.order where !names.contains(n) { names.append(n) } }
        var s = "| \(title) | " + models.map { "\($0.model)" }.joined(separator: " | ") + " |\n"
        s += "|---|" + String(repeating: "---:|", count: models.count) + "\n"
        func cell(_ ms: Double?, _ total: Double) -> String {
            guard let ms else { return "" }
            return String(format: "%.1f (%.0f%%)", ms * scale, 100 * ms / total)
        }
        for n in names { s += "| \(n) | " + models.map { cell($0.milliseconds[n], $0.totalMilliseconds) }.joined(separator: " | ") + " |\n" }
        let other = models.map { m in cell(max(0, m.totalMilliseconds - m.milliseconds.values.reduce(0, +)), m.totalMilliseconds) }
        s += "| (outside steps) | " + other.joined(separator: " | ") + " |\n"
        s += "| total | " + models.map { String(format: "%.1f", $0.totalMilliseconds * scale) }.joined(separator: " | ") + " |\n"
        return s
    }
}

/// Times a `tokens`-token prefill (logits at `positions`, every one by default) of each model under
/// a step profile, `runs` times interleaved; each step's figure is its median over the runs.
public func profilePrefill(
    _ models: [MambaLM], names: [String], tokens: Int, runs: Int, parallelism: Parallelism, seed: UInt64 = 0,
    logits positions: LogitPositions = .all
) throws -> [StepTimes] {
    var rng = SeededRandom(seed: seed)
    let prompt = (0..<tokens).map { _ in Int(rng.next() % UInt64(models[0].vocabSize)) }
    return try medianSteps(models, names: names, tokens: tokens, runs: runs, perRun: 1) { model, profile in
        var state = model.makeState()
        return try StepProfile.$current.withValue(profile) {
            try measureSeconds { _ = try model.forward(prompt, state: &state, logits: positions, parallelism: parallelism) }
        }
    }
}

/// Times `steps` decode steps of each model (after an 8-token prompt) under a step profile, as a
/// generation runs them (spinning workers: the threads' split of each product and the serial steps
/// between products show), `runs` times interleaved; each step's figure is its median over the runs
/// of milliseconds per token.
public func profileDecode(
    _ models: [MambaLM], names: [String], steps: Int, runs: Int, parallelism: Parallelism, seed: UInt64 = 0
) throws -> [StepTimes] {
    var rng = SeededRandom(seed: seed)
    let tokens = (0..<(8 + steps)).map { _ in Int(rng.next() % UInt64(models[0].vocabSize)) }
    return try medianSteps(models, names: names, tokens: 1, runs: runs, perRun: Double(steps)) { model, profile in
        var state = model.makeState()
        _ = try model.forward(Array(tokens.prefix(8)), state: &state, logits: .last, parallelism: parallelism)
        return try parallelism.withSpinningWorkers { par in
            try StepProfile.$current.withValue(profile) {
                try measureSeconds { for t in tokens.dropFirst(8) { _ = try model.forward([t], state: &state, logits: .last, parallelism: par) } }
            }
        }
    }
}

/// `run(model, profile)` (seconds, under that fresh profile) for each model, `runs` times
/// interleaved (run r of every model, then run r + 1); each step's median over the runs and the
/// median total, in milliseconds divided by `perRun` (the tokens a run times one at a time).
private func medianSteps(
    _ models: [MambaLM], names: [String], tokens: Int, runs: Int, perRun: Double,
    _ run: (MambaLM, StepProfile) throws -> Double
) rethrows -> [StepTimes] {
    var samples = [[String: [Double]]](repeating: [:], count: models.count)
    var orders = [[String]](repeating: [], count: models.count)
    var totals = [[Double]](repeating: [], count: models.count)
    for _ in 0..<runs {
        for (i, model) in models.enumerated() {
            let profile = StepProfile()
            totals[i].append(1000 * (try run(model, profile)) / perRun)
            for (step, s) in profile.steps {
                if samples[i][step] == nil { orders[i].append(step) }
                samples[i][step, default: []].append(1000 * s / perRun)
            }
        }
    }
    return models.indices.map { i in
        StepTimes(model: names[i], tokens: tokens, milliseconds: samples[i].mapValues { median($0) },
                  order: orders[i], totalMilliseconds: median(totals[i]))
    }
}
