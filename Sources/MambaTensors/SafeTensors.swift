import Foundation

// The safetensors format (huggingface/safetensors, docs "Format"): an 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
// {string: string}}, then the data; offsets are relative to the end of the header.

/// One tensor inside a mapped safetensors file (no copy until asked).
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let bytes: UnsafeRawBufferPointer
    /// Keeps the mapping alive while a view exists.
    let owner: MappedFile

    public var count: Int { shape.reduce(1, *) }

    /// Entry `index` of the first dimension, as a view of its own (a stacked tensor's part: one
    /// expert of Granite's block_sparse_moe.input_linear.weight [E, 2I, D]).
    public func slice(_ index: Int) -> TensorView {
        precondition(shape.count >= 2 && (0..<shape[0]).contains(index), "slice \(index) of \(name) \(shape)")
        let part = count / shape[0] * dtype.byteSize
        return TensorView(name: "\(name)[\(index)]", dtype: dtype, shape: Array(shape.dropFirst()),
                          bytes: UnsafeRawBufferPointer(rebasing: bytes[(index * part)..<((index + 1) * part)]), owner: owner)
    }

    /// Tells the kernel that this tensor's pages of the mapping are not needed now (after they
    /// were copied out): a loader that widens or packs tensor by tensor then holds one copy of
    /// the model, not the copy plus the mapped file. The pages fault back in if read again.
    public func releasePages() {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        // Whole pages inside this tensor only: a neighbour sharing a page stays mapped.
        let start = (Int(bitPattern: base) + page - 1) / page * page
        let end = (Int(bitPattern: base) + bytes.count) / page * page
        if end > start { madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_DONTNEED) }
    }

    /// Values converted to float32 (from F32, F16, BF16 or F64).
    public func floats() throws -> [Float] {
        let n = count
        var out = [Float](repeating: 0, count: n)
        out.withUnsafeMutableBufferPointer { dst in
            let d = dst.baseAddress!
            switch dtype {
            case .f32:
                if n > 0 { memcpy(d, bytes.baseAddress!, n * 4) }
            // Widening a big 16-bit tensor (a 7B layer's in_proj is 67 M values) is split over
            // OpenBLAS's threads, which are idle while a layer is read.
            case .f16:
                Parallelism.ofBLAS.forEachChunk(n, minimumChunk: 1 << 16) { r in
                    for i in r { d[i] = Float(Float16(bitPattern: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
                }
            case .bf16:
                Parallelism.ofBLAS.forEachChunk(n, minimumChunk: 1 << 16) { r in
                    for i in r { d[i] = bf16ToFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
                }
            case .f64:
                for i in 0..<n { d[i] = Float(bytes.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
            default:
                break
            }
        }
        guard dtype.isFloatingPoint else {
            throw MambaError(.dtypeMismatch, "tensor \(name) in \(owner.path) has dtype \(dtype.rawValue), expected a float type (F32, F16, BF16)")
        }
        return out
    }

    public func tensor() throws -> Tensor { Tensor(shape: shape, storage: try floats()) }

    public func doubles() throws -> [Double] {
        if dtype == .f64 { return (0..<count).map { bytes.loadUnaligned(fromByteOffset: 8 * $0, as: Double.self) } }
        return try floats().map(Double.init)
    }

    /// Raw values of an integer tensor, widened to Int.
    public func integers() throws -> [Int] {
        switch dtype {
        case .i8: return (0..<count).map { Int(bytes.loadUnaligned(fromByteOffset: $0, as: Int8.self)) }
        case .u8: return (0..<count).map { Int(bytes.loadUnaligned(fromByteOffset: $0, as: UInt8.self)) }
        case .i32: return (0..<count).map { Int(bytes.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        case .i64: return (0..<count).map { Int(bytes.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
        default:
            throw MambaError(.dtypeMismatch, "tensor \(name) in \(owner.path) has dtype \(dtype.rawValue), expected an integer type")
        }
    }

    public func int8s() throws -> [Int8] {
        guard dtype == .i8 else {
            throw MambaError(.dtypeMismatch, "tensor \(name) in \(owner.path) has dtype \(dtype.rawValue), expected I8")
        }
        return Array(bytes.bindMemory(to: Int8.self))
    }
}

/// A parsed, validated safetensors file.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    public let metadata: [String: String]
    /// Tensor names in file order (by data offset).
    public let names: [String]
    private let views: [String: TensorView]
    private let file: MappedFile

    /// `copy`: read into memory rather than mapped (MappedFile).
    public init(path: String, copy: Bool = false) throws {
        let file = try MappedFile(path: path, copy: copy)
        self.file = file
        self.path = path
        let raw = file.bytes
        guard raw.count >= 8 else {
            throw MambaError(.badFile, "\(path) is not a safetensors file: \(raw.count) bytes, too short for a header")
        }
        let headerLength = raw.loadUnaligned(as: UInt64.self).littleEndian
        guard headerLength <= UInt64(raw.count - 8), headerLength >= 2 else {
            throw MambaError(.badFile, "\(path): header length \(headerLength) exceeds the file (\(raw.count) bytes); the file is truncated or not safetensors")
        }
        let headerEnd = 8 + Int(headerLength)
        let headerData = Data(raw[8..<headerEnd])
        guard let json = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw MambaError(.badFile, "\(path): the safetensors header is not a JSON object")
        }
        let dataSize = raw.count - headerEnd
        var metadata: [String: String] = [:]
        var parsed: [(begin: Int, view: TensorView)] = []
        for (name, value) in json {
            if name == "__metadata__" {
                guard let dict = value as? [String: Any] else {
                    throw MambaError(.badFile, "\(path): __metadata__ is not a JSON object")
                }
                for (k, v) in dict {
                    guard let s = v as? String else {
                        throw MambaError(.badFile, "\(path): __metadata__[\(k)] is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtypeName = entry["dtype"] as? String,
                  let shapeAny = entry["shape"] as? [Any],
                  let offsetsAny = entry["data_offsets"] as? [Any], offsetsAny.count == 2
            else {
                throw MambaError(.badFile, "\(path): header entry for tensor \(name) lacks dtype, shape or data_offsets")
            }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw MambaError(.badFile, "\(path): tensor \(name) has unsupported dtype \(dtypeName)")
            }
            let shape = shapeAny.compactMap(exactInteger)
            let offsets = offsetsAny.compactMap(exactInteger)
            guard shape.count == shapeAny.count, offsets.count == 2, shape.allSatisfy({ $0 >= 0 }) else {
                throw MambaError(.badFile, "\(path): tensor \(name) has a malformed shape or data_offsets (each must be a non-negative integer)")
            }
            let (begin, end) = (offsets[0], offsets[1])
            // The element count is checked for overflow: a forged shape such as [2^62, 2^62] would trap.
            var expected = dtype.byteSize
            for d in shape {
                let (product, overflow) = expected.multipliedReportingOverflow(by: d)
                guard !overflow else {
                    throw MambaError(.badFile, "\(path): tensor \(name) has shape \(shapeString(shape)), more bytes than any file holds")
                }
                expected = product
            }
            guard begin >= 0, begin <= end, end <= dataSize else {
                throw MambaError(.badFile, "\(path): tensor \(name) data [\(begin), \(end)) lies outside the \(dataSize) data bytes; the file is truncated or corrupt")
            }
            guard end - begin == expected else {
                throw MambaError(.badFile, "\(path): tensor \(name) \(dtype.rawValue) \(shapeString(shape)) needs \(expected) bytes, its offsets give \(end - begin)")
            }
            let bytes = UnsafeRawBufferPointer(rebasing: raw[(headerEnd + begin)..<(headerEnd + end)])
            parsed.append((begin, TensorView(name: name, dtype: dtype, shape: shape, bytes: bytes, owner: file)))
        }
        // The spec: the data is entirely indexed, without holes. Checking it also catches a header
        // length that is off by one yet still parses (padding spaces), which would shift every
        // tensor by a byte.
        parsed.sort { ($0.begin, $0.view.name) < ($1.begin, $1.view.name) }
        var lastEnd = 0
        for (begin, view) in parsed where !view.bytes.isEmpty {
            guard begin >= lastEnd else {
                throw MambaError(.badFile, "\(path): tensor \(view.name) overlaps the tensor before it")
            }
            guard begin == lastEnd else {
                throw MambaError(.badFile, "\(path): \(begin - lastEnd) data bytes before tensor \(view.name) belong to no tensor; the header length or offsets are wrong")
            }
            lastEnd = begin + view.bytes.count
        }
        guard lastEnd == dataSize else {
            throw MambaError(.badFile, "\(path): \(dataSize - lastEnd) data bytes after the last tensor belong to no tensor; the header length or offsets are wrong")
        }
        self.metadata = metadata
        self.names = parsed.map(\.view.name)
        self.views = Dictionary(uniqueKeysWithValues: parsed.map { ($0.view.name, $0.view) })
    }

    public func contains(_ name: String) -> Bool { views[name] != nil }

    public func view(_ name: String) throws -> TensorView {
        guard let v = views[name] else {
            throw MambaError(.missingTensor, "\(path) has no tensor \(name)")
        }
        return v
    }

    public var fileSize: Int { file.bytes.count }

    /// SHA-256 of the bytes this reader parsed (hex).
    public var sha256: String { SHA256.hex(of: file.bytes) }
}

/// A JSON number that is an integer (not 260.5, not a boolean) and fits in Int.
public func exactInteger(_ value: Any) -> Int? {
    // JSONSerialization's numbers: "c" is a boolean, "d"/"f" a number written with a fraction or
    // an exponent, the rest integers ("Q" may exceed Int).
    guard let n = value as? NSNumber else { return nil }
    switch String(cString: n.objCType) {
    case "c": return nil
    case "d", "f":
        let d = n.doubleValue
        guard d.isFinite, d == d.rounded() else { return nil }
        return Int(exactly: d)
    case "Q": return n.uint64Value <= UInt64(Int.max) ? Int(n.uint64Value) : nil
    default: return Int(n.int64Value)
    }
}

/// Builds a safetensors file in memory order and writes it atomically (temp file + rename).
public struct SafeTensorsWriter {
    private struct Entry { let name: String; let dtype: DType; let shape: [Int]; let bytes: [UInt8] }
    private var entries: [Entry] = []
    public var metadata: [String: String] = [:]

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    public mutating func add(_ name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
        precondition(bytes.count == shape.reduce(1, *) * dtype.byteSize, "\(name): \(bytes.count) bytes for \(dtype) \(shape)")
        precondition(!entries.contains { $0.name == name }, "duplicate tensor \(name)")
        entries.append(Entry(name: name, dtype: dtype, shape: shape, bytes: bytes))
    }

    public mutating func add(_ name: String, _ tensor: Tensor, as dtype: DType = .f32) {
        add(name, dtype: dtype, shape: tensor.shape, floats: tensor.storage)
    }

    public mutating func add(_ name: String, dtype: DType = .f32, shape: [Int], floats: [Float]) {
        add(name, dtype: dtype, shape: shape, bytes: floatBytes(floats, as: dtype))
    }

    public mutating func add(_ name: String, shape: [Int], doubles: [Double]) {
        add(name, dtype: .f64, shape: shape, bytes: littleEndianBytes(doubles.map(\.bitPattern)))
    }

    public mutating func add(_ name: String, shape: [Int], int8s: [Int8]) {
        add(name, dtype: .i8, shape: shape, bytes: int8s.map { UInt8(bitPattern: $0) })
    }

    public mutating func add(_ name: String, shape: [Int], int32s: [Int32]) {
        add(name, dtype: .i32, shape: shape, bytes: littleEndianBytes(int32s.map { UInt32(bitPattern: $0) }))
    }

    public mutating func add(_ name: String, shape: [Int], int64s: [Int64]) {
        add(name, dtype: .i64, shape: shape, bytes: littleEndianBytes(int64s.map { UInt64(bitPattern: $0) }))
    }

    func headerBytes() -> [UInt8] {
        safeTensorsHeader(entries.map { ($0.name, $0.dtype, $0.shape, $0.bytes.count) }, metadata: metadata)
    }

    /// Writes to `path` through a temporary file in the same directory and a rename, so a reader
    /// never sees a half-written file and a failure leaves nothing behind.
    public func write(to path: String) throws {
        let header = headerBytes()
        var out = Data(capacity: 8 + header.count + entries.reduce(0) { $0 + $1.bytes.count })
        var length = UInt64(header.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        for e in entries { out.append(contentsOf: e.bytes) }
        try writeAtomically(out, to: path)
    }
}

/// Temp file beside the target, then rename: the target is either the old file or the whole new one.
public func writeAtomically(_ data: Data, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    guard FileManager.default.fileExists(atPath: dir) else {
        throw MambaError(.missingFile, "cannot write \(path): directory \(dir) does not exist")
    }
    let temp = dir + "/.\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)"
    guard FileManager.default.createFile(atPath: temp, contents: data) else {
        throw MambaError(.io, "cannot write \(temp)")
    }
    if rename(temp, path) != 0 {
        let reason = String(cString: strerror(errno))
        unlink(temp)
        throw MambaError(.io, "cannot move \(temp) to \(path): \(reason)")
    }
}

func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: values.count * MemoryLayout<T>.size)
    out.withUnsafeMutableBytes { dst in
        for (i, v) in values.enumerated() { dst.storeBytes(of: v.littleEndian, toByteOffset: i * MemoryLayout<T>.size, as: T.self) }
    }
    return out
}

/// Float values stored as `dtype` (F32, F16, BF16 or F64), little-endian.
func floatBytes(_ floats: [Float], as dtype: DType) -> [UInt8] {
    switch dtype {
    case .f32: littleEndianBytes(floats.map(\.bitPattern))
    case .f16: littleEndianBytes(floats.map { Float16($0).bitPattern })
    case .bf16: littleEndianBytes(floats.map(floatToBF16))
    case .f64: littleEndianBytes(floats.map { Double($0).bitPattern })
    default: preconditionFailure("\(dtype) is not a float type")
    }
}

/// The header JSON, keys in a fixed order so that equal inputs give byte-identical files, padded
/// with spaces (the format allows trailing whitespace) so the data starts at a multiple of
/// `alignment` bytes from the file's start: 8, as the reference writer does, or a page.
func safeTensorsHeader(_ entries: [(name: String, dtype: DType, shape: [Int], bytes: Int)], metadata: [String: String],
                       alignment: Int = 8) -> [UInt8] {
    var parts: [String] = []
    if !metadata.isEmpty {
        let items = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
        parts.append("\"__metadata__\":{\(items.joined(separator: ","))}")
    }
    var offset = 0
    for e in entries {
        let shape = e.shape.map(String.init).joined(separator: ",")
        parts.append("\(jsonString(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + e.bytes)]}")
        offset += e.bytes
    }
    var header = Array(("{" + parts.joined(separator: ",") + "}").utf8)
    let padding = (alignment - (8 + header.count) % alignment) % alignment
    header += repeatElement(0x20, count: padding)
    return header
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
