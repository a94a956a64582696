import CMambaKernels
import COpenBLAS
import Foundation

/// OpenBLAS picks its kernels from the CPU at load time, and Debian's 0.3.21 does not know some
/// newer CPUs: on Sapphire Rapids it falls back to "Prescott" (SSE3), about 3x slower at sgemm than
/// the AVX2 "Haswell" kernels on the same machine (measured here: 113 vs 236 prefill tokens/s at
/// mamba-130m shapes), and on some AMD Zen 4 machines it runs "Haswell" where the AVX-512
/// "SkylakeX" kernels were 1.62x faster in float32 prefill (647 vs 399 tokens/s, 1 thread; on the
/// Zen 4 of the README's figures it picks "Cooperlake", an AVX-512 core, itself). The float32
/// baseline must be the fastest core the CPU runs, so when OpenBLAS chose a weaker class of kernels
/// than the CPU supports the executable re-executes itself once with OPENBLAS_CORETYPE set (it is
/// read only when the library loads). A user's own OPENBLAS_CORETYPE always wins. `bench
/// --blas-cores` measures every core the CPU runs and compares against the fastest.
public enum BLASCore {
    /// The core OpenBLAS is running.
    public static var current: String { String(cString: openblas_get_corename()) }

    /// The class of a core's kernels: 0 generic (SSE), 1 AVX2 + FMA, 2 AVX-512.
    public static func tier(_ core: String) -> Int {
        switch core.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return 2
        case "haswell", "zen", "zen3", "zen4": return 1
        default: return 0
        }
    }

    /// The best core this CPU runs by its features ("SkylakeX" with AVX-512 F/BW/VL/DQ, "Haswell"
    /// with AVX2 + FMA), nil where OpenBLAS's own choice needs no help.
    public static var coreForCPU: String? { mq_blas_core_for_cpu().map { String(cString: $0) } }

    /// The core to request instead, when OpenBLAS chose a weaker class of kernels than the CPU runs.
    public static func betterCore(environment: [String: String] = ProcessInfo.processInfo.environment,
                                  running: String = current, forCPU: String? = coreForCPU) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, let wanted = forCPU else { return nil }
        return tier(running) < tier(wanted) ? wanted : nil
    }

    /// The cores worth measuring on this CPU: the running one and those of each class it supports
    /// (Cooperlake's extra BF16 kernels are not used by sgemm, Zen's are Haswell's).
    public static func candidates(running: String = current, forCPU: String? = coreForCPU) -> [String] {
        var cores = [running]
        let top = forCPU.map(tier) ?? 0
        for (core, t) in [("Haswell", 1), ("SkylakeX", 2)] where t <= top && !cores.contains(where: { $0.lowercased() == core.lowercased() }) {
            cores.append(core)
        }
        return cores
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
        var variables: [String: String] = [:]
        if let core { variables["OPENBLAS_CORETYPE"] = core }
        if let timeout { variables["OPENBLAS_THREAD_TIMEOUT"] = timeout }
        reexec(setting: variables)   // returned: it failed; run on as we are
    }

    /// Re-executes the running program with its own arguments and these environment variables set
    /// (OpenBLAS reads them only when it loads). Returns only when execv failed, with errno.
    @discardableResult
    public static func reexec(setting variables: [String: String]) -> Int32 {
        for (name, value) in variables { setenv(name, value, 1) }
        var cargs = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &cargs)
        let error = errno
        for p in cargs { free(p) }
        return error
    }
}
