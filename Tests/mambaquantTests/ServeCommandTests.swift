import Foundation
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `mambaquant serve` as a process: refusals, a request over a real socket, and SIGTERM letting a
/// request in flight finish before the process exits 0.
final class ServeCommandTests: XCTestCase {
    func testRefusesACheckpointWithoutTokenizerAndBadOptions() throws {
        let r = try CLI.run(["serve", "--model", Fixtures.model("tiny-mamba2"), "--port", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("tokenizer.json"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        let port = try CLI.run(["serve", "--model", Fixtures.packageRoot + "/models/bard-mamba", "--port", "70000"])
        XCTAssertNotEqual(port.status, 0)
        XCTAssertTrue(port.stderr.contains("--port"), port.stderr)
        let concurrency = try CLI.run(["serve", "--model", Fixtures.packageRoot + "/models/bard-mamba", "--max-concurrency", "0"])
        XCTAssertTrue(concurrency.stderr.contains("--max-concurrency"), concurrency.stderr)
    }

    func testServesOverASocketAndDrainsOnSIGTERM() throws {
        let errPath = NSTemporaryDirectory() + "/mambaquant-serve-\(UUID().uuidString).err"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = ["serve", "--model", Fixtures.packageRoot + "/models/bard-mamba", "--port", "0", "--threads", "1"]
        p.standardError = FileHandle(forWritingAtPath: errPath)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }

        // The port it chose, from its start line.
        var port: Int?
        let deadline = Date().addingTimeInterval(60)
        while port == nil && Date() < deadline && p.isRunning {
            let err = String(decoding: FileManager.default.contents(atPath: errPath) ?? Data(), as: UTF8.self)
            if let r = err.range(of: #"http://127\.0\.0\.1:(\d+)/v1"#, options: .regularExpression) {
                port = Int(err[r].dropFirst("http://127.0.0.1:".count).dropLast(3))
            } else {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        let p0 = try XCTUnwrap(port, "no start line: \(String(decoding: FileManager.default.contents(atPath: errPath) ?? Data(), as: UTF8.self))")

        let health = try httpExchange(port: p0, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        XCTAssertTrue(health.hasPrefix("HTTP/1.1 200"), health)
        XCTAssertTrue(health.contains(#"{"status":"ok"}"#), health)

        // A streamed request in flight when SIGTERM arrives still ends with [DONE].
        let body = #"{"prompt": "ROMEO:", "max_tokens": 200, "stream": true}"#
        let fd = try connect(port: p0)
        defer { close(fd) }
        try send(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
        var buffer = [UInt8](repeating: 0, count: 256)
        XCTAssertGreaterThan(read(fd, &buffer, buffer.count), 0, "no answer before SIGTERM")
        p.terminate()   // SIGTERM
        let rest = readAll(fd)
        XCTAssertTrue(rest.hasSuffix("data: [DONE]\n\n") || rest.contains("data: [DONE]"), "the stream was cut: \(rest.suffix(200))")
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
    }
}

/// One HTTP/1.1 exchange over a plain socket (the test needs no HTTP client library).
private func httpExchange(port: Int, _ request: String) throws -> String {
    let fd = try connect(port: port)
    defer { close(fd) }
    try send(fd, request)
    return readAll(fd)
}

private func connect(port: Int) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard ok == 0 else { close(fd); throw POSIXError(.ECONNREFUSED) }
    return fd
}

private func send(_ fd: Int32, _ text: String) throws {
    let bytes = Array(text.utf8)
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { throw POSIXError(.EPIPE) }
        sent += n
    }
}

private func readAll(_ fd: Int32) -> String {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        out += buffer[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}
