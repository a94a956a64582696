import Foundation
import MambaCalibration
import MambaEvaluation
import MambaModel
import MambaQuantization
import MambaTensors

/// What `bench --preset vim-t` prints as JSON.
struct VisionBenchResult: Codable {
    var preset: String
    var tokens: Int
    var batch: Int
    var threads: Int
    var runs: Int
    var blasCore: String
    var quantization: String
    var floatImagesPerS: Double
    var int8ImagesPerS: Double
    var speedup: Double
    var weightBytesFloat32: Int
    var weightBytesInt8: Int
}

extension BenchCommand {
    /// A Vision Mamba shape on random weights: the float32 model and its mambaquant quantization
    /// (calibrated on a few random images), images per second side by side, medians of --runs
    /// interleaved passes over a batch of --decode-steps images (default 8).
    func runVision(_ preset: ModelPreset, _ par: Parallelism) throws {
        let c = preset.config, v = c.vision!
        let p = Double(c.parameterCount)
        try MemoryEstimate(parts: [("float32 weights", 4 * p), ("int8 weights", 1.1 * p), ("Double transforms of a layer", 24 * Double(c.largestLayerParameterCount))])
            .check(job: "bench --preset \(preset.rawValue)", lower: "the model: choose a smaller preset")
        printError("building random \(preset.rawValue) weights")
        let layers = MambaWeights.random(c, seed: 1)
        let outer = VisionOuterWeights(random: c, seed: 2)
        let float = VisionMamba(outer: outer, blocks: layers.layers.enumerated().map { i, l in MambaBlock(float: l, config: c, layer: i) })
        let calibration = randomTensor([4, v.channels, v.imageHeight, v.imageWidth], seed: 3)
        var recipe = QuantizationRecipe(method: .mambaquant, bits: bitsList[0])
        (profile ?? .fast).apply(to: &recipe, config: c)
        printError("calibrating and quantizing (\(recipe.method.rawValue) \(recipe.bits))")
        let stats = try VisionCalibrator.run(model: float, images: calibration, parallelism: par)
        let q = try QuantizedVisionMamba.quantize(outer: outer, layers: layers, stats: stats, images: calibration, recipe: recipe, parallelism: par).quantized
        let int8 = q.model(runtime: kernelOptions.kernels)
        let batch = decodeSteps == 64 ? 8 : decodeSteps
        let images = randomTensor([batch, v.channels, v.imageHeight, v.imageWidth], seed: 4)
        printError("timing \(batch) images of \(v.shapeDescription) (\(v.tokens) tokens), \(runs) runs each, interleaved")
        var times: [[Double]] = [[], []]
        _ = int8.logits(images.rows(0..<1), par)                   // warm-up (packing, first-touch pages)
        _ = float.logits(images.rows(0..<1), par)
        for _ in 0..<runs {
            for (k, model) in [float, int8].enumerated() { times[k].append(measureSeconds { _ = model.logits(images, par) }) }
        }
        let rates = times.map { Double(batch) / median($0) }
        if steps {
            // One pass of each model step by step (profiled() names: in_proj, conv, scan, ...).
            for (label, model) in [("float32", float), ("int8", int8)] {
                let profile = StepProfile()
                StepProfile.$current.withValue(profile) { _ = model.logits(images, par) }
                let total = profile.steps.reduce(0) { $0 + $1.seconds }
                printError("\(label) steps (ms per image): " + profile.steps.sorted { $0.seconds > $1.seconds }
                    .map { String(format: "%@ %.2f (%.0f%%)", $0.step, 1000 * $0.seconds / Double(batch), 100 * $0.seconds / total) }.joined(separator: ", "))
            }
        }
        let result = VisionBenchResult(preset: preset.rawValue, tokens: v.tokens, batch: batch, threads: par.threads, runs: runs,
                                       blasCore: BLASCore.current, quantization: "\(recipe.method.rawValue) \(recipe.bits): \(recipe.settings)",
                                       floatImagesPerS: rates[0], int8ImagesPerS: rates[1], speedup: rates[1] / rates[0],
                                       weightBytesFloat32: 4 * c.parameterCount, weightBytesInt8: q.weightBytes)
        if output.json {
            print(try snakeCaseJSON(result))
        } else {
            print("\(preset.rawValue): \(v.tokens) tokens, \(c.parameterCount) parameters, \(par.threads) threads, OpenBLAS \(BLASCore.current), medians of \(runs)")
            print(String(format: "float32 %.2f images/s, int8 %.2f images/s: %.2fx; weights %.1f MB -> %.1f MB", rates[0], rates[1], rates[1] / rates[0],
                         Double(4 * c.parameterCount) / 1e6, Double(q.weightBytes) / 1e6))
        }
    }
}
