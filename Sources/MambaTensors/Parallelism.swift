import COpenBLAS
import Dispatch
import Foundation

/// The thread budget of one command (`--threads`, docs/DESIGN.md section 5). OpenBLAS and the Swift
/// loops run one after the other, never together, so each may use the whole budget in turn and
/// the machine never runs threads x threads.
public struct Parallelism: Sendable, Equatable {
    public let threads: Int
    /// Spinning workers (decode steps: `withSpinningWorkers`); nil: chunks go through Dispatch.
    let workers: SpinWorkers?

    public init(threads: Int? = nil) {
        let available = ProcessInfo.processInfo.activeProcessorCount
        self.threads = max(1, threads ?? available)
        workers = nil
        applyToBLAS()
    }

    init(threads: Int, workers: SpinWorkers?) {
        self.threads = max(1, threads)
        self.workers = workers
    }

    /// The budget OpenBLAS holds now (the command's, which `init` gave it, or what a
    /// `BLAS.withThreads` around the caller set), without setting anything: for the loops of code
    /// that is handed no Parallelism, such as the offline transforms' Double matrices and the
    /// widening of a layer read from its file, which run between OpenBLAS's calls and so may use
    /// its threads.
    public static var ofBLAS: Parallelism { Parallelism(threads: BLAS.threads, workers: nil) }

    public static func == (a: Parallelism, b: Parallelism) -> Bool { a.threads == b.threads && (a.workers == nil) == (b.workers == nil) }

    /// Sets OpenBLAS's (process-wide) thread count to this budget again, after code that ran
    /// with another one.
    public func applyToBLAS() {
        openblas_set_num_threads(Int32(threads))
    }

    public static var serial: Parallelism { Parallelism(threads: 1) }

    /// Below about this many multiply-adds a second thread costs more to wake through Dispatch
    /// than it saves (measured: one decode row of in_proj ran at 115 GOP/s on one thread, 72 split
    /// over two): the int8 GEMM and the small float linears stay on one thread under it.
    public static let minimumMultiplyAddsPerThread = 1 << 21

    /// The work below which a product stays on one thread: `minimumMultiplyAddsPerThread`, or with
    /// spinning workers (a part starts within a microsecond) 2^15, about 3 us of one core's
    /// int8 multiply-adds and 32 kB of weights to stream.
    public var minimumWorkPerThread: Int { workers == nil ? Self.minimumMultiplyAddsPerThread : 1 << 15 }

    /// Runs `body` over `0..<count` split into at most `threads` contiguous chunks.
    public func forEachChunk(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        let chunks = max(1, min(threads, count / max(1, minimumChunk)))
        if chunks == 1 {
            body(0..<count)
            return
        }
        // Chunk c of `chunks`; the chunks are disjoint ranges: callers write disjoint parts of their
        // buffers, which is what makes sharing the non-Sendable closure between threads sound.
        func chunk(_ c: Int) {
            let (lo, hi) = (count * c / chunks, count * (c + 1) / chunks)
            if lo < hi { body(lo..<hi) }
        }
        if let workers, chunks <= workers.count + 1 {
            workers.run(parts: chunks, chunk)
            return
        }
        withoutActuallyEscaping(chunk) { chunk in
            let shared = UncheckedSendable(chunk)
            DispatchQueue.concurrentPerform(iterations: chunks) { shared.value($0) }
        }
    }
}

/// A value handed across threads under a promise the compiler cannot check (see its use sites).
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}

extension Parallelism {
    /// `body(i)` for every i in `0..<count`, `threads` at a time, each on one thread with OpenBLAS
    /// single-threaded (independent work items such as evaluation windows parallelize better than
    /// small matrix products do); results in index order, so the outcome never depends on the
    /// thread count. The first error thrown is rethrown after the batch.
    public func concurrentMap<T>(_ count: Int, _ body: (Int) throws -> T, afterBatch: ((Int) -> Void)? = nil) throws -> [T] {
        var out: [T] = []
        out.reserveCapacity(count)
        if threads == 1 {
            for i in 0..<count { out.append(try body(i)); afterBatch?(i + 1) }
            return out
        }
        openblas_set_num_threads(1)
        defer { applyToBLAS() }
        var done = 0
        try withoutActuallyEscaping(body) { body in
            let shared = UncheckedSendable(body)
            while done < count {
                let n = min(threads, count - done)
                var results = [Result<T, Error>?](repeating: nil, count: n)
                results.withUnsafeMutableBufferPointer { slots in
                    let slotsShared = UncheckedSendable(slots)   // each iteration writes its own slot
                    let base = done
                    DispatchQueue.concurrentPerform(iterations: n) { k in
                        slotsShared.value[k] = Result { try shared.value(base + k) }
                    }
                }
                for r in results { out.append(try r!.get()) }
                done += n
                afterBatch?(done)
            }
        }
        return out
    }
}

/// `main` on this thread while `beside` runs on a thread of its own, both finished on return:
/// `beside`'s error first, then `main`'s. For a serial job (writing a layer) that would otherwise
/// leave a core idle, run beside work that uses every core (reading and transforming the next):
/// the cores take turns between the two. (Not a two-iteration concurrentPerform: Dispatch runs a
/// concurrentPerform nested in one on a single thread, which took R1's products to one core.)
public func overlapping<T>(_ beside: () throws -> Void, _ main: () throws -> T) throws -> T {
    try withoutActuallyEscaping(beside) { beside in
        let job = SideJob(beside)
        Thread { job.run() }.start()
        let result = Result { try main() }
        try job.wait()
        return try result.get()
    }
}

/// One job for a thread of its own. The job is dropped on that thread before `done` is
/// signalled, so once `wait` returns nothing holds it (overlapping's non-escaping closure).
private final class SideJob: @unchecked Sendable {
    private var job: (() throws -> Void)?
    private var result: Result<Void, Error> = .success(())
    private let done = DispatchSemaphore(value: 0)

    init(_ job: @escaping () throws -> Void) { self.job = job }

    func run() {
        result = Result { try job!() }
        job = nil
        done.signal()
    }

    func wait() throws {
        done.wait()
        try result.get()
    }
}
