import Foundation
import MambaTensors
import TestSupport
import XCTest

final class SafeTensorsTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = try makeTemporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func testRoundTripOfEveryDtype() throws {
        let t = randomTensor([3, 5], seed: 11)
        var w = SafeTensorsWriter(metadata: ["k": "v \"quoted\"", "format": "pt"])
        w.add("f32", t)
        w.add("f16", t, as: .f16)
        w.add("bf16", t, as: .bf16)
        w.add("f64", shape: [2], doubles: [1.5, -2.25])
        w.add("i8", shape: [3], int8s: [-127, 0, 127])
        w.add("i32", shape: [2], int32s: [-5, 1 << 30])
        w.add("i64", shape: [], int64s: [1 << 40])
        let path = dir + "/a.safetensors"
        try w.write(to: path)

        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(f.metadata, ["k": "v \"quoted\"", "format": "pt"])
        XCTAssertEqual(f.names, ["f32", "f16", "bf16", "f64", "i8", "i32", "i64"])
        XCTAssertEqual(try f.view("f32").floats(), t.storage)
        XCTAssertEqual(try f.view("f32").shape, [3, 5])
        XCTAssertLessThan(maxAbsDifference(try f.view("f16").floats(), t.storage), 2e-3 * 4)
        XCTAssertLessThan(maxAbsDifference(try f.view("bf16").floats(), t.storage), 2e-2 * 4)
        XCTAssertEqual(try f.view("f64").doubles(), [1.5, -2.25])
        XCTAssertEqual(try f.view("i8").int8s(), [-127, 0, 127])
        XCTAssertEqual(try f.view("i32").integers(), [-5, 1 << 30])
        XCTAssertEqual(try f.view("i64").integers(), [1 << 40])
        XCTAssertEqual(try f.view("i64").shape, [])
        XCTAssertThrowsError(try f.view("i8").floats())
        XCTAssertThrowsError(try f.view("nope"))
    }

    /// A big 16-bit tensor is widened by chunks over OpenBLAS's threads: the same floats on 1, 2
    /// and 3 threads (141,003 values: enough for two chunks), and what a row read alone gives.
    func testWideningIsTheSameOnAnyThreadCount() throws {
        let t = randomTensor([3, 47_001], seed: freshSeed())
        var w = SafeTensorsWriter(metadata: [:])
        w.add("f16", t, as: .f16)
        w.add("bf16", t, as: .bf16)
        let path = dir + "/wide.safetensors"
        try w.write(to: path)
        let f = try SafeTensorsFile(path: path)
        for name in ["f16", "bf16"] {
            let one = try BLAS.withThreads(1) { try f.view(name).floats() }
            XCTAssertLessThan(maxAbsDifference(one, t.storage), 2e-2 * 4, name)
            // The last row alone (47,001 values: one chunk) reads the same floats.
            XCTAssertEqual(try BLAS.withThreads(2) { try f.view(name).slice(2).floats() }, Array(one[94_002...]), name)
            for threads in [2, 3] { XCTAssertEqual(try BLAS.withThreads(threads) { try f.view(name).floats() }, one, "\(name) on \(threads) threads") }
        }
    }

    func testBF16RoundsToNearestEven() {
        XCTAssertEqual(floatToBF16(1.0), 0x3F80)
        // 1 + 2^-8 lies exactly halfway between two bf16 values: ties go to the even one (1.0).
        XCTAssertEqual(floatToBF16(1.0 + 1.0 / 256), 0x3F80)
        XCTAssertEqual(floatToBF16(1.0 + 3.0 / 256), 0x3F82)
        XCTAssertEqual(bf16ToFloat(0xC040), -3.0)
    }

    func testSameInputGivesIdenticalBytes() throws {
        func make(_ name: String) throws -> Data {
            var w = SafeTensorsWriter(metadata: ["b": "2", "a": "1"])
            w.add("x", randomTensor([4, 4], seed: 3))
            try w.write(to: dir + "/" + name)
            return FileManager.default.contents(atPath: dir + "/" + name)!
        }
        XCTAssertEqual(try make("1.safetensors"), try make("2.safetensors"))
    }

    func testHeaderIsPaddedToEightBytes() throws {
        var w = SafeTensorsWriter()
        w.add("odd_name_x", randomTensor([1], seed: 1))
        let path = dir + "/p.safetensors"
        try w.write(to: path)
        let data = FileManager.default.contents(atPath: path)!
        let n = data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(n % 8, 0)
        XCTAssertEqual(Int(n) + 8 + 4, data.count)
    }

    func testTruncatedFileIsRefusedWithItsName() throws {
        var w = SafeTensorsWriter()
        w.add("weight", randomTensor([16, 16], seed: 5))
        let path = dir + "/t.safetensors"
        try w.write(to: path)
        let data = FileManager.default.contents(atPath: path)!
        _ = FileManager.default.createFile(atPath: path, contents: data.prefix(data.count - 100))
        XCTAssertThrowsError(try SafeTensorsFile(path: path)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("weight") && message.contains("truncated"), message)
        }
    }

    func testBadHeaderLengthAndGarbage() throws {
        let path = dir + "/g.safetensors"
        var bytes = [UInt8](repeating: 0, count: 16)
        bytes[0] = 0xFF; bytes[1] = 0xFF
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        XCTAssertThrowsError(try SafeTensorsFile(path: path)) { XCTAssertTrue("\($0)".contains("header length"), "\($0)") }
        _ = FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3]))
        XCTAssertThrowsError(try SafeTensorsFile(path: path)) { XCTAssertTrue("\($0)".contains("too short"), "\($0)") }
        var json = Array("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}".utf8)
        var header = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) }
        header += json
        json = header + [0, 0, 0, 0]
        _ = FileManager.default.createFile(atPath: path, contents: Data(json))
        XCTAssertThrowsError(try SafeTensorsFile(path: path)) { XCTAssertTrue("\($0)".contains("needs 8 bytes"), "\($0)") }
        XCTAssertThrowsError(try SafeTensorsFile(path: dir + "/missing.safetensors")) { XCTAssertTrue("\($0)".contains("missing.safetensors"), "\($0)") }
    }

    func testAtomicWriteLeavesNoTemporaryFile() throws {
        var w = SafeTensorsWriter()
        w.add("x", randomTensor([2], seed: 9))
        try w.write(to: dir + "/x.safetensors")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["x.safetensors"])
        XCTAssertThrowsError(try w.write(to: dir + "/no/such/dir/x.safetensors"))
    }

    /// Forged headers: an element count that overflows, a fractional dimension or offset, a huge
    /// tensor name and a name with a newline are refused in one line of bounded length.
    func testForgedHeadersAreRefusedInOneShortLine() throws {
        let path = dir + "/forged.safetensors"
        func write(_ header: String, data: Int = 16) {
            let json = Array(header.utf8)
            let bytes = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json + [UInt8](repeating: 0, count: data)
            _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        }
        let longName = String(repeating: "w", count: 2_000_000)
        let cases: [(String, String)] = [
            (#"{"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,16]}}"#, "more bytes than any file holds"),
            (#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#, "more bytes than any file holds"),
            (#"{"a":{"dtype":"F32","shape":[2.5,2],"data_offsets":[0,16]}}"#, "non-negative integer"),
            (#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16.5]}}"#, "non-negative integer"),
            (#"{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#, "non-negative integer"),
            ("{\"\(longName)\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", "w…w"),   // the name cut to MambaError.maxWordLength
            (#"{"a\nb":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#, #"a\nb"#),
        ]
        for (header, needle) in cases {
            write(header)
            XCTAssertThrowsError(try SafeTensorsFile(path: path), String(header.prefix(80))) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains(needle), String(message.prefix(300)))
                XCTAssertFalse(message.contains("\n"), "one line")
                XCTAssertLessThanOrEqual(message.count, MambaError.maxLength + 100)
            }
        }
    }

    /// A FIFO (or another non-regular file) given as a checkpoint, shard or stats file is refused at
    /// once instead of blocking on open until a writer appears.
    func testFIFOIsRefusedWithoutBlocking() throws {
        let fifo = dir + "/model.safetensors"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let started = Date()
        XCTAssertThrowsError(try SafeTensorsFile(path: fifo)) { XCTAssertTrue("\($0)".contains("is a FIFO"), "\($0)") }
        XCTAssertThrowsError(try contentsOfRegularFile(atPath: fifo)) { XCTAssertTrue("\($0)".contains("is a FIFO"), "\($0)") }
        XCTAssertThrowsError(try SafeTensorsFile(path: "/dev/null")) { XCTAssertTrue("\($0)".contains("is a device"), "\($0)") }
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        XCTAssertNil(try contentsOfRegularFile(atPath: dir + "/absent.json"))
    }

    /// A header length one short still parses when the header ends in padding spaces: the data
    /// would shift by a byte. Unindexed bytes are refused instead.
    func testHeaderLengthOffByOneIsRefused() throws {
        var w = SafeTensorsWriter()
        w.add("a", randomTensor([3], seed: 1))      // a header that needs padding
        let path = dir + "/o.safetensors"
        try w.write(to: path)
        var data = try XCTUnwrap(FileManager.default.contents(atPath: path))
        XCTAssertNoThrow(try SafeTensorsFile(path: path))
        let n = data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(data[8 + Int(n) - 1], UInt8(ascii: " "), "the test needs a padded header")
        withUnsafeBytes(of: (n - 1).littleEndian) { data.replaceSubrange(0..<8, with: $0) }
        _ = FileManager.default.createFile(atPath: path, contents: data)
        XCTAssertThrowsError(try SafeTensorsFile(path: path)) { XCTAssertTrue("\($0)".contains("belong to no tensor"), "\($0)") }
        data.append(0)
        withUnsafeBytes(of: n.littleEndian) { data.replaceSubrange(0..<8, with: $0) }
        _ = FileManager.default.createFile(atPath: path, contents: data)
        XCTAssertThrowsError(try SafeTensorsFile(path: path)) { XCTAssertTrue("\($0)".contains("after the last tensor"), "\($0)") }
    }
}
