#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CMambaKernels
import Foundation

/// A read-only memory map of a whole file. Tensors read from a safetensors file point into it, so
/// loading a checkpoint costs one copy (into float32), not two.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer
    /// true when `bytes` is a private copy (read into memory) rather than a mapping.
    private let copied: Bool

    /// `copy`: read the file into memory instead of mapping it, for small inputs that must be
    /// hashed exactly as they were parsed (a stats file rewritten during quantize).
    public init(path: String, copy: Bool = false) throws {
        self.path = path
        copied = copy
        guard let (fd, info) = try openRegularFile(path) else {
            throw MambaError(.missingFile, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let size = Int(info.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        if copy {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
            do { try readFully(fd, into: buffer, path: path) } catch { buffer.deallocate(); throw error }
            bytes = UnsafeRawBufferPointer(buffer)
            return
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw MambaError(.io, "cannot map \(path): \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
        mq_register_mapping(base, size, path)
    }

    deinit {
        if copied {
            UnsafeMutableRawBufferPointer(mutating: bytes).deallocate()
        } else if let base = bytes.baseAddress {
            mq_unregister_mapping(base)
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        }
    }
}

/// Opens `path` for reading without blocking (O_NONBLOCK: opening a FIFO would otherwise wait for
/// a writer forever) and refuses anything but a regular file in one line. nil when it cannot be
/// opened (errno says why), so callers keep their own message for a missing file.
func openRegularFile(_ path: String) throws -> (fd: Int32, info: stat)? {
    let fd = open(path, O_RDONLY | O_NONBLOCK)
    guard fd >= 0 else { return nil }
    var info = stat()
    guard fstat(fd, &info) == 0 else {
        let reason = String(cString: strerror(errno))
        close(fd)
        throw MambaError(.io, "cannot stat \(path): \(reason)")
    }
    let kind = info.st_mode & S_IFMT
    guard kind == S_IFREG else {
        close(fd)
        let what = kind == S_IFDIR ? "a directory" : kind == S_IFIFO ? "a FIFO" : kind == S_IFCHR || kind == S_IFBLK ? "a device" : kind == S_IFSOCK ? "a socket" : "not a regular file"
        throw MambaError(.badFile, "\(path) is \(what), expected a regular file")
    }
    return (fd, info)
}

/// The contents of the regular file at `path`; nil when it cannot be opened (missing, no
/// permission), an error when it is a directory, FIFO, device or socket.
public func contentsOfRegularFile(atPath path: String) throws -> Data? {
    guard let (fd, info) = try openRegularFile(path) else { return nil }
    defer { close(fd) }
    // Read through the descriptor that was checked (reopening by path would read whatever the
    // path names by then, and opened the file twice).
    var data = Data(count: Int(info.st_size))
    try data.withUnsafeMutableBytes { try readFully(fd, into: $0, path: path) }
    return data
}

/// Reads `buffer.count` bytes from `fd`; a file that shrinks meanwhile is an error.
func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String) throws {
    var done = 0
    while done < buffer.count {
        let n = read(fd, buffer.baseAddress! + done, buffer.count - done)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else {
            throw MambaError(.io, "cannot read \(path): \(n == 0 ? "it shrank while being read" : String(cString: strerror(errno)))")
        }
        done += n
    }
}

/// A text file's contents (calibration and evaluation text), decoded as UTF-8.
public func readText(_ path: String) throws -> String {
    guard let data = try contentsOfRegularFile(atPath: path) else {
        throw MambaError(.missingFile, "file \(path) not found")
    }
    return String(decoding: data, as: UTF8.self)
}
