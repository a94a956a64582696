import CMambaKernels
import Foundation

/// Forcing a kernel path in tests. The cap that picks a path (mq_s8_set_max_level for the int8
/// kernels, mq_f32_set_max_level for the float ones) is process-global, so a forced path has a
/// scope: one lock serializes the scopes (two tests can never interleave paths, whatever runs them
/// concurrently) and the CPU's best path is restored when each ends (none leaks into a later test).
public enum KernelPaths {
    private static let lock = NSRecursiveLock()

    /// `body` once per int8 path this CPU runs (0 scalar, 1 AVX2, 2 AVX-512 VNNI, 3 AMX), with the path
    /// forced for its duration.
    public static func forEachInt8Level(_ body: (Int32) throws -> Void) rethrows {
        lock.lock()
        defer { mq_s8_set_max_level(-1); lock.unlock() }
        mq_s8_set_max_level(-1)
        for level in 0...mq_s8_level() {
            mq_s8_set_max_level(level)
            try body(level)
        }
    }

    /// `body` once per float path this CPU runs (0 scalar, 1 AVX2, 2 AVX-512), best first.
    public static func forEachFloatLevel(_ body: (Int32) throws -> Void) rethrows {
        lock.lock()
        defer { mq_f32_set_max_level(-1); lock.unlock() }
        mq_f32_set_max_level(-1)
        for level in (0...mq_f32_level()).reversed() {
            mq_f32_set_max_level(level)
            try body(level)
        }
    }
}

/// A fresh seed for a randomized test (kernels against their references on new inputs each run),
/// or MAMBAQUANT_TEST_SEED's. Printed with the test's name, so that a failure in the log is rerun
/// on the same inputs with MAMBAQUANT_TEST_SEED set.
public func freshSeed(_ test: String = #function, in range: ClosedRange<UInt64> = 0...1_000_000) -> UInt64 {
    let seed = ProcessInfo.processInfo.environment["MAMBAQUANT_TEST_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: range)
    print("\(test): seed \(seed) (MAMBAQUANT_TEST_SEED=\(seed) reruns it)")
    return seed
}
