import CMambaKernels
import Foundation

/// The memory a new allocation of this process can have: the lowest of the kernel's MemAvailable
/// (/proc/meminfo), what the address-space limit (RLIMIT_AS) leaves beside what the process has
/// mapped already (its checkpoint's mapped files included), and what the cgroup's memory limit
/// leaves (a container's; cgroup v2 memory.max, or v1 memory.limit_in_bytes). Each job's estimate
/// is checked against it before anything is allocated (MemoryEstimate, MambaLM(checkpoint:)).
public enum SystemMemory {
    /// The lowest limit in bytes (nil where none can be read).
    public static func available() -> Double? { limits().map(\.bytes).min() }

    /// The lowest limit's name, for messages: "MemAvailable", or another limit "below MemAvailable".
    public static func availableSource() -> String {
        guard let lowest = limits().min(by: { $0.bytes < $1.bytes }), lowest.name != "MemAvailable" else { return "MemAvailable" }
        return lowest.name + ", below MemAvailable"
    }

    static func limits() -> [(name: String, bytes: Double)] {
        var out: [(String, Double)] = []
        if let kb = field("/proc/meminfo", "MemAvailable:") { out.append(("MemAvailable", kb * 1024)) }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max, let vm = field("/proc/self/status", "VmSize:") {
            out.append(("the address-space limit (ulimit -v)", max(0, Double(limit.rlim_cur) - vm * 1024)))
        }
        if let max = number("/sys/fs/cgroup/memory.max"), let used = number("/sys/fs/cgroup/memory.current") {
            out.append(("the cgroup's memory.max", Swift.max(0, max - used)))
        } else if let max = number("/sys/fs/cgroup/memory/memory.limit_in_bytes"), max < 1e18,
                  let used = number("/sys/fs/cgroup/memory/memory.usage_in_bytes") {
            out.append(("the cgroup's memory limit", Swift.max(0, max - used)))
        }
        return out
    }

    /// A "Key: value kB" line's value.
    private static func field(_ path: String, _ key: String) -> Double? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            return line.dropFirst(key.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Double($0) }
        }
        return nil
    }

    /// A file holding one number ("max" and absent files: nil).
    private static func number(_ path: String) -> Double? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}

/// "12.3 GB" or "456 MB".
public func gigabytes(_ bytes: Double) -> String {
    bytes >= 1e9 ? String(format: "%.1f GB", bytes / 1e9) : String(format: "%.0f MB", bytes / 1e6)
}

extension SystemMemory {
    /// For a job that allocates and frees the same large arrays layer after layer (calibrate,
    /// quantize): glibc then serves them from its heap and keeps what is freed for the next layer.
    /// By default every allocation above 32 MB is a fresh mmap whose pages the kernel faults in
    /// and zeroes again: quantize of the mamba-1.4b shape took 8.4 M page faults and spent 14% of
    /// its time in them (0.5 M with this; the same output bytes); calibrate of 8 x 128 tokens there
    /// 2.4 M (0.17 M with this, 15% less task clock). Freed memory stays with the process until it
    /// exits, so a job's resident size stays at its peak instead of dropping between layers.
    /// Inference too, once its model is loaded (generate, evaluate, serve, classify; bench and
    /// compare from the start): a prompt's [L, E]-sized temporaries are allocated and freed in
    /// every op of every layer, and glibc maps each one above its mmap threshold afresh or hands
    /// the heap's freed top back to the kernel past its trim threshold, so their pages are faulted
    /// in and zeroed again op after op (docs/PERFORMANCE.md, "Long prompts": a 512-token prefill
    /// 1.2-1.5x faster on a Zen 3). Loading runs before it, so a loader's freed integers go back
    /// to the system.
    public static func keepFreedMemoryForReuse() {
        mq_keep_freed_memory()
    }
}
