import CMambaKernels
import Foundation

/// SHA-256 (FIPS 180-4), for the hashes that tie files together (docs/DESIGN.md section 5: checkpoint
/// sha256 over the weight files in index order, data sha256 over the data files in order). Written
/// here to keep the dependency list short (the compression in C, with the x86 SHA extensions where
/// the CPU has them); tested against the FIPS vectors and Python's hashlib.
public struct SHA256: Sendable {
    private var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0

    /// The portable compression even where the CPU has SHA extensions (tests compare the two).
    private let portable: Bool

    public init(portable: Bool = false) { self.portable = portable }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        length &+= UInt64(bytes.count)
        var i = 0
        if !buffer.isEmpty {
            let take = min(64 - buffer.count, bytes.count)
            buffer += bytes[0..<take]
            i = take
            if buffer.count == 64 {
                buffer.withUnsafeBytes { compress($0.baseAddress!, blocks: 1) }
                buffer.removeAll(keepingCapacity: true)
            }
        }
        let whole = (bytes.count - i) / 64
        if whole > 0 {
            compress(bytes.baseAddress! + i, blocks: whole)
            i += 64 * whole
        }
        if i < bytes.count { buffer += bytes[i...] }
    }

    public mutating func update<D: DataProtocol>(_ data: D) {
        let bytes = Array(data)
        bytes.withUnsafeBytes { update($0) }
    }

    public mutating func finalize() -> String {
        var tail = buffer
        tail.append(0x80)
        while tail.count % 64 != 56 { tail.append(0) }
        let bits = length &* 8
        for s in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bits >> UInt64(s))) }
        tail.withUnsafeBytes { t in
            compress(t.baseAddress!, blocks: t.count / 64)
        }
        return h.map { String(format: "%08x", $0) }.joined()
    }

    /// FIPS 180-4's compression of `blocks` whole blocks (CMambaKernels/sha256.c).
    private mutating func compress(_ p: UnsafeRawPointer, blocks: Int) {
        let portable = self.portable
        h.withUnsafeMutableBufferPointer { mq_sha256_blocks($0.baseAddress!, p.assumingMemoryBound(to: UInt8.self), blocks, portable ? 1 : 0) }
    }

    /// The hex digest of the files' bytes concatenated in the given order.
    public static func hex(ofFiles paths: [String]) throws -> String {
        var hasher = SHA256()
        for path in paths {
            // In 64 MB slices, each released after it is hashed: hashing a 14 GB checkpoint must
            // not leave 14 GB of its mapping resident.
            let file = try MappedFile(path: path)
            let slice = 64 << 20
            var start = 0
            while start < file.bytes.count {
                let part = UnsafeRawBufferPointer(rebasing: file.bytes[start..<min(file.bytes.count, start + slice)])
                hasher.update(part)
                madvise(UnsafeMutableRawPointer(mutating: part.baseAddress!), part.count, MADV_DONTNEED)
                start += slice
            }
        }
        return hasher.finalize()
    }

    public static func hex<D: DataProtocol>(of data: D) -> String {
        var hasher = SHA256()
        hasher.update(data)
        return hasher.finalize()
    }
}

