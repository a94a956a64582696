import CMambaKernels
import Foundation

/// Where tensors go one at a time: the typed adds below convert one tensor to bytes and hand it on.
public protocol SafeTensorsSink: AnyObject {
    func add(_ name: String, dtype: DType, shape: [Int], bytes: [UInt8]) throws
}

extension SafeTensorsSink {
    public func add(_ name: String, _ tensor: Tensor, as dtype: DType = .f32) throws {
        try add(name, dtype: dtype, shape: tensor.shape, bytes: floatBytes(tensor.storage, as: dtype))
    }
    public func add(_ name: String, dtype: DType = .f32, shape: [Int], floats: [Float]) throws {
        try add(name, dtype: dtype, shape: shape, bytes: floatBytes(floats, as: dtype))
    }
    public func add(_ name: String, shape: [Int], int8s: [Int8]) throws {
        try add(name, dtype: .i8, shape: shape, bytes: int8s.map { UInt8(bitPattern: $0) })
    }
}

/// A checkpoint's weight files written as tensors arrive, without holding them: each tensor's
/// bytes are appended to the current shard's data file at once; a new shard starts when the next
/// tensor would take the current one past `shardBytes`. `finish` puts each shard's header in front
/// of its data and, for more than one shard, writes `model.safetensors.index.json` (Hugging Face's
/// sharded layout: model-0000k-of-0000n.safetensors and a weight_map). The header is padded with
/// spaces to a page (`dataAlignment`), so that on a file system with FALLOC_FL_INSERT_RANGE (ext4,
/// XFS) the header goes into room inserted before the data already on disk, and the shard is
/// renamed into place: no copy, and no second copy of the data on the disk. Elsewhere (tmpfs,
/// btrfs, or with `headersInPlace` false) the header goes to a new file and the data is moved in
/// behind it by the kernel (copy_file_range); the bytes are the same either way, and apart from
/// the padding those of SafeTensorsWriter for the same tensors. Everything goes into `directory`,
/// which the caller makes and renames into place; a failure (a full disk) throws one line naming
/// the file and the reason.
public final class ShardedSafeTensorsWriter: SafeTensorsSink {
    private struct Shard {
        var entries: [(name: String, dtype: DType, shape: [Int], bytes: Int)] = []
        var dataBytes = 0
        let dataPath: String
        var fd: Int32
    }
    public let directory: String
    public let shardBytes: Int
    /// The header's __metadata__ (read when the shards are finished).
    public var metadata: [String: String]
    private var shards: [Shard] = []
    private var names = Set<String>()

    /// Where a shard's data starts: a page, the block size FALLOC_FL_INSERT_RANGE needs on ext4 and
    /// XFS with 4 KiB blocks (bigger blocks take the copy).
    public static let dataAlignment = 4096
    /// Whether `finish` tries to insert each header before its data in place (false: always copy).
    public let headersInPlace: Bool
    /// How many shards `finish` wrote in place (the rest were copied).
    public private(set) var shardsWrittenInPlace = 0

    public init(directory: String, shardBytes: Int = 5_000_000_000, metadata: [String: String], headersInPlace: Bool = true) {
        (self.directory, self.shardBytes, self.metadata, self.headersInPlace) = (directory, max(1, shardBytes), metadata, headersInPlace)
    }

    deinit { for s in shards where s.fd >= 0 { close(s.fd); unlink(s.dataPath) } }

    /// Bytes of tensor data written so far.
    public var bytesWritten: Int { shards.reduce(0) { $0 + $1.dataBytes } }

    public func add(_ name: String, dtype: DType, shape: [Int], bytes: [UInt8]) throws {
        precondition(bytes.count == shape.reduce(1, *) * dtype.byteSize, "\(name): \(bytes.count) bytes for \(dtype) \(shape)")
        precondition(names.insert(name).inserted, "duplicate tensor \(name)")
        if shards.isEmpty || (shards[shards.count - 1].dataBytes > 0 && shards[shards.count - 1].dataBytes + bytes.count > shardBytes) {
            let path = directory + "/.shard-\(shards.count + 1).data"
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw MambaError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
            shards.append(Shard(dataPath: path, fd: fd))
        }
        let k = shards.count - 1
        try writeAll(shards[k].fd, bytes, path: shards[k].dataPath)
        shards[k].entries.append((name, dtype, shape, bytes.count))
        shards[k].dataBytes += bytes.count
    }

    /// The shard file names, in order (one: model.safetensors).
    public var fileNames: [String] {
        shards.count <= 1 ? [TensorStore.singleFileName]
            : shards.indices.map { String(format: "model-%05d-of-%05d.safetensors", $0 + 1, shards.count) }
    }

    /// Writes every shard (and the index when there are several).
    public func finish() throws {
        if shards.isEmpty { shards.append(Shard(dataPath: "", fd: -1)) }
        let files = fileNames
        var weightMap: [String: String] = [:]
        for k in shards.indices {
            let path = directory + "/" + files[k]
            let header = safeTensorsHeader(shards[k].entries, metadata: metadata, alignment: Self.dataAlignment)
            var prefix = [UInt8](repeating: 0, count: 8)
            prefix.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(header.count).littleEndian, as: UInt64.self) }
            if headersInPlace, try insertHeader(prefix + header, shard: k, path: path) {
                shardsWrittenInPlace += 1
            } else {
                try copyShard(prefix + header, shard: k, path: path)
            }
            for e in shards[k].entries { weightMap[e.name] = files[k] }
        }
        if shards.count > 1 {
            let index: [String: Any] = ["metadata": ["total_size": bytesWritten], "weight_map": weightMap]
            let data = try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys])
            let path = directory + "/" + TensorStore.indexFileName
            guard FileManager.default.createFile(atPath: path, contents: data) else {
                throw MambaError(.io, "cannot write \(path)")
            }
        }
    }
}

extension ShardedSafeTensorsWriter {
    /// Shard `k`'s header inserted before its data file's first byte and the file renamed to
    /// `path`; false, with nothing changed, where the file system cannot insert (the caller copies).
    private func insertHeader(_ head: [UInt8], shard k: Int, path: String) throws -> Bool {
        let fd = shards[k].fd
        guard fd >= 0, shards[k].dataBytes > 0 else { return false }   // an empty shard: nothing to move
        if mq_insert_range_at_start(fd, Int64(head.count)) != 0 {
            if [EOPNOTSUPP, EINVAL, ENOSYS, ENODEV, EPERM].contains(errno) { return false }
            throw MambaError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        try writeAll(fd, head, path: path, at: 0)
        try sync(fd, path: path)
        close(fd)
        shards[k].fd = -1
        guard rename(shards[k].dataPath, path) == 0 else {
            throw MambaError(.io, "cannot move \(shards[k].dataPath) to \(path): \(String(cString: strerror(errno)))")
        }
        return true
    }

    /// Shard `k` as a new file: its header, then its data moved in by the kernel.
    private func copyShard(_ head: [UInt8], shard k: Int, path: String) throws {
        let out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard out >= 0 else { throw MambaError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(out) }
        try writeAll(out, head, path: path)
        if shards[k].fd >= 0 {
            close(shards[k].fd)
            shards[k].fd = -1
            try appendFile(shards[k].dataPath, to: out, bytes: shards[k].dataBytes, path: path)
            unlink(shards[k].dataPath)
        }
        try sync(out, path: path)
    }
}

/// All of `bytes` to `fd`: at its current position, or from `offset` on (pwrite).
private func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String, at offset: Int? = nil) throws {
    try bytes.withUnsafeBytes { buf in
        var done = 0
        while done < buf.count {
            let n = offset.map { pwrite(fd, buf.baseAddress! + done, buf.count - done, off_t($0 + done)) }
                ?? write(fd, buf.baseAddress! + done, buf.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw MambaError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }
}

/// fsync(2), a failure thrown as one line naming the file.
private func sync(_ fd: Int32, path: String) throws {
    guard fsync(fd) == 0 else { throw MambaError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
}

/// Appends `bytes` bytes of the file at `source` to `out` (copy_file_range, read/write where the
/// kernel refuses it).
private func appendFile(_ source: String, to out: Int32, bytes: Int, path: String) throws {
    let input = open(source, O_RDONLY)
    guard input >= 0 else { throw MambaError(.io, "cannot read \(source): \(String(cString: strerror(errno)))") }
    defer { close(input) }
    var left = bytes
    while left > 0 {
        let n = mq_copy_file_range(input, out, UInt(min(left, 1 << 30)))
        if n < 0 && errno == EINTR { continue }
        if n <= 0 {
            if n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP) { break }
            throw MambaError(.io, "cannot write \(path): \(n == 0 ? "unexpected end of \(source)" : String(cString: strerror(errno)))")
        }
        left -= Int(n)
    }
    var buffer = [UInt8](repeating: 0, count: 1 << 22)
    while left > 0 {
        let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress!, min(left, $0.count)) }
        guard n > 0 else { throw MambaError(.io, "cannot read \(source): \(String(cString: strerror(errno)))") }
        try writeAll(out, Array(buffer[0..<n]), path: path)
        left -= n
    }
}
