import Foundation
import MambaTensors

/// Runs the built `mambaquant` binary (the one `swift build --build-tests` put beside the test bundle).
public struct CLIResult {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

public enum CLI {
    public static let binary: String = {
        if let env = ProcessInfo.processInfo.environment["MAMBAQUANT_BIN"] { return env }
        var dir = Bundle.main.bundleURL
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent("mambaquant").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return Bundle.main.bundleURL.appendingPathComponent("mambaquant").path
    }()

    @discardableResult
    public static func run(_ arguments: [String]) throws -> CLIResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = arguments
        // The child runs this process's OpenBLAS kernels. Where OpenBLAS chose a weak core the
        // command re-executes itself with a better one (MambaTensors/BLASCore.swift: Debian's
        // OpenBLAS runs "Prescott" on an Emerald Rapids Xeon), whose sgemm rounds differently, and
        // a test that compares a command's floats with the same work done in this process failed
        // there in the last bits.
        var environment = ProcessInfo.processInfo.environment
        if environment["OPENBLAS_CORETYPE"] == nil { environment["OPENBLAS_CORETYPE"] = BLASCore.current }
        p.environment = environment
        // Files rather than pipes: a chatty child can never block on a full pipe.
        let base = NSTemporaryDirectory() + "/mambaquant-cli-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: base + ".out", contents: nil)
        _ = FileManager.default.createFile(atPath: base + ".err", contents: nil)
        defer { for s in [".out", ".err"] { try? FileManager.default.removeItem(atPath: base + s) } }
        p.standardOutput = FileHandle(forWritingAtPath: base + ".out")
        p.standardError = FileHandle(forWritingAtPath: base + ".err")
        try p.run()
        p.waitUntilExit()
        let outData = FileManager.default.contents(atPath: base + ".out") ?? Data()
        let errData = FileManager.default.contents(atPath: base + ".err") ?? Data()
        return CLIResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData, as: UTF8.self))
    }
}
