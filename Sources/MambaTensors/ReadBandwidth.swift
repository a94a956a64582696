import CMambaKernels
import Foundation

/// How fast this machine streams memory to 1, 2, ... threads, as decode reads weights: a buffer
/// far larger than the caches, split between the threads of the budget's spinning workers (the
/// ones decode's GEMVs use, SpinWorkers.swift), medians of `runs`. Decode is bound by this read;
/// whether a second thread pays depends on whether the bandwidth grows with it, which differs
/// between CPUs (docs/PERFORMANCE.md, "Decode on every core").
public struct ReadBandwidth: Sendable, Encodable {
    public let threads: Int
    public let gigabytesPerSecond: Double

    enum CodingKeys: String, CodingKey { case threads, gigabytesPerSecond = "gigabytes_per_second" }

    /// GB/s for each thread count 1...maxThreads over `bytes` (rounded down to whole words).
    public static func measure(maxThreads: Int, bytes: Int = 256 << 20, runs: Int = 5) -> [ReadBandwidth] {
        let words = max(1, bytes / 8)
        let buffer = UnsafeMutablePointer<UInt64>.allocate(capacity: words)
        defer { buffer.deallocate() }
        // Written once, so every page is resident before the first timed read.
        for i in 0..<words { buffer[i] = UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }
        return (1...max(1, maxThreads)).map { t in
            Parallelism(threads: t).withSpinningWorkers { par in
                var times: [Double] = []
                for _ in 0..<(runs + 1) {   // the first run warms the workers and the TLB
                    let sums = UnsafeMutablePointer<UInt64>.allocate(capacity: t)
                    defer { sums.deallocate() }
                    let start = DispatchTime.now().uptimeNanoseconds
                    par.forEachChunk(t) { parts in
                        for part in parts {
                            let (lo, hi) = (words * part / t, words * (part + 1) / t)
                            sums[part] = mq_read_words(buffer + lo, hi - lo)
                        }
                    }
                    // The C sum is opaque to Swift, so the reads cannot be dropped.
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                }
                let sorted = times.dropFirst().sorted()
                return ReadBandwidth(threads: t, gigabytesPerSecond: Double(words * 8) / 1e9 / sorted[sorted.count / 2])
            }
        }
    }
}
