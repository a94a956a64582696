import CMambaKernels
import Foundation
import MambaTensors
import TestSupport
import XCTest

final class SHA256Tests: XCTestCase {
    func testFIPSVectors() {
        XCTAssertEqual(SHA256.hex(of: Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(of: Data("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex(of: Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    /// The SHA-extension path (where this CPU has it) against the portable loop on random data of
    /// odd lengths, fed in uneven pieces, and both against the FIPS vector of a million "a"s.
    func testExtensionPathEqualsPortable() {
        var rng = SeededRandom(seed: freshSeed())
        for n in [0, 1, 55, 56, 63, 64, 65, 127, 1000, 4096 + 17, 100_003] {
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var fast = SHA256(), portable = SHA256(portable: true)
            var at = 0
            while at < n {
                let piece = min(n - at, Int(rng.next() % 300) + 1)
                fast.update(bytes[at..<(at + piece)])
                portable.update(bytes[at..<(at + piece)])
                at += piece
            }
            XCTAssertEqual(fast.finalize(), portable.finalize(), "\(n) bytes (SHA extensions: \(mq_has_sha_ni()))")
        }
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        for portable in [false, true] {
            var h = SHA256(portable: portable)
            h.update(million)
            XCTAssertEqual(h.finalize(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        }
    }

    func testStreamingInPiecesEqualsOneShot() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 31 + 7) }
        var h = SHA256()
        for chunk in stride(from: 0, to: bytes.count, by: 37) { h.update(bytes[chunk..<min(bytes.count, chunk + 37)]) }
        XCTAssertEqual(h.finalize(), SHA256.hex(of: bytes))
    }

    func testMatchesCommittedHashOfCorpusFile() throws {
        // calibration/README.md lists sha256s made by Python's hashlib.
        let path = Fixtures.packageRoot + "/calibration/shakespeare-valid.txt"
        XCTAssertEqual(try SHA256.hex(ofFiles: [path]), "7c417da948f6c764207ae4b0a6745048e95a701f709b5785e7e1edb16d847dee")
    }
}
