import Foundation
import MambaCalibration
import MambaModel
import MambaQuantization
import MambaTensors

/// What `compare` compares: the float model, quantized checkpoints made from it, and recipes
/// quantized on the fly from cached calibration. The command line only parses and defaults these.
public struct ComparisonSetup: Sendable {
    public var modelDirectory: String
    public var quantized: [String] = []
    /// Recipes quantized on the fly, each with `seeds` rotation seeds.
    public var methods: [QuantizationMethod] = []
    public var bits: [BitWidths] = []
    /// Weight roundings of `methods` × `bits` (nil: the bit width's default); more than one names rows by rounding.
    public var weightRoundings: [WeightRounding?] = [nil]
    /// Weight groups of `methods` × `bits` (nil: per output channel).
    public var groupSize: Int?
    /// Named recipes quantized on the fly (the error budget's variants), after `methods`.
    public var recipes: [(name: String, recipe: QuantizationRecipe)] = []
    /// The 4-bit error budget per module and layer: for each of these recipes, the 4-bit model with
    /// one module (one layer's linear or conv, or the head) at 8 bits, a row each, named by a
    /// prefix and the module (the two quantizations of `quantize --bits-per-weight`).
    public var moduleWidthRecipes: [(prefix: String, recipe: QuantizationRecipe)] = []
    public var seeds = 1
    public var evaluationFiles: [String] = []
    public var calibrationFiles: [String] = []
    public var calibrationSamples = 128
    public var calibrationSeqLength = 512
    /// Where calibration results are cached (docs/DESIGN.md section 5).
    public var cacheDirectory = ".mambaquant-cache"
    public var runtime: QuantizedRuntime = .int8

    public init(modelDirectory: String) { self.modelDirectory = modelDirectory }

    /// The contenders (float first) and the tokenized evaluation files. Checkpoints quantized from
    /// another source are refused; quantizing on the fly needs the whole model in memory, while
    /// --quantized checkpoints need only the float runtime (16-bit weights kept as stored).
    /// `calibrationProgress` makes the progress callback of a calibration, given the layer count.
    public func prepare(parallelism par: Parallelism, log: (String) -> Void, calibrationProgress: ((Int) -> Calibrator.Progress)? = nil)
        throws -> (contenders: [Contender], files: [EvaluationFile], tokenizer: Tokenizer) {
        let modelDir = modelDirectory
        if QuantizedModel.isQuantized(directory: modelDir) {
            throw MambaError(.badInput, "--model \(modelDir) is a quantized checkpoint: give its float source, and the quantized one with --quantized")
        }
        let checkpoint = try CheckpointWeights(directory: modelDir)
        let weights = methods.isEmpty && recipes.isEmpty && moduleWidthRecipes.isEmpty ? nil : try checkpoint.all()
        guard let tokenizer = try loadTokenizer(modelDirectory: modelDir) else {
            throw MambaError(.missingFile, "\(modelDir) has no tokenizer.json: evaluation text cannot be tokenized")
        }
        let sha = try checkpointSHA256(directory: modelDir)
        let files = try evaluationFiles.map { path -> EvaluationFile in
            let text = try readText(path)
            return EvaluationFile(name: path, text: text, tokens: tokenizer.encode(text))
        }
        let float = try weights.map { MambaLM(weights: $0) } ?? MambaLM(checkpoint: checkpoint)
        let floatType = weights == nil ? checkpoint.runtimeWeightType : "float32"
        var contenders = [Contender(name: "float", method: "none", bits: floatType == "float32" ? "fp32" : floatType, seed: nil, model: float,
                                    transformedFloat: nil, weightBytes: weights.map { 4 * $0.parameterCount } ?? checkpoint.runtimeBytes,
                                    runtime: floatType == "float32" ? "float32 (OpenBLAS \(BLASCore.current))"
                                        : "\(floatType) weights, float32 arithmetic (OpenBLAS \(BLASCore.current) above \(HalfLinear.gemvRows) rows)")]
        let int8Path = runtime.description
        for dir in quantized {
            try QuantizedModel.checkSource(directory: dir, model: modelDir, sha: sha)
            let q = try QuantizedModel.load(directory: dir)
            let tag = q.recipe.tag
            contenders.append(Contender(name: (dir as NSString).lastPathComponent + (tag.isEmpty ? "" : " [\(tag)]"), method: q.recipe.method.rawValue,
                                        bits: q.recipe.bits.description, seed: q.recipe.seed, model: q.model(runtime: runtime), transformedFloat: nil,
                                        weightBytes: q.weightBytes, runtime: int8Path, recipe: q.recipe.settings))
        }
        if let weights {
            let stats = try cachedCalibration(float, sha: sha, parallelism: par, log: log, progress: calibrationProgress)
            for m in methods {
                for b in bits {
                    for rounding in weightRoundings {
                        for s in 0..<UInt64(seeds) {
                            var recipe = QuantizationRecipe(method: m, bits: b, groupSize: groupSize, seed: s)
                            if let rounding { recipe.weightRounding = rounding }
                            let name = m.rawValue + (weightRoundings.count > 1 ? " " + recipe.weightRounding.rawValue : "")
                            let (q, transformed) = try QuantizedModel.quantizeKeepingTransformed(weights: weights, stats: stats, recipe: recipe, parallelism: par)
                            contenders.append(Contender(name: name, method: m.rawValue, bits: b.description, seed: s, model: q.model(runtime: runtime),
                                                        transformedFloat: transformed, weightBytes: q.weightBytes, runtime: int8Path, recipe: recipe.settings))
                            log("quantized \(name) \(b)" + (seeds > 1 ? " seed \(s)" : ""))
                        }
                    }
                }
            }
            for (name, recipe) in recipes {
                try QuantizedModel.checkKeepFloat(recipe.keepFloat, weights.config)
                // No per-site SQNR for these rows (the transformed float copy is dropped): a budget has dozens.
                let (q, _) = try QuantizedModel.quantizeKeepingTransformed(weights: weights, stats: stats, recipe: recipe, parallelism: par)
                contenders.append(Contender(name: name, method: recipe.method.rawValue, bits: recipe.bits.description, seed: recipe.seed,
                                            model: q.model(runtime: runtime), transformedFloat: nil, weightBytes: q.weightBytes,
                                            runtime: int8Path, recipe: recipe.settings))
                log("quantized \(name)")
            }
            for (prefix, base) in moduleWidthRecipes {
                let (lowRecipe, highRecipe) = WidthAllocation.recipes(base)
                let low = try QuantizedModel.quantize(weights: weights, stats: stats, recipe: lowRecipe, parallelism: par)
                let high = try QuantizedModel.quantize(weights: weights, stats: stats, recipe: highRecipe, parallelism: par)
                for module in low.widthCandidates {
                    let mixed = low.taking([module], from: high)
                    // The module in the recipe's words keeps each row its own (rows merge by recipe).
                    contenders.append(Contender(name: prefix + module, method: base.method.rawValue, bits: base.bits.description, seed: base.seed,
                                                model: mixed.model(runtime: runtime), transformedFloat: nil, weightBytes: mixed.weightBytes,
                                                runtime: int8Path, recipe: mixed.recipe.settings + "; \(module) at 8 bits"))
                }
                log("quantized \(prefix)* (\(low.widthCandidates.count) modules)")
            }
        }
        return (contenders, files, tokenizer)
    }

    /// Calibration of `model`, cached under `cacheDirectory` by checkpoint, data and settings: a
    /// second compare starts at quantization.
    func cachedCalibration(_ model: MambaLM, sha: String, parallelism: Parallelism, log: (String) -> Void,
                           progress: ((Int) -> Calibrator.Progress)?) throws -> StatsFile {
        let dataSHA = try SHA256.hex(ofFiles: calibrationFiles)
        let key = SHA256.hex(of: Array("\(sha) \(dataSHA) \(calibrationSamples) \(calibrationSeqLength) 0 \(StatsFile.formatVersion)".utf8))
        let path = cacheDirectory + "/stats-" + key.prefix(24) + ".safetensors"
        if FileManager.default.fileExists(atPath: path), let cached = try? StatsFile.read(path: path), cached.provenance.checkpointSHA256 == sha {
            log("calibration from cache \(path)")
            return cached
        }
        let stats = try calibrateStats(model, modelDirectory: modelDirectory, dataFiles: calibrationFiles, samples: calibrationSamples,
                                       seqLen: calibrationSeqLength, seed: 0, parallelism: parallelism, progress: progress?(model.config.numLayers))
        try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        try stats.write(to: path)
        return stats
    }
}
