import Foundation

/// SHA-256 (FIPS 180-4), for the hashes that tie files together (docs/DESIGN.md section 5: checkpoint
/// sha256 over the weight files in index order, data sha256 over the data files in order). Written
/// here to keep the dependency list short; tested against the FIPS vectors and Python's hashlib.
public struct SHA256: Sendable {
    private var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0

    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        length &+= UInt64(bytes.count)
        var i = 0
        if !buffer.isEmpty {
            let take = min(64 - buffer.count, bytes.count)
            buffer += bytes[0..<take]
            i = take
            if buffer.count == 64 {
                buffer.withUnsafeBytes { compress($0.baseAddress!) }
                buffer.removeAll(keepingCapacity: true)
            }
        }
        while i + 64 <= bytes.count {
            compress(bytes.baseAddress! + i)
            i += 64
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
            for off in stride(from: 0, to: t.count, by: 64) { compress(t.baseAddress! + off) }
        }
        return h.map { String(format: "%08x", $0) }.joined()
    }

    private mutating func compress(_ p: UnsafeRawPointer) {
        var w = [UInt32](repeating: 0, count: 64)
        for t in 0..<16 {
            w[t] = UInt32(p.load(fromByteOffset: 4 * t, as: UInt8.self)) << 24 | UInt32(p.load(fromByteOffset: 4 * t + 1, as: UInt8.self)) << 16
                | UInt32(p.load(fromByteOffset: 4 * t + 2, as: UInt8.self)) << 8 | UInt32(p.load(fromByteOffset: 4 * t + 3, as: UInt8.self))
        }
        for t in 16..<64 {
            let s0 = w[t - 15].rotateRight(7) ^ w[t - 15].rotateRight(18) ^ (w[t - 15] >> 3)
            let s1 = w[t - 2].rotateRight(17) ^ w[t - 2].rotateRight(19) ^ (w[t - 2] >> 10)
            w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
        }
        var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
        for t in 0..<64 {
            let s1 = e.rotateRight(6) ^ e.rotateRight(11) ^ e.rotateRight(25)
            let ch = (e & f) ^ (~e & g)
            let t1 = hh &+ s1 &+ ch &+ Self.k[t] &+ w[t]
            let s0 = a.rotateRight(2) ^ a.rotateRight(13) ^ a.rotateRight(22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ maj
            (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
        }
        h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
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

private extension UInt32 {
    func rotateRight(_ n: UInt32) -> UInt32 { (self >> n) | (self << (32 - n)) }
}
