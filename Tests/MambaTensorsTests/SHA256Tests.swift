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
