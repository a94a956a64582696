import Foundation

/// The memory the kernel says a new allocation can have (Linux /proc/meminfo).
public enum SystemMemory {
    /// MemAvailable, in bytes (nil where /proc/meminfo is absent).
    public static func available() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let kb = line.dropFirst("MemAvailable:".count).split(separator: " ").first.flatMap { Double($0) }
            return kb.map { $0 * 1024 }
        }
        return nil
    }
}

/// "12.3 GB" or "456 MB".
public func gigabytes(_ bytes: Double) -> String {
    bytes >= 1e9 ? String(format: "%.1f GB", bytes / 1e9) : String(format: "%.0f MB", bytes / 1e6)
}
