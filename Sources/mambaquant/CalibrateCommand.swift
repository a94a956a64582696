import ArgumentParser
import Foundation
import MambaCalibration
import MambaEvaluation
import MambaModel
import MambaTensors

struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Run calibration text through a float model and save activation statistics at every quantization site.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var dataOptions: DataOptions   // default: the calib split
    @Option(help: "Token windows to draw.")
    var samples = 128
    @Option(help: "Tokens per window.")
    var seqLen = 512
    @Option(help: "Seed of the window draw.")
    var seed: UInt64 = 0
    @Option(help: "Calibration images of a Vision Mamba (safetensors images [n, C, H, W], or a folder of PNG/JPEG files; default: the manifest's image calib split); --samples takes the first n.")
    var images: String?
    @OptionGroup var imageOptions: ImageOptions
    @Option(help: "Output stats file (safetensors).")
    var out: String
    @Flag(help: "No progress bar.")
    var quiet = false
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if samples < 1 { throw ValidationError("--samples must be at least 1, got \(samples)") }
        if seqLen < 1 { throw ValidationError("--seq-len must be at least 1, got \(seqLen)") }
    }

    func run() throws {
        SystemMemory.keepFreedMemoryForReuse()
        let par = runtime.parallelism
        let modelDir = try modelOptions.directory()
        if try MambaConfig.load(directory: modelDir).vision != nil { return try runVision(modelDir, par) }
        if images != nil { throw MambaError(.badInput, "--images calibrates a Vision Mamba; \(modelDir) is a language model: give text with --data") }
        let dataFiles = try dataOptions.files(splits: ["calib"])
        try refuseOverwritingInput(out, inputs: [modelDir] + dataFiles)
        let outDir = URL(fileURLWithPath: out).deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: outDir) else {
            throw MambaError(.missingFile, "cannot write \(out): directory \(outDir) does not exist")
        }

        // Memory-mapped; each layer is widened to float32 only while the windows pass through it.
        let weights = try CheckpointWeights(directory: modelDir)
        let bar = ProgressBar("calibrate", unit: "tok", unitsPerStep: Double(seqLen) / Double(weights.config.numLayers), quiet: quiet)
        var file: StatsFile!
        let seconds = try measureSeconds {
            file = try calibrateStats(weights, modelDirectory: modelDir, dataFiles: dataFiles, samples: samples, seqLen: seqLen, seed: seed,
                                      parallelism: par, progress: bar.update)
        }
        try file.write(to: out)
        let (stats, windows) = (file.stats, file.windows)
        printError(String(format: "calibrated %@ on %d x %d tokens (%d sites) in %.1f s (%.0f tokens/s, %d threads) -> %@",
                          modelDir, samples, seqLen, stats.sites.count, seconds, Double(windows.tokenCount) / seconds, par.threads, out))
    }

    /// A Vision Mamba: the first --samples images of --images.
    func runVision(_ modelDir: String, _ par: Parallelism) throws {
        // --data names the images too (one safetensors file or folder), as it names text for a language model.
        let data = dataOptions.data
        var isFolder: ObjCBool = false
        guard data.isEmpty || (data.count == 1 && images == nil
                               && (data[0].hasSuffix(".safetensors") || (FileManager.default.fileExists(atPath: data[0], isDirectory: &isFolder) && isFolder.boolValue))) else {
            throw MambaError(.badInput, "\(modelDir) is a Vision Mamba: give its calibration images as one safetensors file or folder with --images (or --data), not text")
        }
        let imageFile = try images ?? data.first ?? CorpusManifest.bundled(for: "--images").imageFiles("calib")[0]
        try checkWritable(out, inputs: [modelDir, imageFile])
        let weights = try CheckpointWeights(directory: modelDir)
        let preprocess = try imageOptions.preprocess(over: weights.config.vision!.preprocess)
        let bar = ProgressBar("calibrate", unit: "image", unitsPerStep: 1 / Double(weights.config.numLayers), quiet: quiet)
        var file: StatsFile!
        let seconds = try measureSeconds {
            file = try calibrateVisionStats(weights, modelDirectory: modelDir, imageFile: imageFile, samples: samples, preprocess: preprocess, parallelism: par, progress: bar.update)
        }
        try file.write(to: out)
        let n = file.images!.shape[0]
        printError(String(format: "calibrated %@ on %d images of %@ (%d sites) in %.1f s (%.1f images/s, %d threads) -> %@",
                          modelDir, n, imageFile, file.stats.sites.count, seconds, Double(n) / seconds, par.threads, out))
    }
}
