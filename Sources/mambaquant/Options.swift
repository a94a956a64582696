import ArgumentParser
import Foundation
import MambaModel
import MambaEvaluation
import MambaQuantization
import MambaTensors

extension QuantizedRuntime: ExpressibleByArgument {}
extension QuantizationMethod: ExpressibleByArgument {}
extension ActivationClip: ExpressibleByArgument {}
extension QuantizationProfile: ExpressibleByArgument {}
extension WeightRounding: ExpressibleByArgument {}
extension ScanScales: ExpressibleByArgument {}

extension ActivationScaling: ExpressibleByArgument {
    public init?(argument: String) { self.init(name: argument) }
    public static var allValueStrings: [String] { ["static", "dynamic", "block"] }
}

/// How a command-line word becomes a value: an enum's own case names (the one parser each option
/// of that type uses), or a throwing parser whose message says what is wrong (`--bits w3a8`).
enum ArgumentParsing {
    static func value<T: ExpressibleByArgument>(_ text: String) throws -> T {
        guard let v = T(argument: text) else {
            throw ValidationError("\"\(text)\" is not one of \(T.allValueStrings.joined(separator: ", "))")
        }
        return v
    }

    /// Comma-separated values, each parsed by `parse`; an empty list is refused.
    static func list<T>(_ parse: @escaping (String) throws -> T) -> (String) throws -> [T] {
        { text in
            let items = try text.split(separator: ",").map { try parse($0.trimmingCharacters(in: .whitespaces)) }
            guard !items.isEmpty else { throw ValidationError("the list is empty") }
            return items
        }
    }

    static func bits(_ text: String) throws -> BitWidths { try BitWidths(parsing: text) }

    /// A whole number in 1...limit.
    static func positive(atMost limit: Int) -> (String) throws -> Int {
        { text in
            guard let v = Int(text), v >= 1, v <= limit else { throw ValidationError("\"\(text)\" is not an integer in 1...\(limit)") }
            return v
        }
    }
}

/// `--model`, on the commands that default to the bundled model.
struct ModelOptions: ParsableArguments {
    @Option(help: "Checkpoint directory (default: the bundled model named by calibration/manifest.json).")
    var model: String?

    func directory() throws -> String { try model ?? CorpusManifest.bundled(for: "--model").defaultModel }
}

/// `--data`, on the commands that default to a split of the bundled corpus.
struct DataOptions: ParsableArguments {
    @Option(help: "Text file (repeatable; default: the bundled corpus's split for this command, named in calibration/manifest.json).")
    var data: [String] = []

    func files(splits: [String]) throws -> [String] {
        data.isEmpty ? try splits.flatMap(CorpusManifest.bundled(for: "--data").files) : data
    }
}

/// `--json`, on the commands that print a report.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON.")
    var json = false

    /// Pretty, key-sorted JSON on stdout.
    func printJSON(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}

extension CorpusManifest {
    /// The bundled manifest, or a refusal saying which flag to give instead.
    static func bundled(for flag: String) throws -> CorpusManifest {
        guard FileManager.default.fileExists(atPath: defaultPath) else {
            throw MambaError(.missingFile, "no \(defaultPath) here: give \(flag) (or run from the project directory)")
        }
        return try CorpusManifest()
    }
}

/// `--threads`, on every command (docs/DESIGN.md section 5).
struct RuntimeOptions: ParsableArguments {
    @Option(help: "Threads for OpenBLAS and mambaquant's own loops (default: all cores).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    /// The budget, capped at the cores this process may run on: more threads than cores only
    /// contend (and a million of them hung calibrate and quantize).
    var parallelism: Parallelism {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        if let threads, threads > cores {
            printError("note: --threads \(threads) is more than the \(cores) cores here; using \(cores)")
            return Parallelism(threads: cores)
        }
        return Parallelism(threads: threads)
    }
}

/// `--kernels`, on the commands that run a quantized model.
struct KernelOptions: ParsableArguments {
    @Option(help: "Kernels of quantized models: int8 (int8 GEMMs) or reference (quantize-dequantize in float32).")
    var kernels: QuantizedRuntime = .int8
}

/// Reads the whole of a text file, or says which file is missing.
/// Prints to stderr (progress and summaries; stdout is for results).
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Comma-separated token ids.
func parseTokenList(_ text: String) throws -> [Int] {
    try text.split(separator: ",").map { part in
        guard let id = Int(part.trimmingCharacters(in: .whitespaces)) else {
            throw MambaError(.badInput, "--tokens must be comma-separated integers, found \"\(part)\"")
        }
        return id
    }
}


/// How a folder of PNG/JPEG files becomes a Vision Mamba's input, over the model's config.
struct ImageOptions: ParsableArguments {
    @Option(help: "Per-channel mean for image folders, comma-separated (default: config image_mean; ImageNet's for 3 channels).")
    var imageMean: String?
    @Option(help: "Per-channel std for image folders (default: config image_std; ImageNet's for 3 channels).")
    var imageStd: String?
    @Option(help: "Image folders: resize the shorter side to size / ratio, then crop the centre (default: config eval_crop_ratio, else 0.875).")
    var cropRatio: Double?

    func validate() throws {
        if let cropRatio, !(cropRatio > 0 && cropRatio.isFinite) { throw ValidationError("--crop-ratio must be positive, got \(cropRatio)") }
        _ = try values(imageMean, "--image-mean", positive: false)
        _ = try values(imageStd, "--image-std", positive: true)
    }

    private func values(_ text: String?, _ flag: String, positive: Bool) throws -> [Float]? {
        guard let text else { return nil }
        let items = text.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
        guard !items.isEmpty, items.allSatisfy({ $0 != nil && $0!.isFinite && (!positive || $0! > 0) }) else {
            throw ValidationError("\(flag) must be comma-separated finite\(positive ? " positive" : "") numbers, got \"\(text)\"")
        }
        return items.map { $0! }
    }

    /// The model's transform with what the command line overrides (nil: nothing given).
    func preprocess(over model: ImagePreprocess) throws -> ImagePreprocess? {
        guard imageMean != nil || imageStd != nil || cropRatio != nil else { return nil }
        return ImagePreprocess(mean: try values(imageMean, "--image-mean", positive: false) ?? model.mean,
                               std: try values(imageStd, "--image-std", positive: true) ?? model.std, cropRatio: cropRatio ?? model.cropRatio)
    }
}
