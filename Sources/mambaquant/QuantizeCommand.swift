import ArgumentParser
import Foundation
import MambaCalibration
import MambaEvaluation
import MambaModel
import MambaQuantization
import MambaTensors

extension ActivationClip: ExpressibleByArgument {}

extension QuantizationProfile: ExpressibleByArgument {}

extension WeightRounding: ExpressibleByArgument {}

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Apply a quantization method (MambaQuant's rotations and smoothing, or a baseline) and write a quantized checkpoint.")

    @Option(help: "Float checkpoint directory (default: the bundled model named by calibration/manifest.json).")
    var model: String?
    @Option(help: "Stats file from `mambaquant calibrate` on this checkpoint.")
    var stats: String
    @Option(help: "rtn, smoothquant, hadamard or mambaquant.")
    var method = "mambaquant"
    @Option(help: "Weight and activation bits, wXaY: X in {4, 8}, Y in 4...8.")
    var bits = "w8a8"
    @Option(help: "Weight scales per group of this many input columns (default: one per output channel).")
    var groupSize: Int?
    @Option(help: "Static activation scales clip at: max, p99.9, p99.99 or p99.999 of |x| in calibration (p99.99 was best on the bundled model's validation text; see README).")
    var actClip: ActivationClip = .p99_99
    @Option(help: "A named recipe: fast (static per-tensor scales, every site quantized: the paper's) or accurate (dynamic per-token scales; x_proj, dt_proj, conv1d and the SSM inputs float: llama.cpp Q8_0's accuracy). Flags given beside it override its settings.")
    var profile: QuantizationProfile?
    @Option(help: "static (calibrated per-tensor scales), dynamic (per-token scales at run time) or block (dynamic per token and block of 32 input columns, llama.cpp Q8_0's).")
    var actScale: String?
    @Option(help: "Static scan-input scales: tensor (one per x, dt, B, C) or group (Mamba-2: per head for x and dt, per group for B and C).")
    var scanScales = "tensor"
    @Option(help: "Comma-separated modules kept in float: lm_head, a module in every layer (x_proj), one layer's (backbone.layers.0.mixer.out_proj), ssm_inputs (every scan input) or one of them (ssm_inputs.dt).")
    var keepFloat: String?
    @Option(help: "Weight rounding of the linears: gptq (against each input's Hessian from the second pass) or rtn (to nearest). Default: gptq at 4 bits, rtn at 8 (measured on the bundled model; see README).")
    var weightRounding: WeightRounding?
    @Option(help: "GPTQ's dampening: this fraction of the Hessian's mean diagonal is added to it.")
    var gptqDamp = 0.01
    @Flag(inversion: .prefixedNo, help: "GPTQ rounds columns in descending order of the Hessian's diagonal (act-order, the default; scales stay per contiguous group), or in their natural order.")
    var gptqActOrder = true
    @Option(help: "Seed of the randomized Hadamard signs and fallback rotations.")
    var seed: UInt64 = 0
    @Option(help: "Output checkpoint directory.")
    var out: String
    @Flag(help: "No progress bar.")
    var quiet = false
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if let actScale, !["static", "dynamic", "block"].contains(actScale) { throw ValidationError("--act-scale must be static, dynamic or block, got \(actScale)") }
        if !["tensor", "group"].contains(scanScales) { throw ValidationError("--scan-scales must be tensor or group, got \(scanScales)") }
        if let g = groupSize, g < 1 { throw ValidationError("--group-size must be at least 1") }
        if !(gptqDamp > 0 && gptqDamp < 1) { throw ValidationError("--gptq-damp must be in (0, 1), got \(gptqDamp)") }
    }

    func run() throws {
        let par = runtime.parallelism
        guard let method = QuantizationMethod(rawValue: method) else {
            throw MambaError(.badInput, "unknown method \"\(method)\": use one of \(QuantizationMethod.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let model = try self.model ?? CorpusManifest().defaultModel
        var recipe = QuantizationRecipe(method: method, bits: try BitWidths(parsing: bits), groupSize: groupSize, clip: actClip, seed: seed)
        profile?.apply(to: &recipe, config: try MambaConfig.load(directory: model))
        if let actScale {
            recipe.dynamicActivations = actScale != "static"
            recipe.activationBlock = actScale == "block" ? 32 : nil
        }
        if let keepFloat {
            recipe.keepFloat = Set(keepFloat.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        recipe.groupedScanScales = scanScales == "group"
        if let weightRounding { recipe.weightRounding = weightRounding }
        recipe.gptq = GPTQ.Options(dampening: gptqDamp, actOrder: gptqActOrder)
        try refuseOverwritingInput(out, inputs: [model, stats])
        if QuantizedModel.isQuantized(directory: model) {
            throw MambaError(.badInput, "\(model) is already a quantized checkpoint: quantize its float source")
        }
        // Memory-mapped; a layer is widened, transformed, quantized and written at a time.
        let weights = try CheckpointWeights(directory: model)
        let statsFile = try StatsFile.read(path: stats)
        let statsSHA = statsFile.fileSHA256!   // of the bytes that were parsed
        let sha = try checkpointSHA256(directory: model)
        try statsFile.checkBelongs(toCheckpointSHA256: sha, checkpoint: model)
        try QuantizedModel.checkKeepFloat(recipe.keepFloat, weights.config)
        try MemoryEstimate.quantize(weights.config, windows: statsFile.windows.windows.count, seqLength: statsFile.windows.seqLength, threads: par.threads,
                                    gptq: recipe.weightRounding == .gptq)
            .check(job: "quantize", lower: "--threads or the stats file's windows (calibrate with fewer --samples or a shorter --seq-len)")
        let bar = ProgressBar("quantize", unit: "tok", unitsPerStep: Double(statsFile.windows.seqLength) / Double(weights.config.numLayers), quiet: quiet)
        let writer = try QuantizedCheckpointWriter(directory: out, sourceDirectory: model)
        var result: QuantizedModel.StreamResult!
        let seconds = try measureSeconds {
            do {
                result = try QuantizedModel.stream(
                    weights: weights, stats: statsFile, recipe: recipe, parallelism: par, progress: bar.update,
                    embedding: { try writer.add(embedding: $0) }, block: { try writer.add(block: $1, layer: $0, config: weights.config) })
                try writer.finish(config: result.config, recipe: recipe, lmHead: result.lmHead, headInput: result.headInput, tiedHead: result.tiedHead,
                                  transforms: result.transforms,
                                  provenance: QuantizationProvenance(sourceSHA256: sha, statsSHA256: statsSHA))
            } catch {
                writer.abandon()
                throw error
            }
        }
        for t in result.transforms { printError("  " + (t.layer.map { "layer \($0): " } ?? "") + t.step + ": " + t.detail) }
        if recipe.weightRounding == .gptq {
            printError(String(format: "  GPTQ rounding: %.1f s of it (dampening %g%@)", result.gptqSeconds, recipe.gptq.dampening, recipe.gptq.actOrder ? ", act-order" : ""))
        }
        printError(String(format: "quantized %@ with %@ %@ in %.1f s -> %@ (%.2f MB of weights, float32 %.2f MB)",
                          model, method.rawValue, recipe.bits.description, seconds, out,
                          Double(writer.weightBytes) / 1e6, Double(4 * weights.parameterCount) / 1e6))
    }
}
