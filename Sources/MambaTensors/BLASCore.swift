import CMambaKernels
import COpenBLAS
import Foundation

/// OpenBLAS picks its kernels from the CPU at load time, and Debian's 0.3.21 does not know some
/// newer CPUs: on Sapphire Rapids it falls back to "Prescott" (SSE3), about 3x slower at sgemm than
/// the AVX2 "Haswell" kernels on the same machine (measured here: 113 vs 236 prefill tokens/s at
/// mamba-130m shapes). The core can only be chosen before the library loads (OPENBLAS_CORETYPE),
/// so the executable re-executes itself once with the variable set. A user's own
/// OPENBLAS_CORETYPE always wins.
public enum BLASCore {
    /// The core OpenBLAS is running.
    public static var current: String { String(cString: openblas_get_corename()) }

    /// The core to request instead, when OpenBLAS fell back to a generic one this CPU outgrows.
    public static func betterCore(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, let wanted = mq_blas_core_for_cpu() else { return nil }
        let generic: Set<String> = ["prescott", "core2", "nehalem", "katmai", "coppermine", "northwood", "banias", "atom", "unknown"]
        return generic.contains(current.lowercased()) ? String(cString: wanted) : nil
    }

    /// OpenBLAS's idle worker threads spin (sched_yield) for about 2^28 cycles after each call
    /// before they sleep, and on a 2-core machine that spinning takes the core the int8 GEMM's
    /// second thread needs (measured here: int8 GEMM at 2 threads 227 GOP/s with the default, 414
    /// with 2^4 cycles; sgemm unchanged at 189-195 GFLOP/s). A user's own setting wins.
    public static func threadTimeout(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        environment["OPENBLAS_THREAD_TIMEOUT"] == nil ? "4" : nil
    }

    /// Re-executes the running program with OPENBLAS_CORETYPE set when `betterCore` says so and
    /// OPENBLAS_THREAD_TIMEOUT when `threadTimeout` does (both are read when the library loads).
    /// Returns only when no re-exec is needed or it failed (the program then runs as it is).
    public static func reexecWithBLASEnvironmentIfNeeded() {
        let core = betterCore(), timeout = threadTimeout()
        guard core != nil || timeout != nil else { return }
        if let core { setenv("OPENBLAS_CORETYPE", core, 1) }
        if let timeout { setenv("OPENBLAS_THREAD_TIMEOUT", timeout, 1) }
        let args = CommandLine.arguments
        var cargs = args.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &cargs)
        for p in cargs { free(p) }   // execv returned: it failed; run on as we are
    }
}
