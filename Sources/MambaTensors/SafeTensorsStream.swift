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
/// tensor would take the current one past `shardBytes`. `finish` writes each shard as header +
/// data (the data moved by the kernel, copy_file_range) and, for more than one shard,
/// `model.safetensors.index.json` (Hugging Face's sharded layout: model-0000k-of-0000n.safetensors
/// and a weight_map). One shard is `model.safetensors`, byte for byte what SafeTensorsWriter
/// writes for the same tensors. Everything goes into `directory`, which the caller makes and
/// renames into place; a failure (a full disk) throws one line naming the file and the reason.
public final class ShardedSafeTensorsWriter: SafeTensorsSink {
    private struct Shard {
        var entries: [(name: String, dtype: DType, shape: [Int], bytes: Int)] = []
        var dataBytes = 0
        let dataPath: String
        let fd: Int32
    }
    public let directory: String
    public let shardBytes: Int
    /// The header's __metadata__ (read when the shards are finished).
    public var metadata: [String: String]
    private var shards: [Shard] = []
    private var names = Set<String>()

    public init(directory: String, shardBytes: Int = 5_000_000_000, metadata: [String: String]) {
        (self.directory, self.shardBytes, self.metadata) = (directory, max(1, shardBytes), metadata)
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
        for (k, shard) in shards.enumerated() {
            let path = directory + "/" + files[k]
            let out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard out >= 0 else { throw MambaError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
            defer { close(out) }
            let header = safeTensorsHeader(shard.entries, metadata: metadata)
            var prefix = [UInt8](repeating: 0, count: 8)
            prefix.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(header.count).littleEndian, as: UInt64.self) }
            try writeAll(out, prefix + header, path: path)
            if shard.fd >= 0 {
                close(shard.fd)
                shards[k] = Shard(entries: shard.entries, dataBytes: shard.dataBytes, dataPath: shard.dataPath, fd: -1)
                try appendFile(shard.dataPath, to: out, bytes: shard.dataBytes, path: path)
                unlink(shard.dataPath)
            }
            guard fsync(out) == 0 else { throw MambaError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
            for e in shard.entries { weightMap[e.name] = files[k] }
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

private func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
    try bytes.withUnsafeBytes { buf in
        var done = 0
        while done < buf.count {
            let n = write(fd, buf.baseAddress! + done, buf.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw MambaError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }
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
