import ArgumentParser
import Foundation
import MambaCalibration
import MambaEvaluation
import MambaModel
import MambaQuantization
import MambaTensors

/// compare's report: Markdown tables or JSON.
enum ReportFormat: String, CaseIterable, ExpressibleByArgument {
    case md, json
}

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Float and quantized models on the same text: accuracy, tasks, per-site SQNR, speed and memory.",
        discussion: "With no options: the demo on the bundled model and corpus (all four methods at w8a8, w4a8 and w8a6).")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "A quantized checkpoint of that model (repeatable).")
    var quantized: [String] = []
    @Option(help: "Methods to quantize on the fly, comma-separated (default with no --quantized: rtn,smoothquant,hadamard,mambaquant).",
            transform: ArgumentParsing.list(ArgumentParsing.value))
    var methods: [QuantizationMethod]?
    @Option(help: "Bit widths for --methods, comma-separated (default w8a8,w4a8,w8a6; w8a8 with --budget).",
            transform: ArgumentParsing.list(ArgumentParsing.bits))
    var bits: [BitWidths]?
    @Option(help: "Weight roundings for --methods (comma-separated rtn,gptq; default: each bit width's own, gptq at 4 bits, rtn at 8).",
            transform: ArgumentParsing.list(ArgumentParsing.value))
    var weightRounding: [WeightRounding]?
    @Option(help: "Weight scales per group of this many input columns for --methods (default: one per output channel).")
    var groupSize: Int?
    @Flag(help: "The error budget instead of the plain methods: each site quantized alone, then activation scales, clip, weight groups, kept-float modules and methods one family at a time, for --methods (default mambaquant) at --bits; at 4 bits also each layer's modules alone at 8 bits.")
    var budget = false
    @OptionGroup var dataOptions: DataOptions   // default: the test and ood-test splits
    @Option(help: "Calibration text (repeatable; default: the manifest's calib split).")
    var calibData: [String] = []
    @Option(help: "Test images of a Vision Mamba (safetensors: images [n, C, H, W], labels [n]; or a folder of PNG/JPEG files with labels.csv; default: the manifest's image test split).")
    var images: String?
    @Option(help: "Calibration images of a Vision Mamba (default: the manifest's image calib split).")
    var calibImages: String?
    @Option(help: "Calibration windows (images for a Vision Mamba).")
    var calibSamples = 128
    @Option(help: "Tokens per calibration window.")
    var calibSeqLen = 512
    @Option(help: "Tokens per evaluation window.")
    var seqLen = 512
    @Option(help: "Score at most this many tokens per evaluation file (0: all).")
    var maxTokens = 32768
    @Option(help: "Score each window's positions from this one on, the earlier ones context only (llama-perplexity --kl-divergence scores the second half: 256 with --seq-len 512).")
    var scoreFrom = 0
    @Option(help: "Items per zero-shot task and file.")
    var taskItems = 100
    @Option(help: "Rotation seeds per quantized model: mean and spread are reported.")
    var seeds = 1
    @Option(help: "md or json.")
    var format: ReportFormat = .md
    @Option(help: "Write the report here instead of stdout.")
    var out: String?
    @Option(help: "Also write an SVG: per-layer SQNR per method, Δ bits per byte per model, KL against bits per weight.")
    var plot: String?
    @Option(help: "Another tool's points for the plot's KL against bits per weight: JSON {\"source\", \"points\": [{\"name\", \"bits_per_weight\", \"kl\"}]}.")
    var plotReference: String?
    @Option(help: "Where calibration results are cached.")
    var cacheDir = ".mambaquant-cache"
    @Flag(help: "Skip the speed and memory measurements.")
    var noSpeed = false
    @Flag(help: "No progress bars.")
    var quiet = false
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var kernelOptions: KernelOptions
    @OptionGroup var imageOptions: ImageOptions

    func validate() throws {
        if let groupSize, !(1...QuantizationRecipe.maxGroupSize).contains(groupSize) { throw ValidationError("--group-size must be in 1...\(QuantizationRecipe.maxGroupSize), got \(groupSize)") }
        if seqLen < 2 { throw ValidationError("--seq-len must be at least 2, got \(seqLen)") }
        if seeds < 1 || taskItems < 0 || maxTokens < 0 || calibSamples < 1 || calibSeqLen < 1 {
            throw ValidationError("--seeds, --calib-samples and --calib-seq-len must be at least 1; --task-items and --max-tokens not negative")
        }
        if scoreFrom < 0 || scoreFrom >= seqLen - 1 { throw ValidationError("--score-from must be in 0..<\(seqLen - 1) (the window's last scored position), got \(scoreFrom)") }
        if plotReference != nil && plot == nil { throw ValidationError("--plot-reference needs --plot") }
    }

    func run() throws {
        SystemMemory.keepFreedMemoryForReuse()   // a quantize and runs of both models (SystemMemory.swift)
        let par = runtime.parallelism
        let modelDir = try modelOptions.directory()
        if try MambaConfig.load(directory: modelDir).vision != nil { return try runVision(modelDir, par) }
        let evalFiles = try dataOptions.files(splits: ["test", "ood-test"])
        let calibFiles = calibData.isEmpty ? try CorpusManifest.bundled(for: "--calib-data").files("calib") : calibData
        // Read before the long run, so a bad file is refused at once.
        let reference = try plotReference.map { try ReferencePoints.load(path: $0) }
        for path in [out, plot].compactMap({ $0 }) { try refuseOverwritingInput(path, inputs: [modelDir] + quantized + evalFiles + calibFiles) }
        var setup = ComparisonSetup(modelDirectory: modelDir)
        setup.quantized = quantized
        setup.methods = methods ?? (budget ? [.mambaquant] : quantized.isEmpty ? QuantizationMethod.allCases : [])
        let w8a8 = BitWidths(weight: 8, activation: 8)
        setup.bits = bits ?? (budget ? [w8a8] : [w8a8, BitWidths(weight: 4, activation: 8), BitWidths(weight: 8, activation: 6)])
        if budget {
            // Each variant is its own row; the plain methods are the budget's "method:" rows.
            setup.recipes = budgetRecipes(try MambaConfig.load(directory: modelDir), methods: setup.methods, bits: setup.bits)
            // At 4 bits, also what each module of each layer costs: its row has only it at 8 bits.
            setup.moduleWidthRecipes = setup.methods.flatMap { m in
                setup.bits.filter { $0.weight == 4 }.map { b in
                    ((setup.methods.count > 1 ? m.rawValue + " " : "") + (setup.bits.count > 1 ? "\(b) " : "") + "8 bits alone: ", QuantizationRecipe(method: m, bits: b))
                }
            }
            setup.methods = []
        }
        if let weightRounding { setup.weightRoundings = weightRounding }
        setup.groupSize = groupSize
        setup.seeds = seeds
        (setup.evaluationFiles, setup.calibrationFiles) = (evalFiles, calibFiles)
        (setup.calibrationSamples, setup.calibrationSeqLength) = (calibSamples, calibSeqLen)
        (setup.cacheDirectory, setup.runtime) = (cacheDir, kernelOptions.kernels)
        let (contenders, files, tokenizer) = try setup.prepare(parallelism: par, log: log) { layers in
            ProgressBar("calibrate", unit: "tok", unitsPerStep: Double(calibSeqLen) / Double(layers), quiet: quiet).update
        }

        var options = CompareOptions()
        options.seqLen = seqLen
        options.maxTokens = maxTokens == 0 ? nil : maxTokens
        options.scoreFrom = scoreFrom
        options.taskItems = taskItems
        options.measureSpeed = !noSpeed
        var bar: (label: String, bar: ProgressBar)?
        var report: ComparisonReport!
        let seconds = try measureSeconds {
            report = try runComparison(
                modelName: modelDir, contenders: contenders, files: files, tokenizer: tokenizer, options: options, parallelism: par,
                note: log, progress: { label, done, total in
                    if bar?.label != label { bar = (label, ProgressBar(label, unit: "step", unitsPerStep: 1, quiet: quiet)) }
                    bar!.bar.update(done, total)
                })
        }
        if kernelOptions.kernels == .int8 {
            report.notes.append("Quantized models run int8 GEMMs (\(kernelOptions.kernels.description)) for every quantized linear (blocked where weights have groups or activations block scales) and an integer conv1d where its input scale is static; the SSM recurrence runs in float32 on the quantized (or kept-float) x, dt, B and C.")
        }
        var took = String(format: "compare took %.0f s on %d threads", seconds, par.threads)
        if !setup.methods.isEmpty {
            took += String(format: "; calibration: %d x %d tokens of %@", calibSamples, calibSeqLen,
                           calibFiles.map { ($0 as NSString).lastPathComponent }.joined(separator: ", "))
        }
        report.notes.append(took + ".")
        let text = format == .json ? try report.json() : report.markdown()
        if let out { try writeAtomically(text, to: out) } else { print(text) }
        if let plot { try writeAtomically(ComparisonPlot.svg(report, reference: reference), to: plot) }
        log(String(format: "compared %d models on %d files in %.0f s", contenders.count, files.count, seconds))
    }

    /// A Vision Mamba: each recipe quantized in memory, top-1 on the test images (VisionComparison.swift).
    func runVision(_ modelDir: String, _ par: Parallelism) throws {
        if QuantizedModel.isQuantized(directory: modelDir) {
            throw MambaError(.badInput, "--model \(modelDir) is a quantized checkpoint: give its float source (a Vision Mamba's recipes are quantized in memory)")
        }
        for (flag, given) in [("--quantized", !quantized.isEmpty), ("--data", !dataOptions.data.isEmpty), ("--calib-data", !calibData.isEmpty),
                              ("--seeds", seeds != 1), ("--group-size", groupSize != nil)] where given {
            throw MambaError(.badInput, "\(flag) is not supported for a Vision Mamba yet (\(modelDir)); give images with --images and --calib-images")
        }
        let manifest = { try CorpusManifest.bundled(for: "--images") }
        var setup = VisionComparisonSetup(modelDirectory: modelDir, calibrationImages: try calibImages ?? manifest().imageFiles("calib")[0],
                                          testImages: try images ?? manifest().imageFiles("test")[0])
        if let methods { setup.methods = methods }
        if let bits { setup.bits = bits }
        if budget {
            // As for a language model: each variant a row, for --methods (default mambaquant) at --bits (default w8a8).
            setup.recipes = budgetRecipes(try MambaConfig.load(directory: modelDir), methods: methods ?? [.mambaquant],
                                          bits: bits ?? [BitWidths(weight: 8, activation: 8)])
        }
        if let weightRounding { guard weightRounding.count == 1 else { throw MambaError(.badInput, "give one --weight-rounding for a Vision Mamba") }; setup.weightRounding = weightRounding[0] }
        (setup.calibrationLimit, setup.runtime) = (calibSamples, kernelOptions.kernels)
        setup.preprocess = try imageOptions.preprocess(over: MambaConfig.load(directory: modelDir).vision!.preprocess)
        for path in [out, plot].compactMap({ $0 }) { try refuseOverwritingInput(path, inputs: [modelDir, setup.calibrationImages, setup.testImages]) }
        let reference = try plotReference.map { try ReferencePoints.load(path: $0) }
        var report: VisionComparisonReport!
        let seconds = try measureSeconds { report = try runVisionComparison(setup, parallelism: par, log: log) }
        report.notes.append(String(format: "compare took %.0f s on %d threads.", seconds, par.threads))
        let text = format == .json ? try report.json() : report.markdown()
        if let out { try writeAtomically(text, to: out) } else { print(text) }
        if let plot { try writeAtomically(ComparisonPlot.svg(report, reference: reference), to: plot) }
    }

    func log(_ line: String) { if !quiet { printError(line) } }
}

/// The error budget's variants as named rows for each method and bit width (a row names its method or
/// width only when there are several), for a language model and a Vision Mamba alike.
func budgetRecipes(_ config: MambaConfig, methods: [QuantizationMethod], bits: [BitWidths]) -> [(name: String, recipe: QuantizationRecipe)] {
    methods.flatMap { m in
        bits.flatMap { b in
            ErrorBudget.variants(method: m, bits: b, config: config).map { v in
                (name: (methods.count > 1 ? m.rawValue + " " : "") + (bits.count > 1 ? "\(b) " : "") + v.name, recipe: v.recipe)
            }
        }
    }
}

/// Writes text through a temporary file and a rename, so a reader never sees half a report.
func writeAtomically(_ text: String, to path: String) throws {
    let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
    guard FileManager.default.fileExists(atPath: dir) else { throw MambaError(.missingFile, "cannot write \(path): directory \(dir) does not exist") }
    let tmp = path + ".tmp-\(getpid())"
    try Data(text.utf8).write(to: URL(fileURLWithPath: tmp))
    if rename(tmp, path) != 0 {
        try? FileManager.default.removeItem(atPath: tmp)
        throw MambaError(.badInput, "cannot write \(path): rename failed (errno \(errno))")
    }
}
