import ArgumentParser
import CMambaKernels
import Foundation
import MambaCalibration
import MambaEvaluation
import MambaModel
import MambaQuantization
import MambaTensors

extension ModelPreset: ExpressibleByArgument {}

/// `bench --int8-path`: the int8 kernels' best path on this CPU, or a weaker one forced.
enum Int8PathChoice: String, CaseIterable, ExpressibleByArgument {
    case auto, vnni, avx2, scalar

    /// mq_s8_set_max_level's level (-1: no cap).
    var level: Int32 { switch self { case .auto: -1; case .vnni: 2; case .avx2: 1; case .scalar: 0 } }
}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time float32 and int8 side by side: prefill, decode, weight bytes, and int8 GEMM vs sgemm at the model's shapes.",
        discussion: """
            With --preset the weights are random; the int8 model is a mambaquant quantization of them at --bits \
            (w8a8 by default), calibrated on a few random token windows (online Hadamard and S-SiLU included). \
            4-bit weights, quantized on the fly or given with --quantized, stay packed two per byte and run \
            on the int4 kernels.
            """)

    @Option(help: "A model shape with random weights: \(ModelPreset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: ModelPreset?
    @Option(help: "A float checkpoint directory instead of a preset.")
    var model: String?
    @Option(help: "A quantized checkpoint of --model to time instead of quantizing on the fly.")
    var quantized: String?
    @Option(help: "The recipe of the int8 model quantized on the fly: fast (default), accurate or compact (see quantize --profile).")
    var profile: QuantizationProfile?
    @Option(help: "Bit widths of the int8 model quantized on the fly (default w8a8): one (w8a8, w4a8, ...) or several, comma-separated, timed side by side (w8a8,w4a8: the first is the one compared with float32, the others with it).",
            transform: ArgumentParsing.list(ArgumentParsing.bits))
    var bits: [BitWidths]?
    @Option(help: "Prompt length of the prefill measurement.")
    var tokens = 512
    @Option(help: "Single-token steps of the decode measurement.")
    var decodeSteps = 64
    @Option(help: "Repetitions; medians are reported.")
    var runs = 5
    @Option(help: "Row counts of the kernel-level GEMM comparison (comma-separated; empty to skip).",
            transform: { $0.isEmpty ? [] : try ArgumentParsing.list(ArgumentParsing.positive(atMost: 1 << 16))($0) })
    var gemmRows: [Int] = [1, 16, 64, 512]
    @Option(help: "int8 kernel path: auto (the best this CPU has), vnni (AVX-512 VNNI without the AMX tiles, on a CPU that has them), avx2 or scalar (to measure a CPU without VNNI; pair with OPENBLAS_CORETYPE=Haswell for an AVX2 sgemm).")
    var int8Path: Int8PathChoice = .auto
    @Flag(help: "Measure float32 under every OpenBLAS core this CPU runs (one child process each) and compare against the fastest.")
    var blasCores = false
    @Flag(help: .hidden)
    var floatOnly = false
    @Flag(help: "Also measure how fast memory streams to 1..--threads threads (decode's limit; medians of 5 reads of 256 MB).")
    var readBandwidth = false
    @Flag(help: "Also time one prefill of each model step by step (in_proj, conv, scan, ...; medians of --runs), and --decode-steps decode steps as a generation runs them (microseconds a token).")
    var steps = false
    @Option(help: "Also time prefill with the last position's logits at --tokens and these prompt lengths (comma-separated, e.g. 2048,8192), float32 and int8 side by side, with the scan's share of each.",
            transform: ArgumentParsing.list(ArgumentParsing.positive(atMost: 1 << 17)))
    var longPrompts: [Int] = []
    @OptionGroup var output: OutputOptions
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var kernelOptions: KernelOptions

    func validate() throws {
        if (preset == nil) == (model == nil) { throw ValidationError("give exactly one of --preset and --model") }
        if quantized != nil && model == nil { throw ValidationError("--quantized needs the float --model it was made from") }
        if quantized != nil && (profile != nil || bits != nil) { throw ValidationError("--profile and --bits choose the recipe of a model quantized on the fly; --quantized brings its own") }
        if tokens < 1 || runs < 1 || decodeSteps < 1 { throw ValidationError("--tokens, --runs and --decode-steps must be at least 1") }
    }

    /// The widths quantized on the fly, the first compared with float32.
    var bitsList: [BitWidths] { bits ?? [BitWidths(weight: 8, activation: 8)] }

    func run() throws {
        var survey: [CoreMeasurement] = []
        if blasCores && !floatOnly {
            if let inherited = BLASCoreSurvey.inherited() {
                survey = inherited
            } else {
                survey = try BLASCoreSurvey.run(arguments: CommandLine.arguments.dropFirst().filter { $0 != "--blas-cores" })
                try BLASCoreSurvey.useFastest(survey)
            }
        }
        SystemMemory.keepFreedMemoryForReuse()   // as generate and compare run (SystemMemory.swift)
        let par = runtime.parallelism
        mq_s8_set_max_level(int8Path.level)
        if let preset, preset.config.vision != nil { return try runVision(preset, par) }
        let weights: MambaWeights
        let name: String
        if let preset {
            // bench holds the float32 model and the int8 one side by side.
            let p = Double(preset.config.parameterCount)
            try MemoryEstimate(parts: [("float32 weights", 4 * p), ("int8 weights", 1.1 * p * Double(bitsList.count))] + MemoryEstimate.quantize(
                preset.config, windows: 4, seqLength: 128, threads: par.threads).parts)
                .check(job: "bench --preset \(preset.rawValue)", lower: "the model: choose a smaller preset (bench runs the float32 model beside the int8 one)")
            printError("building random \(preset.rawValue) weights")
            weights = MambaWeights.random(preset.config, seed: 1)
            name = preset.rawValue
        } else {
            weights = try MambaWeights.load(directory: model!)
            name = model!
        }
        let float = MambaLM(weights: weights)
        let c = weights.config
        // The first layer's residual readers' and writers' [out, in] (in_proj [2E, D] on Mamba-1,
        // [E + X + H, D] on Mamba-2; out_proj).
        let spec = c.mixer(layer: 0)
        let shapes = (spec.residualReaders + spec.residualWriters).compactMap { m in
            spec.presentParameters(c).first { $0.spec.key == m + ".weight" }.map { (m, $0.shape[0], $0.shape[1]) }
        }
        if floatOnly {
            let m = try BLASCoreSurvey.measure(float, shapes: shapes, tokens: tokens, runs: runs, parallelism: par)
            print(String(decoding: try JSONEncoder().encode(m), as: UTF8.self))
            return
        }
        let models = try quantizedModels(weights, float, par)
        let q = models[0]
        let recipeText = "\(q.recipe.method.rawValue) \(q.recipe.bits): " + q.recipe.settings
        let int8 = models.map { $0.model(runtime: kernelOptions.kernels) }

        printError("timing prefill (\(tokens) tokens) and decode (\(decodeSteps) steps), \(runs) runs each, interleaved")
        let t = try measureThroughputSideBySide([float] + int8, tokens: tokens, decodeSteps: decodeSteps, runs: runs, parallelism: par)
        let variants = zip(models.dropFirst(), t.dropFirst(2)).map { m, r in
            BenchVariant(bits: m.recipe.bits.description, quantization: m.recipe.settings, throughput: r, weightBytes: m.weightBytes,
                         bitsPerWeight: 8 * Double(m.weightBytes) / Double(weights.parameterCount),
                         prefillVsFirst: r.prefillTokensPerSecond / t[1].prefillTokensPerSecond,
                         decodeVsFirst: r.decodeTokensPerSecond / t[1].decodeTokensPerSecond,
                         bytesVsFirst: Double(m.weightBytes) / Double(q.weightBytes))
        }
        // The kernel table also times int4 panels when a listed width has 4-bit weights.
        let gemmBits = models.contains { $0.recipe.bits.weight == 4 } ? [8, 4] : [8]
        var gemm: [LinearBenchmarkResult] = []
        for (shape, n, k) in shapes {
            for m in gemmRows {
                printError("timing \(shape) [\(m) x \(k)] x [\(k) x \(n)]")
                gemm.append(benchmarkLinear(shape: shape, m: m, n: n, k: k, runs: runs, parallelism: par, weightBits: gemmBits))
            }
        }
        // The compute roofline beside the GEMM table: the path's multiply-add in register chains.
        let peak = gemm.isEmpty ? 0 : mq_s8_peak_gops(0.2) * Double(par.threads)
        var profiles: [StepTimes] = [], decodeProfiles: [StepTimes] = []
        if steps {
            printError("timing one \(tokens)-token prefill and \(decodeSteps) decode steps of each model step by step, \(runs) runs")
            let names = ["float32"] + models.map { models.count > 1 ? $0.recipe.bits.description : "int8" }
            profiles = try profilePrefill([float] + int8, names: names, tokens: tokens, runs: runs, parallelism: par)
            decodeProfiles = try profileDecode([float] + int8, names: names, steps: decodeSteps, runs: runs, parallelism: par)
        }
        // Prompt processing as a generation runs it (the last position's logits), from --tokens up.
        var long: [LongPromptRow] = []
        for n in longPrompts.isEmpty ? [] : [tokens] + longPrompts {
            printError("timing prefill of \(n) tokens (last position's logits), \(runs) runs each, interleaved, then step by step")
            let r = try measureThroughputSideBySide([float, int8[0]], tokens: n, decodeSteps: 1, runs: runs, parallelism: par, prefillLogits: .last)
            let p = try profilePrefill([float, int8[0]], names: ["float32", "int8"], tokens: n, runs: runs, parallelism: par, logits: .last)
            func share(_ t: StepTimes) -> Double { (t.milliseconds["scan"] ?? 0) / max(t.totalMilliseconds, 1e-9) }
            long.append(LongPromptRow(tokens: n, float32TokensPerSecond: r[0].prefillTokensPerSecond, int8TokensPerSecond: r[1].prefillTokensPerSecond,
                                      scanShareFloat32: share(p[0]), scanShareInt8: share(p[1])))
        }
        var bandwidth: [ReadBandwidth] = []
        if readBandwidth {
            printError("timing memory reads at 1...\(par.threads) threads")
            bandwidth = ReadBandwidth.measure(maxThreads: par.threads)
        }
        let report = BenchReport(
            model: name, threads: par.threads, blasCore: BLASCore.current, int8Kernels: kernelOptions.kernels.description, runs: runs,
            quantization: recipeText, float32: t[0], int8: t[1],
            prefillSpeedup: t[1].prefillTokensPerSecond / t[0].prefillTokensPerSecond,
            decodeSpeedup: t[1].decodeTokensPerSecond / t[0].decodeTokensPerSecond,
            weightBytesFloat32: 4 * weights.parameterCount, weightBytesInt8: q.weightBytes,
            weightBytesRatio: Double(4 * weights.parameterCount) / Double(q.weightBytes),
            bitsPerWeightInt8: 8 * Double(q.weightBytes) / Double(weights.parameterCount), variants: variants, gemm: gemm, int8PeakGops: peak,
            steps: profiles, decodeSteps: decodeProfiles, longPrompts: long, blasCores: survey, readBandwidth: bandwidth,
            notes: ["int8 GEMM timings include the quantization of the activations and the float epilogue; sgemm is OpenBLAS through the float model's own linear (sgemv at one row).",
                    "int4 weights run packed two per byte (int4 panels unpacked in registers); weight bytes are as stored, a tied embedding and head counted once."])
        if output.json {
            try output.printJSON(report)
        } else {
            print(report.text)
        }
    }

    /// The given quantized checkpoint, or mambaquant at each of --bits calibrated on a few random
    /// token windows.
    func quantizedModels(_ weights: MambaWeights, _ float: MambaLM, _ par: Parallelism) throws -> [QuantizedModel] {
        if let quantized {
            try QuantizedModel.checkSource(directory: quantized, model: model!, sha: try checkpointSHA256(directory: model!))
            return [try QuantizedModel.load(directory: quantized)]
        }
        let profile = self.profile ?? .fast
        return try bitsList.map { b in
            printError("calibrating on 4 random windows of 128 tokens and quantizing (mambaquant \(b), profile \(profile.rawValue))")
            var recipe = QuantizationRecipe(method: .mambaquant, bits: b)
            profile.apply(to: &recipe, config: weights.config)
            return try QuantizedModel.quantizeOnRandomTokens(weights: weights, float: float, recipe: recipe, parallelism: par)
        }
    }
}

/// Another bit width timed beside the first quantized model (bench --bits w8a8,w4a8).
struct BenchVariant: Encodable {
    let bits: String
    let quantization: String
    let throughput: ThroughputResult
    let weightBytes: Int
    /// 8 x weightBytes / the float model's parameters.
    let bitsPerWeight: Double
    let prefillVsFirst: Double
    let decodeVsFirst: Double
    let bytesVsFirst: Double

    enum CodingKeys: String, CodingKey {
        case bits, quantization, throughput
        case weightBytes = "weight_bytes", bitsPerWeight = "bits_per_weight", prefillVsFirst = "prefill_vs_first", decodeVsFirst = "decode_vs_first", bytesVsFirst = "weight_bytes_vs_first"
    }
}

/// Prefill at one longer prompt: both models' tokens/s and the scan's share of a step-by-step run.
struct LongPromptRow: Encodable {
    let tokens: Int
    let float32TokensPerSecond: Double
    let int8TokensPerSecond: Double
    let scanShareFloat32: Double?
    let scanShareInt8: Double?

    enum CodingKeys: String, CodingKey {
        case tokens
        case float32TokensPerSecond = "float32_tokens_per_s", int8TokensPerSecond = "int8_tokens_per_s"
        case scanShareFloat32 = "scan_share_float32", scanShareInt8 = "scan_share_int8"
    }
}

struct BenchReport: Encodable {
    let model: String
    let threads: Int
    let blasCore: String
    let int8Kernels: String
    let runs: Int
    let quantization: String
    let float32: ThroughputResult
    let int8: ThroughputResult
    let prefillSpeedup: Double
    let decodeSpeedup: Double
    let weightBytesFloat32: Int
    let weightBytesInt8: Int
    let weightBytesRatio: Double
    /// 8 x the int8 model's weight bytes (scales and float parts included) / the float parameters.
    let bitsPerWeightInt8: Double
    let variants: [BenchVariant]
    let gemm: [LinearBenchmarkResult]
    let int8PeakGops: Double
    let steps: [StepTimes]
    /// Milliseconds per decode token, step by step.
    let decodeSteps: [StepTimes]
    let longPrompts: [LongPromptRow]
    let blasCores: [CoreMeasurement]
    let readBandwidth: [ReadBandwidth]
    let notes: [String]

    enum CodingKeys: String, CodingKey {
        case model, threads, runs, quantization, float32, int8, variants, gemm, steps, notes
        case decodeSteps = "decode_steps"
        case blasCore = "blas_core", int8Kernels = "int8_kernels", blasCores = "blas_cores", int8PeakGops = "int8_peak_gops"
        case prefillSpeedup = "prefill_speedup", decodeSpeedup = "decode_speedup"
        case weightBytesFloat32 = "weight_bytes_float32", weightBytesInt8 = "weight_bytes_int8", weightBytesRatio = "weight_bytes_ratio"
        case bitsPerWeightInt8 = "bits_per_weight_int8", readBandwidth = "read_bandwidth", longPrompts = "long_prompts"
    }

    var text: String {
        var s = "\(model), \(threads) threads, OpenBLAS core \(blasCore), \(int8Kernels), medians of \(runs) interleaved runs\n"
        s += "int8 model: \(quantization)\n\n"
        if !blasCores.isEmpty { s += "float32 under each OpenBLAS core (\(blasCores.first!.sgemmGflops.isEmpty ? "" : "sgemm at M = prefill tokens, ")medians):\n\n" + BLASCoreSurvey.table(blasCores, running: blasCore) + "\n" }
        s += "|                    | float32 | int8 | int8 / float32 |\n|---|---:|---:|---:|\n"
        s += String(format: "| prefill %d tok/s | %.1f | %.1f | %.2fx |\n", float32.prefillTokens, float32.prefillTokensPerSecond, int8.prefillTokensPerSecond, prefillSpeedup)
        s += String(format: "| decode tok/s | %.1f | %.1f | %.2fx |\n", float32.decodeTokensPerSecond, int8.decodeTokensPerSecond, decodeSpeedup)
        s += String(format: "| weight MB | %.2f | %.2f | %.2fx smaller |\n", Double(weightBytesFloat32) / 1e6, Double(weightBytesInt8) / 1e6, weightBytesRatio)
        s += String(format: "| bits per weight | 32.00 | %.2f | |\n", bitsPerWeightInt8)
        if !variants.isEmpty {
            let first = quantization.split(separator: ":").first.map(String.init) ?? "first"
            s += "\nOther widths in the same runs, against \(first):\n\n| bits | prefill tok/s | decode tok/s | weight MB | bits per weight | prefill ratio | decode ratio | bytes ratio |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
            for v in variants {
                s += String(format: "| %@ | %.1f | %.1f | %.2f | %.2f | %.2fx | %.2fx | %.2f |\n", v.bits, v.throughput.prefillTokensPerSecond,
                            v.throughput.decodeTokensPerSecond, Double(v.weightBytes) / 1e6, v.bitsPerWeight, v.prefillVsFirst, v.decodeVsFirst, v.bytesVsFirst)
            }
        }
        if !gemm.isEmpty {
            let int4 = gemm.contains { $0.int4Gops != nil }
            s += "\n| linear | M | N | K | sgemm GFLOP/s | int8 GOP/s | int8 % of peak | speedup |" + (int4 ? " int4-weight GOP/s | int4 / int8 |" : "")
                + "\n|---|---:|---:|---:|---:|---:|---:|---:|" + (int4 ? "---:|---:|" : "") + "\n"
            for g in gemm {
                s += String(format: "| %@ | %d | %d | %d | %.1f | %.1f | %.0f%% | %.2fx |", g.shape, g.m, g.n, g.k, g.sgemmGflops, g.int8Gops,
                            100 * g.int8Gops / max(int8PeakGops, 1e-9), g.gemmSpeedup)
                if let g4 = g.int4Gops { s += String(format: " %.1f | %.2fx |", g4, g4 / g.int8Gops) }
                s += "\n"
            }
            s += String(format: "\nint8 compute peak: %.1f GOP/s at %d thread(s) (the path's multiply-add in register chains, no loads)\n", int8PeakGops, threads)
        }
        if !steps.isEmpty { s += "\n" + StepTimes.table(steps) }
        if !decodeSteps.isEmpty { s += "\n" + StepTimes.table(decodeSteps, title: "decode step (us a token, share)", scale: 1000) }
        if !longPrompts.isEmpty {
            s += "\nLonger prompts (prefill with the last position's logits, as a generation runs it; the int8 model above):\n\n| prompt tokens | float32 tok/s | int8 tok/s | int8 / float32 | scan share float32 | scan share int8 |\n|---:|---:|---:|---:|---:|---:|\n"
            for r in longPrompts {
                s += String(format: "| %d | %.1f | %.1f | %.2fx | ", r.tokens, r.float32TokensPerSecond, r.int8TokensPerSecond, r.int8TokensPerSecond / r.float32TokensPerSecond)
                    + [r.scanShareFloat32, r.scanShareInt8].map { $0.map { String(format: "%.0f%%", 100 * $0) } ?? "-" }.joined(separator: " | ") + " |\n"
            }
        }
        if let one = readBandwidth.first {
            s += "\nmemory read (256 MB, spinning workers): " + readBandwidth.map {
                String(format: "%d thread%@ %.1f GB/s (%.2fx)", $0.threads, $0.threads == 1 ? "" : "s", $0.gigabytesPerSecond, $0.gigabytesPerSecond / one.gigabytesPerSecond)
            }.joined(separator: ", ") + "\n"
            // Decode reads every weight once a token (a tied table once): bytes x tok/s against
            // what the read test streams at the same thread count (issue 31's bandwidth share).
            if let read = readBandwidth.first(where: { $0.threads == threads }) {
                s += "decode's weight stream at \(threads) thread\(threads == 1 ? "" : "s"): " + [
                    ("float32", Double(weightBytesFloat32) * float32.decodeTokensPerSecond),
                    ("int8", Double(weightBytesInt8) * int8.decodeTokensPerSecond),
                ].map { name, bytesPerSecond in
                    String(format: "%@ %.1f GB/s (%.0f%% of the read)", name, bytesPerSecond / 1e9, 100 * bytesPerSecond / 1e9 / read.gigabytesPerSecond)
                }.joined(separator: ", ") + "\n"
            }
        }
        return s + "\n" + notes.map { "note: " + $0 }.joined(separator: "\n")
    }
}
