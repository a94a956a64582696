import Foundation
import MambaTensors
import TestSupport
import XCTest

final class MappedFileTests: XCTestCase {
    static let childVariable = "MQ_SIGBUS_CHILD"

    /// A mapped input truncated while it is read raises SIGBUS; the tool names the file in one line
    /// and exits 1 instead of dumping core. The fault runs in a child (this test binary, this test,
    /// with the path in the environment), since it ends the process.
    func testTruncationWhileMappedNamesTheFile() throws {
        if let path = ProcessInfo.processInfo.environment[Self.childVariable] {
            let f = try MappedFile(path: path)
            XCTAssertEqual(truncate(path, 0), 0)
            var sum: UInt8 = 0
            for i in stride(from: 0, to: f.bytes.count, by: 4096) { sum &+= f.bytes[i] }
            XCTFail("read a truncated mapping without a bus error (\(sum))")
            return
        }
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/weights.safetensors"
        _ = FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: 1 << 16))
        let child = Process()
        child.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        child.arguments = ["MambaTensorsTests.MappedFileTests/testTruncationWhileMappedNamesTheFile"]
        child.environment = ProcessInfo.processInfo.environment.merging([Self.childVariable: path]) { $1 }
        let stderr = Pipe()
        child.standardError = stderr
        child.standardOutput = FileHandle.nullDevice
        try child.run()
        let message = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        child.waitUntilExit()
        XCTAssertEqual(child.terminationReason, .exit, message)
        XCTAssertEqual(child.terminationStatus, 1, message)
        XCTAssertTrue(message.contains("Error: \(path) changed or was truncated while it was being read"), message)
    }
}
