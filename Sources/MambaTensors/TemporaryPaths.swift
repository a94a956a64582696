import Dispatch
import Foundation

/// Temporary outputs (a checkpoint being written) removed when the process is interrupted:
/// SIGINT or SIGTERM during a 30-minute quantize must not leave gigabytes of half-written shards
/// beside --out. Registered paths are removed, then the process exits with 128 + the signal.
public enum TemporaryPaths {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var paths = Set<String>()
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    public static func register(_ path: String) {
        lock.lock()
        defer { lock.unlock() }
        paths.insert(path)
        if sources.isEmpty { installHandlers() }
    }

    public static func unregister(_ path: String) {
        lock.lock()
        defer { lock.unlock() }
        paths.remove(path)
    }

    private static func installHandlers() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)   // delivered to the dispatch source instead
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                lock.lock()
                let doomed = paths
                lock.unlock()
                for p in doomed { try? FileManager.default.removeItem(atPath: p) }
                FileHandle.standardError.write(Data("interrupted: removed \(doomed.count) temporary output(s)\n".utf8))
                exit(128 + sig)
            }
            source.resume()
            sources.append(source)
        }
    }

    /// Removes `.NAME.tmp-PID` siblings of `destination` left by processes that no longer run
    /// (killed with SIGKILL, or a crash): they can never be finished.
    public static func sweepStale(beside destination: String) {
        let url = URL(fileURLWithPath: destination).standardizedFileURL
        let parent = url.deletingLastPathComponent().path
        let prefix = "." + url.lastPathComponent + ".tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: parent) else { return }
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let pid = Int32(rest.hasSuffix(".old") ? rest.dropLast(4) : rest), pid > 0 else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(atPath: parent + "/" + name) }
        }
    }
}
