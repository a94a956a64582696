import CMambaKernels
import Foundation

/// Temporary outputs (a checkpoint being written) removed when the process is interrupted:
/// SIGINT or SIGTERM during a 30-minute quantize must not leave gigabytes of half-written shards
/// beside --out. Registered paths are removed, then the process exits with 128 + the signal.
public enum TemporaryPaths {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var paths = Set<String>()
    nonisolated(unsafe) private static var installed = false

    public static func register(_ path: String) {
        lock.lock()
        defer { lock.unlock() }
        paths.insert(path)
        if !installed { installHandlers() }
    }

    public static func unregister(_ path: String) {
        lock.lock()
        defer { lock.unlock() }
        paths.remove(path)
    }

    /// The handlers are installed by sigaction before `register` returns (CMambaKernels/fileio.c:
    /// they write the signal to a pipe); a thread of its own waits on the pipe, removes the
    /// registered paths and exits. (A dispatch signal source needed SIG_IGN first and registered
    /// asynchronously: a signal in between was dropped and the command ran on.)
    private static func installHandlers() {
        let fd = mq_install_interrupt_pipe()
        guard fd >= 0 else { return }
        installed = true
        let thread = Thread {
            var sig: UInt8 = 0
            while read(fd, &sig, 1) != 1 {}
            lock.lock()
            let doomed = paths
            lock.unlock()
            for p in doomed { try? FileManager.default.removeItem(atPath: p) }
            FileHandle.standardError.write(Data("interrupted: removed \(doomed.count) temporary output(s)\n".utf8))
            // _exit, not exit: exit runs the libraries' destructors while the other threads still
            // compute, and OpenBLAS's frees its buffers under a running sgemm (a 7B quantize
            // interrupted in R1 died of SIGSEGV with a crash report instead of exiting 130).
            fflush(nil)   // every output stream (stdout may hold a line)
            _exit(128 + Int32(sig))
        }
        thread.start()
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

/// The tool never overwrites its input (docs/DESIGN.md section 5).
public func refuseOverwritingInput(_ output: String, inputs: [String]) throws {
    let out = URL(fileURLWithPath: output).standardizedFileURL.resolvingSymlinksInPath().path
    for input in inputs {
        let inPath = URL(fileURLWithPath: input).standardizedFileURL.resolvingSymlinksInPath().path
        let insideAndExisting = out.hasPrefix(inPath + "/") && FileManager.default.fileExists(atPath: out)
        if out == inPath || insideAndExisting {
            throw MambaError(.badInput, "refusing to write \(output): it would overwrite the input \(input)")
        }
    }
}
