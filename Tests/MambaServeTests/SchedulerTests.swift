import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

@testable import MambaServe

/// The bundled models (they carry a tokenizer), loaded once.
enum Bundled {
    static let mamba = load("bard-mamba")
    static let mamba2 = load("bard-mamba2")

    static func load(_ name: String) -> (MambaLM, Tokenizer) {
        let dir = Fixtures.packageRoot + "/models/" + name
        return (try! MambaLM.load(directory: dir), try! loadTokenizer(modelDirectory: dir)!)
    }

    static func scheduler(_ pair: (MambaLM, Tokenizer) = mamba, limits: Scheduler.Limits = .init()) -> Scheduler {
        Scheduler(model: pair.0, tokenizer: pair.1, parallelism: Parallelism(threads: 2), limits: limits)
    }
}

/// Every event of a stream.
func collect(_ stream: AsyncStream<SequenceEvent>) async -> [SequenceEvent] {
    var out: [SequenceEvent] = []
    for await e in stream { out.append(e) }
    return out
}

final class SchedulerTests: XCTestCase {
    /// Prompt log-probabilities, computed over prefill chunks that split the prompt at odd places,
    /// equal log-softmax of the logits of one whole forward (what `generate --logits-out` writes).
    func testEchoedPromptLogprobsEqualTheModelsLogits() async throws {
        for pair in [Bundled.mamba, Bundled.mamba2] {
            let (model, tokenizer) = pair
            let ids = tokenizer.encode("ROMEO: But soft, what light through yonder window breaks?")
            let scheduler = Bundled.scheduler(pair, limits: .init(prefillChunk: 7))
            defer { scheduler.drainAndStop() }
            var spec = SequenceSpec(prompt: ids, maxTokens: 0)
            spec.echo = true
            spec.logprobs = 3
            let events = await collect(try scheduler.submit([spec])[0])
            guard case .prompt(let tokens) = events.first, case .finished(.length, _) = events.last else {
                return XCTFail("expected the prompt and a finish, got \(events)")
            }
            XCTAssertEqual(tokens.map(\.id), ids)
            XCTAssertNil(tokens[0].logprob)
            let logits = try model.logits(ids)
            let v = logits.cols
            for t in 1..<ids.count {
                let row = Array(logits.storage[((t - 1) * v)..<(t * v)])
                let m = row.max()!
                let lse = Double(m) + log(row.reduce(0.0) { $0 + exp(Double($1 - m)) })
                XCTAssertEqual(tokens[t].logprob!, Double(row[ids[t]]) - lse, accuracy: 1e-4, "position \(t)")
                XCTAssertEqual(tokens[t].top.count, 3)
                XCTAssertEqual(tokens[t].top[0].id, row.indices.max { row[$0] < row[$1] }!, "the best alternative is the argmax")
                XCTAssertTrue(zip(tokens[t].top, tokens[t].top.dropFirst()).allSatisfy { $0.logprob >= $1.logprob })
            }
        }
    }

    /// Greedy decoding through the scheduler gives `generate`'s tokens.
    func testGreedySequenceEqualsGeneration() async throws {
        let (model, tokenizer) = Bundled.mamba2
        let ids = tokenizer.encode("JULIET:")
        var sampler = Sampler()
        var expected: [Int] = []
        try Generation(model: model, parallelism: .serial).run(prompt: ids, maxNewTokens: 12, sampler: &sampler, stop: nil) { expected.append($0) }
        let scheduler = Bundled.scheduler(Bundled.mamba2, limits: .init(prefillChunk: 3))
        defer { scheduler.drainAndStop() }
        let events = await collect(try scheduler.submit([SequenceSpec(prompt: ids, maxTokens: 12)])[0])
        let got = events.compactMap { if case .token(let t, _) = $0 { t.id } else { nil } }
        XCTAssertEqual(got, expected)
        guard case .finished(.length, _) = events.last else { return XCTFail("expected a length finish, got \(events.last!)") }
    }

    /// Sequences beyond the active set and the queue are refused at once; after a drain nothing is accepted.
    func testQueueLimitRefusesAtOnceAndDrainRefusesNewWork() async throws {
        let scheduler = Bundled.scheduler(limits: .init(maxConcurrency: 1, maxQueue: 1))
        let prompt = Bundled.mamba.1.encode("KING:")
        let a = try scheduler.submit([SequenceSpec(prompt: prompt, maxTokens: 40)])
        let b = try scheduler.submit([SequenceSpec(prompt: prompt, maxTokens: 2)])
        XCTAssertThrowsError(try scheduler.submit([SequenceSpec(prompt: prompt, maxTokens: 2)])) { error in
            guard case Scheduler.Refusal.queueFull(_, 1) = error else { return XCTFail("\(error)") }
        }
        // Draining lets accepted work finish.
        let drained = Task.detached { scheduler.drainAndStop() }
        let eventsA = await collect(a[0]), eventsB = await collect(b[0])
        await drained.value
        guard case .finished = eventsA.last, case .finished = eventsB.last else { return XCTFail("accepted sequences did not finish") }
        XCTAssertEqual(eventsA.filter { if case .token = $0 { true } else { false } }.count, 40)
        XCTAssertThrowsError(try scheduler.submit([SequenceSpec(prompt: prompt, maxTokens: 1)])) { error in
            XCTAssertEqual(error as? Scheduler.Refusal, .shuttingDown)
        }
    }

    /// A consumer that goes away (its task cancelled, as a closed connection cancels a request)
    /// cancels its sequence: the scheduler drops it long before its max_tokens, and the other
    /// sequences go on.
    func testCancelledSequenceIsDropped() async throws {
        let scheduler = Bundled.scheduler(limits: .init(maxConcurrency: 2))
        defer { scheduler.drainAndStop() }
        let prompt = Bundled.mamba.1.encode("HAMLET:")
        let streams = try scheduler.submit([SequenceSpec(prompt: prompt, maxTokens: 100_000), SequenceSpec(prompt: prompt, maxTokens: 5)])
        let seen = Counter()
        let reader = Task { for await _ in streams[0] { seen.add() } }
        let other = await collect(streams[1])
        guard case .finished(.length, _) = other.last else { return XCTFail("the other sequence did not finish") }
        while seen.value < 3 { try await Task.sleep(for: .milliseconds(5)) }
        reader.cancel()
        await reader.value
        try await waitUntilIdle(scheduler)
        XCTAssertLessThan(seen.value, 100_000)
    }

    /// A completion whose task is cancelled ends with 499 and frees its slot.
    func testCancelledCompletionFreesItsSlot() async throws {
        let scheduler = Bundled.scheduler()
        defer { scheduler.drainAndStop() }
        let service = CompletionService(scheduler: scheduler, modelName: "m", limits: .init(), metrics: ServerMetrics())
        let request = try JSONDecoder().decode(CompletionRequest.self, from: Data(#"{"prompt": "KING:", "max_tokens": 4000}"#.utf8))
        let work = Task { try await service.complete(request) }
        while scheduler.load.active == 0 { try await Task.sleep(for: .milliseconds(5)) }
        work.cancel()
        do {
            _ = try await work.value
            XCTFail("a cancelled completion returned")
        } catch {
            XCTAssertEqual((error as? APIError)?.status, 499)
        }
        try await waitUntilIdle(scheduler)
    }

    func waitUntilIdle(_ scheduler: Scheduler, file: StaticString = #filePath, line: UInt = #line) async throws {
        let deadline = Date().addingTimeInterval(10)
        while scheduler.load != (0, 0) && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertTrue(scheduler.load == (0, 0), "a cancelled sequence is still scheduled: \(scheduler.load)", file: file, line: line)
    }

    /// Active sequences take turns: the second's first token comes before the first's last.
    func testActiveSequencesInterleave() async throws {
        let scheduler = Bundled.scheduler(limits: .init(maxConcurrency: 2))
        defer { scheduler.drainAndStop() }
        let prompt = Bundled.mamba.1.encode("LEAR:")
        let streams = try scheduler.submit([SequenceSpec(prompt: prompt, maxTokens: 30), SequenceSpec(prompt: prompt, maxTokens: 30)])
        let clock = ContinuousClock()
        async let first = streams[0].reduce(into: [ContinuousClock.Instant]()) { times, _ in times.append(clock.now) }
        async let second = streams[1].reduce(into: [ContinuousClock.Instant]()) { times, _ in times.append(clock.now) }
        let (a, b) = await (first, second)
        XCTAssertLessThan(b[0], a[a.count - 1])
        XCTAssertLessThan(a[0], b[b.count - 1])
    }

    /// Generation stops before a stop string, which is not returned; text split across tokens is found.
    func testStopStringEndsTheText() async throws {
        let scheduler = Bundled.scheduler()
        defer { scheduler.drainAndStop() }
        let prompt = Bundled.mamba.1.encode("ROMEO:")
        let full = await collect(try scheduler.submit([SequenceSpec(prompt: prompt, maxTokens: 30)])[0])
        let fullText = text(of: full)
        XCTAssertGreaterThan(fullText.count, 12)
        let stop = String(fullText.dropFirst(6).prefix(4))
        var spec = SequenceSpec(prompt: prompt, maxTokens: 30)
        spec.stop = ["\u{1}never", stop]
        let cut = await collect(try scheduler.submit([spec])[0])
        XCTAssertEqual(text(of: cut), String(fullText[..<fullText.range(of: stop)!.lowerBound]))
        guard case .finished(.stop, _) = cut.last else { return XCTFail("expected a stop finish, got \(cut.last!)") }
    }

    func testTokenLogprobTopChoicesOnRandomRows() {
        var rng = SeededRandom(seed: freshSeed())
        for n in [1, 7, 301] {
            let row = (0..<n).map { _ in Float(rng.nextUnit() * 8 - 4) }
            let k = min(5, n)
            let entry = row.withUnsafeBufferPointer { tokenLogprob($0, id: n / 2, top: k) }
            let order = row.indices.sorted { row[$0] > row[$1] }
            XCTAssertEqual(entry.top.map(\.id), Array(order.prefix(k)))
            let total = row.reduce(0.0) { $0 + exp(Double($1)) }
            XCTAssertEqual(entry.logprob!, Double(row[n / 2]) - log(total), accuracy: 1e-9)
        }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}

func text(of events: [SequenceEvent]) -> String {
    events.map {
        switch $0 {
        case .token(_, let t), .finished(_, let t): t
        default: ""
        }
    }.joined()
}
