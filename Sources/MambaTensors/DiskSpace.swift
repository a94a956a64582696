import Foundation

/// Free space on the file system that is to hold a job's output, checked before the job starts
/// (QuantizeJob): a 7B quantize that found the disk full after ten minutes would have wasted them.
public enum DiskSpace {
    /// Bytes this process may still write on the file system holding `path` (statvfs: f_bavail
    /// blocks of f_frsize bytes, what is left past the blocks reserved for root); nil where
    /// statvfs fails.
    public static func available(at path: String) -> Double? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return Double(s.f_bavail) * Double(s.f_frsize)
    }

    /// Refuses in one line when `bytes` (a lower bound of what the job writes, so that no job
    /// that fits is refused) exceed the free space at `directory`; passes where it cannot be read.
    public static func check(_ bytes: Double, directory: String, job: String, writing what: String, available: Double? = nil) throws {
        guard let free = available ?? Self.available(at: directory), bytes > free else { return }
        throw MambaError(.io, "\(job) needs at least \(gigabytes(bytes)) of disk for \(what) but \(directory) has \(gigabytes(free)) free")
    }
}
