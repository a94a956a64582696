import ArgumentParser
import Foundation
import MambaCalibration
import MambaEvaluation
import MambaModel
import MambaQuantization
import MambaTensors

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Apply a quantization method (MambaQuant's rotations and smoothing, or a baseline) and write a quantized checkpoint.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Stats file from `mambaquant calibrate` on this checkpoint.")
    var stats: String
    @Option(help: "rtn, smoothquant, hadamard or mambaquant.")
    var method: QuantizationMethod = .mambaquant
    @Option(help: "Weight and activation bits, wXaY: X in {4, 8}, Y in 4...8 (default w8a8; w4a8 with --bits-per-weight).", transform: ArgumentParsing.bits)
    var bits: BitWidths?
    @Option(help: "Mixed widths: each linear at 4 or 8 bits, chosen by measured KL per byte so the file holds at most this many bits per weight (8 x its safetensors bytes / the float model's parameters, as `inspect` counts). Holds the model whole in memory.")
    var bitsPerWeight: Double?
    @Option(help: "Calibration windows on which --bits-per-weight measures each module's KL.")
    var allocationWindows = 8
    @Option(help: "Weight scales per group of this many input columns (default: one per output channel).")
    var groupSize: Int?
    @Option(help: "Static activation scales clip at: max, p99.9, p99.99 or p99.999 of |x| in calibration (p99.99 was best on the bundled model's validation text; see README).")
    var actClip: ActivationClip = .p99_99
    @Option(help: "A named recipe: fast (static per-tensor scales, every site quantized: the paper's), accurate (dynamic per-token scales; x_proj, dt_proj, conv1d and the SSM inputs float: closer to float than llama.cpp Q8_0) or compact (accurate with x_proj and dt_proj int8: Q8_0's accuracy at no more bytes). Flags given beside it override its settings.")
    var profile: QuantizationProfile?
    @Option(help: "static (calibrated per-tensor scales), dynamic (per-token scales at run time) or block (dynamic per token and block of 32 input columns, llama.cpp Q8_0's).")
    var actScale: ActivationScaling?
    @Option(help: "Static scan-input scales: tensor (one per x, dt, B, C) or group (Mamba-2: per head for x and dt, per group for B and C).")
    var scanScales: ScanScales = .tensor
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
        if let g = groupSize, !(1...QuantizationRecipe.maxGroupSize).contains(g) { throw ValidationError("--group-size must be in 1...\(QuantizationRecipe.maxGroupSize), got \(g)") }
        if !(gptqDamp > 0 && gptqDamp < 1) { throw ValidationError("--gptq-damp must be in (0, 1), got \(gptqDamp)") }
        if let b = bitsPerWeight {
            if !(b.isFinite && b > 0) { throw ValidationError("--bits-per-weight must be a positive number, got \(b)") }
            if let bits, bits.weight != 4 { throw ValidationError("--bits-per-weight chooses between 4 and 8 bits from a 4-bit base: give --bits w4aY (or no --bits), not \(bits)") }
        }
        if allocationWindows < 1 { throw ValidationError("--allocation-windows must be at least 1, got \(allocationWindows)") }
    }

    func run() throws {
        SystemMemory.keepFreedMemoryForReuse()
        let model = try modelOptions.directory()
        let bits = bits ?? BitWidths(weight: bitsPerWeight == nil ? 8 : 4, activation: 8)
        var recipe = QuantizationRecipe(method: method, bits: bits, groupSize: groupSize, clip: actClip, seed: seed)
        profile?.apply(to: &recipe, config: try MambaConfig.load(directory: model))
        if let actScale { recipe.activations = actScale }
        if let keepFloat {
            recipe.keepFloat = Set(keepFloat.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        recipe.scanScales = scanScales
        if let weightRounding { recipe.weightRounding = weightRounding }
        recipe.gptq = GPTQ.Options(dampening: gptqDamp, actOrder: gptqActOrder)
        let job = try QuantizeJob(model: model, stats: stats, out: out, recipe: recipe, parallelism: runtime.parallelism)
        let windows = job.stats.windows
        if let bitsPerWeight { return try runMixedWidths(job, bitsPerWeight: bitsPerWeight) }
        let bar = ProgressBar("quantize", unit: "tok", unitsPerStep: Double(windows.seqLength) / Double(job.weights.config.numLayers), quiet: quiet)
        let r = try job.run(progress: bar.update)
        for t in r.transforms { printError("  " + (t.layer.map { "layer \($0): " } ?? "") + t.step + ": " + t.detail) }
        if recipe.weightRounding == .gptq {
            printError(String(format: "  GPTQ rounding: %.1f s of it (dampening %g%@)", r.gptqSeconds, recipe.gptq.dampening, recipe.gptq.actOrder ? ", act-order" : ""))
        }
        printError(String(format: "quantized %@ with %@ %@ in %.1f s -> %@ (%.2f MB of weights, float32 %.2f MB)",
                          model, method.rawValue, recipe.bits.description, r.seconds, out, Double(r.weightBytes) / 1e6, Double(r.floatBytes) / 1e6))
    }

    /// `--bits-per-weight`: the two quantizations, the scoring, the choice and the file.
    func runMixedWidths(_ job: QuantizeJob, bitsPerWeight: Double) throws {
        let c = job.weights.config, seqLength = job.stats.windows.seqLength
        let score = ProgressBar("score modules", unit: "models", unitsPerStep: 1, quiet: quiet)
        let r = try job.runMixedWidths(
            bitsPerWeight: bitsPerWeight, windows: allocationWindows,
            quantizeProgress: { label in
                ProgressBar(label, unit: "tok", unitsPerStep: Double(seqLength) / Double(c.numLayers), quiet: quiet).update
            },
            scoreProgress: score.update)
        let choice = r.choice, chosen = choice.candidates.filter(\.chosen)
        let bpw = { (bytes: Int) in 8 * Double(bytes) / Double(r.parameters) }
        printError(String(format: "  all 4-bit: %.3f bits per weight, KL %.5f on %d calibration windows; all 8-bit: KL %.5f", bpw(r.lowFileBytes), choice.lowKL,
                          min(allocationWindows, job.stats.windows.windows.count), choice.highKL))
        // Every module's measured cost at 4 bits: the per-module, per-layer 4-bit error budget.
        for m in choice.candidates {
            printError(String(format: "  %d bits: %@ (at 8 bits alone KL %+.6f, %+d bytes)", m.chosen ? 8 : 4, m.name, -m.gain, m.extraBytes))
        }
        printError(String(format: "quantized %@ with %@ at mixed widths (%d of %d modules at 8 bits) in %.1f s -> %@: %.3f bits per weight (target %g), KL %.5f on the calibration windows",
                          job.model, method.rawValue, chosen.count, choice.candidates.count, r.seconds, out, bpw(r.fileBytes), bitsPerWeight, choice.mixedKL))
    }
}
