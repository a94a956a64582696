import CMambaKernels
import COpenBLAS
import Foundation
import Synchronization

/// Worker threads that spin for work while a generation decodes (issue: decode on every core). A
/// decode step runs about a hundred small products (one row times a weight matrix each), each a
/// fraction of a millisecond; waking a thread through Dispatch for each costs about as much as
/// the second core saves, so decode used one core. Workers that poll an atomic counter start a
/// part within a microsecond: the caller publishes the job, bumps the epoch, runs part 0 itself
/// and waits for the others' count to reach zero. They exist only inside
/// `Parallelism.withSpinningWorkers` (one generation's decode steps): outside it nothing spins,
/// so OpenBLAS's own threads never compete with them.
public final class SpinWorkers: @unchecked Sendable {
    /// Threads besides the caller's.
    public let count: Int
    private let epoch = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let closing = Atomic<Bool>(false)
    private let exited = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    /// The current job and its part count: written by the caller before the epoch's releasing
    /// increment, read by workers after their acquiring load of it.
    private var job: UncheckedSendable<(Int) -> Void>?
    private var parts = 0

    init(count: Int) {
        precondition(count >= 1)
        self.count = count
        for index in 1...count {
            let thread = Thread { self.work(index) }   // released when the thread leaves (close)
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Runs `body(0)` here and `body(1..<parts)` on the workers; returns when all are done.
    func run(parts: Int, _ body: (Int) -> Void) {
        precondition(parts >= 1 && parts <= count + 1)
        // A part that splits its own work, or a second thread sharing this budget, runs inline.
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for p in 0..<parts { body(p) }
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { body in
            job = UncheckedSendable(body)
            self.parts = parts
            remaining.store(parts - 1, ordering: .relaxed)
            epoch.add(1, ordering: .releasing)
            body(0)
            while remaining.load(ordering: .acquiring) > 0 { mq_cpu_relax() }
            job = nil
        }
    }

    private func work(_ index: Int) {
        var seen = 0
        var idle = 0
        while true {
            let e = epoch.load(ordering: .acquiring)
            if e == seen {
                if closing.load(ordering: .relaxed) { break }
                idle += 1
                // Between tokens (sampling, printing) a worker polls gently; within a step it spins.
                if idle > 20_000 { sched_yield() } else { mq_cpu_relax() }
                continue
            }
            seen = e
            idle = 0
            if index < parts {
                runPart(index)
                remaining.subtract(1, ordering: .releasing)
            }
        }
        exited.add(1, ordering: .releasing)
    }

    /// One part of the current job. Not inlined: the worker's copy of the closure is released when
    /// this returns, before `remaining` tells the caller, whose withoutActuallyEscaping checks
    /// that no copy outlives it.
    @inline(never)
    private func runPart(_ index: Int) {
        job!.value(index)
    }

    /// Stops the workers and waits for them to leave.
    func close() {
        closing.store(true, ordering: .relaxed)
        while exited.load(ordering: .acquiring) < count { sched_yield() }
    }
}

extension Parallelism {
    /// `body` with this budget's extra threads as spinning workers (decode: many small products in
    /// a row), OpenBLAS held to one thread meanwhile (its threads would compete with the
    /// spinning ones; the float products that remain split through `forEachChunk` instead). With
    /// one thread, `body(self)`.
    public func withSpinningWorkers<T>(_ body: (Parallelism) throws -> T) rethrows -> T {
        guard threads > 1, workers == nil else { return try body(self) }
        let workers = SpinWorkers(count: threads - 1)
        defer { workers.close(); applyToBLAS() }
        openblas_set_num_threads(1)
        return try body(Parallelism(threads: threads, workers: workers))
    }
}
