import Foundation
import MambaCalibration
import MambaModel
import MambaQuantization
import MambaTensors

// One libFuzzer entry point for the parsers of every input a user hands the tool; MQ_FUZZ_TARGET
// picks the parser. A thrown MambaError is the expected outcome for garbage; a trap, a crash, a
// sanitizer report or a hang is a finding. SwiftPM links an executable's own main, so main hands
// libFuzzer the arguments and the callback (LLVMFuzzerRunDriver, libFuzzer's documented entry for
// programs that keep their main).

enum Target: String, CaseIterable {
    case safetensors, config, tokenizer, stats, quantizedConfig = "quantized-config", image
}

let target: Target = {
    guard let name = ProcessInfo.processInfo.environment["MQ_FUZZ_TARGET"], let t = Target(rawValue: name) else {
        fatalError("set MQ_FUZZ_TARGET to one of \(Target.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return t
}()

/// A scratch directory per process; inputs that must be files are written there.
let scratch: String = {
    let dir = NSTemporaryDirectory() + "mambaquant-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    // The quantized-config target runs against the committed quantized fixtures' tensors (a
    // colon-separated list: formats 1 and 3, int4 nibbles and groups, a tied table, kept-float
    // modules, Mamba-2 with dynamic scales, a state-spaces config), each input against every one.
    for (i, fixture) in quantizedFixtures.enumerated() {
        try? FileManager.default.removeItem(atPath: dir + "/q\(i)")
        try? FileManager.default.copyItem(atPath: fixture, toPath: dir + "/q\(i)")
    }
    return dir
}()

let quantizedFixtures = (ProcessInfo.processInfo.environment["MQ_FUZZ_QUANTIZED_FIXTURE"] ?? "").split(separator: ":").map(String.init)

func run(_ data: Data) {
    switch target {
    case .safetensors:
        let path = scratch + "/input.safetensors"
        try? data.write(to: URL(fileURLWithPath: path))
        if let f = try? SafeTensorsFile(path: path) {
            for name in f.names { _ = try? f.view(name).floats() }
        }
    case .config:
        if let c = try? MambaConfig.parse(data, source: "config.json") {
            _ = c.parameterCount
            _ = c.hfJSON()
        }
    case .tokenizer:
        if let t = try? Tokenizer(data: data, source: "tokenizer.json") {
            let ids = t.encode("Hello, world! 日本語 \u{0}\t")
            _ = t.decode(ids)
        }
    case .stats:
        let path = scratch + "/stats.safetensors"
        try? data.write(to: URL(fileURLWithPath: path))
        _ = try? StatsFile.read(path: path)
    case .image:
        // A PNG or JPEG file (libpng and libjpeg behind the C shim's setjmp), then the resize and crop.
        let path = scratch + "/input.img"
        try? data.write(to: URL(fileURLWithPath: path))
        if let p = try? Pixels.decode(path: path, maxPixels: 1 << 20) {
            _ = p.converted(toChannels: 1).resizedBicubic(width: 7, height: 5).centerCropped(width: 6, height: 9)
        }
    case .quantizedConfig:
        for i in quantizedFixtures.indices {
            try? data.write(to: URL(fileURLWithPath: scratch + "/q\(i)/config.json"))
            _ = try? QuantizedModel.load(directory: scratch + "/q\(i)")
        }
    }
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@main
struct Fuzz {
    static func main() {
        _ = target
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { bytes, count in
            run(bytes.map { Data(bytes: $0, count: count) } ?? Data())
            return 0
        })
    }
}
