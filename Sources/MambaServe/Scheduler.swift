import Foundation
import MambaModel
import MambaTensors

/// Runs sequences on the model from one thread, interleaving them (docs/DESIGN.md, "Serving").
///
/// Up to `maxConcurrency` sequences are active; the scheduler takes them round robin, one unit of
/// work each (a prefill chunk of `prefillChunk` tokens, or one decode step), so a long prompt does
/// not stall the tokens of the others and every active stream moves at the same pace. Beyond the
/// active set at most `maxQueue` sequences wait (first come, first served); more are refused at
/// once. One thread drives the model and the thread budget's other cores join each step through
/// spinning workers during a busy period (SpinWorkers.swift): requests time-share the cores rather
/// than split them, so a lone request runs as fast as `generate`.
public final class Scheduler: @unchecked Sendable {
    public struct Limits: Sendable {
        public var maxConcurrency: Int
        public var maxQueue: Int
        public var prefillChunk: Int
        public init(maxConcurrency: Int = 4, maxQueue: Int = 64, prefillChunk: Int = 512) {
            self.maxConcurrency = maxConcurrency
            self.maxQueue = maxQueue
            self.prefillChunk = prefillChunk
        }
    }

    public enum Refusal: Error, Equatable, Sendable {
        case queueFull(waiting: Int, limit: Int)
        case shuttingDown
    }

    public let model: MambaLM
    public let tokenizer: Tokenizer
    public let limits: Limits
    private let parallelism: Parallelism
    private let condition = NSCondition()
    private var waiting: [SequenceJob] = []
    private var active: [SequenceJob] = []
    private var cursor = 0
    private var closing = false
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)
    /// Called (on the scheduler's thread or a submitter's) whenever the queue or active set changes.
    private let onLoad: @Sendable (_ waiting: Int, _ active: Int) -> Void

    public init(model: MambaLM, tokenizer: Tokenizer, parallelism: Parallelism, limits: Limits,
                onLoad: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) {
        precondition(limits.maxConcurrency >= 1 && limits.maxQueue >= 0 && limits.prefillChunk >= 1)
        self.model = model
        self.tokenizer = tokenizer
        self.parallelism = parallelism
        self.limits = limits
        self.onLoad = onLoad
        let thread = Thread { self.loop() }   // holds the scheduler until drainAndStop ends the loop
        thread.name = "mambaquant-scheduler"
        thread.stackSize = 4 << 20
        thread.start()
    }

    /// Queues the sequences of one request together (all or none), each with its event stream.
    /// Cancelling a stream's consumer (a client that went away) cancels its sequence.
    public func submit(_ specs: [SequenceSpec]) throws(Refusal) -> [AsyncStream<SequenceEvent>] {
        condition.lock()
        defer { condition.unlock() }
        if closing { throw .shuttingDown }
        // Sequences that find a free active slot do not wait; the others may fill the queue.
        if active.count + waiting.count + specs.count > limits.maxConcurrency + limits.maxQueue {
            throw .queueFull(waiting: waiting.count, limit: limits.maxQueue)
        }
        var streams: [AsyncStream<SequenceEvent>] = []
        for spec in specs {
            let (stream, continuation) = AsyncStream<SequenceEvent>.makeStream(bufferingPolicy: .unbounded)
            let job = SequenceJob(spec: spec, continuation: continuation)
            continuation.onTermination = { reason in
                if case .cancelled = reason { job.cancel() }
            }
            waiting.append(job)
            streams.append(stream)
        }
        onLoad(waiting.count, active.count)
        condition.signal()
        return streams
    }

    /// Sequences waiting and running now.
    public var load: (waiting: Int, active: Int) {
        condition.lock()
        defer { condition.unlock() }
        return (waiting.count, active.count)
    }

    /// Refuses new work, lets what was accepted finish, then stops the thread. Returns when it has.
    public func drainAndStop() {
        condition.lock()
        closing = true
        condition.signal()
        let wait = !stopped
        condition.unlock()
        if wait { done.wait() }
    }

    private func loop() {
        while true {
            condition.lock()
            while waiting.isEmpty && active.isEmpty && !closing { condition.wait() }
            if waiting.isEmpty && active.isEmpty {   // closing, nothing left
                stopped = true
                condition.unlock()
                done.signal()
                return
            }
            condition.unlock()
            // A busy period: the other cores spin for work until the queue is empty.
            parallelism.withSpinningWorkers { par in
                while let job = next() {
                    let finished = job.step(model, tokenizer, prefillChunk: limits.prefillChunk, par)
                    if finished {
                        remove(job)
                        job.end()
                    }
                }
            }
        }
    }

    /// The next active sequence, round robin, after admitting waiting ones and dropping the
    /// cancelled; nil when there is nothing to run.
    private func next() -> SequenceJob? {
        condition.lock()
        defer { condition.unlock() }
        let before = (waiting.count, active.count)
        for job in active where job.isCancelled { job.abandon() }
        active.removeAll { $0.isCancelled }
        for job in waiting where job.isCancelled { job.abandon() }
        waiting.removeAll { $0.isCancelled }
        while active.count < limits.maxConcurrency, !waiting.isEmpty { active.append(waiting.removeFirst()) }
        if before != (waiting.count, active.count) { onLoad(waiting.count, active.count) }
        guard !active.isEmpty else { return nil }
        cursor = (cursor + 1) % active.count
        return active[cursor]
    }

    private func remove(_ job: SequenceJob) {
        condition.lock()
        defer { condition.unlock() }
        active.removeAll { $0 === job }
        onLoad(waiting.count, active.count)
    }
}
