import Foundation
@_exported import MambaModel
@_exported import MambaTensors

/// Committed fixtures (Tests/Fixtures, made by scripts/reference/make_fixtures.py with transformers).
public enum Fixtures {
    public static let root: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures").path
    }()

    public static func model(_ name: String) -> String { root + "/models/" + name }
    public static func bad(_ name: String) -> String { root + "/bad/" + name }
    public static var tokenizers: String { root + "/tokenizers" }

    /// The package's top directory (for the bundled model and corpus).
    public static let packageRoot: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }()
}

/// A fresh temporary directory, removed by the caller with `removeItem`.
public func makeTemporaryDirectory(_ label: String = "mambaquant-test") throws -> String {
    let path = NSTemporaryDirectory() + "/\(label)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Test helpers over the library's random init.
public func randomWeights(_ c: MambaConfig, seed: UInt64) -> MambaWeights { MambaWeights.random(c, seed: seed) }

public func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "sizes differ: \(a.count) vs \(b.count)")
    var m: Float = 0
    for i in a.indices { m = max(m, abs(a[i] - b[i])) }
    return m
}


/// A safetensors file's header JSON without its trailing padding spaces, and its data bytes.
public func safeTensorsParts(_ path: String) throws -> (header: [UInt8], data: [UInt8]) {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    let length = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    var header = Array(bytes[8..<(8 + length)])
    while header.last == 0x20 { header.removeLast() }
    return (header, Array(bytes[(8 + length)...]))
}

/// Whether two safetensors files hold the same header (apart from its padding) and the same data.
public func sameTensorFile(_ a: String, _ b: String) throws -> Bool {
    let (x, y) = (try safeTensorsParts(a), try safeTensorsParts(b))
    return x.header == y.header && x.data == y.data
}
