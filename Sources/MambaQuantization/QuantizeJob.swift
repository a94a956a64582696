import Foundation
import MambaCalibration
import MambaModel
import MambaTensors

/// `mambaquant quantize` as the library runs it, in two steps. Opening checks everything before
/// anything is written: the output is none of the inputs, the model is a float checkpoint, the
/// stats file belongs to it, the keep-float names exist, and the job fits in memory and on disk.
/// Running streams the pipeline into a checkpoint writer that is abandoned (its temporary
/// directory removed, --out untouched) on any error.
public struct QuantizeJob {
    public let model: String
    public let out: String
    public let recipe: QuantizationRecipe
    public let parallelism: Parallelism
    /// Memory-mapped: a layer is widened, transformed, quantized and written at a time.
    public let weights: CheckpointWeights
    public let stats: StatsFile
    public let provenance: QuantizationProvenance
    /// The transforms' plan (R1 and its eigendecomposition), built while the checkpoint is hashed;
    /// nil for a Vision Mamba, whose pipeline builds its own.
    let plan: MethodPlan?

    /// What a finished job reports.
    public struct Summary: Sendable {
        public let transforms: [AppliedTransform]
        public let seconds: Double
        /// GPTQ's share of `seconds` (0 when rounding to nearest).
        public let gptqSeconds: Double
        /// Bytes of the checkpoint's weights, and of the float model in float32.
        public let weightBytes: Int
        public let floatBytes: Int
    }

    public init(model: String, stats statsPath: String, out: String, recipe: QuantizationRecipe, parallelism: Parallelism) throws {
        try refuseOverwritingInput(out, inputs: [model, statsPath])
        if QuantizedModel.isQuantized(directory: model) {
            throw MambaError(.badInput, "\(model) is already a quantized checkpoint: quantize its float source")
        }
        let weights = try CheckpointWeights(directory: model)
        let stats = try StatsFile.read(path: statsPath)
        // Hashing the checkpoint and R1's eigendecomposition each take one core for about 15 s at
        // the 7B shape (the eigendecomposition single-threaded on purpose: Eigen.swift), so they
        // run side by side. The plan's errors wait for the hash's check, which comes first as before.
        var planned: Result<MethodPlan, Error>? = nil
        let sha = try overlapping({
            if weights.config.vision == nil {
                planned = Result { try MethodPlan(recipe.method, stats: stats.stats, config: weights.config, seed: recipe.seed, alpha: recipe.alpha) }
            }
        }) { try checkpointSHA256(directory: model) }
        try stats.checkBelongs(toCheckpointSHA256: sha, checkpoint: model)
        let c = weights.config
        if let v = c.vision {
            // The second pass replays the stats file's images through the model.
            guard let images = stats.images else {
                throw MambaError(.mismatchedInputs, "\(statsPath) holds token windows, not calibration images: it is from a language model, not the Vision Mamba \(model)")
            }
            guard Array(images.shape.dropFirst()) == [v.channels, v.imageHeight, v.imageWidth] else {
                throw MambaError(.mismatchedInputs, "\(statsPath) holds images of \(shapeString(images.shape)), the model reads [n, \(v.channels), \(v.imageHeight), \(v.imageWidth)]: the stats file is from another model")
            }
            try QuantizedModel.checkKeepFloat(recipe.keepFloat.subtracting([QuantizedVisionMamba.headModule]), c)
        } else {
            if stats.images != nil {
                throw MambaError(.mismatchedInputs, "\(statsPath) holds calibration images: it is from a Vision Mamba, not the language model \(model)")
            }
            try QuantizedModel.checkKeepFloat(recipe.keepFloat, c)
        }
        try MemoryEstimate.quantize(c, windows: stats.images?.shape[0] ?? stats.windows.windows.count, seqLength: c.vision?.tokens ?? stats.windows.seqLength,
                                    threads: parallelism.threads, gptq: recipe.weightRounding == .gptq)
            .check(job: "quantize", lower: "--threads or the stats file's windows (calibrate with fewer --samples or a shorter --seq-len)")
        // At least every parameter at its narrowest width: a lower bound (scales, float vectors
        // and kept-float modules add to it), so no job that fits is refused. The shards' headers
        // go in place (ShardedSafeTensorsWriter), so the data is on the disk once.
        let narrowest = ([recipe.bits.weight] + recipe.moduleWeightBits.values).min()!
        try DiskSpace.check(Double(weights.parameterCount) * Double(narrowest) / 8, directory: URL(fileURLWithPath: out).deletingLastPathComponent().path,
                            job: "quantize", writing: "the \(narrowest)-bit weights")
        plan = try planned?.get()
        (self.model, self.out, self.recipe, self.parallelism, self.weights, self.stats) = (model, out, recipe, parallelism, weights, stats)
        // Of the bytes that were parsed.
        provenance = QuantizationProvenance(sourceSHA256: sha, statsSHA256: stats.fileSHA256!)
    }

    /// Quantizes into `out`; `progress` as Calibrator's (one step per window per layer).
    public func run(progress: Calibrator.Progress? = nil) throws -> Summary {
        if weights.config.vision != nil { return try runVision(progress: progress) }
        let writer = try QuantizedCheckpointWriter(directory: out, sourceDirectory: model)
        var result: QuantizedModel.StreamResult!
        let seconds = try measureSeconds {
            do {
                result = try QuantizedModel.stream(
                    weights: weights, stats: stats, recipe: recipe, plan: plan, parallelism: parallelism, progress: progress,
                    embedding: { try writer.add(embedding: $0) }, block: { try writer.add(block: $1, layer: $0, config: weights.config) })
                try writer.finish(config: result.config, recipe: recipe, lmHead: result.lmHead, headInput: result.headInput, tiedHead: result.tiedHead,
                                  transforms: result.transforms, provenance: provenance)
            } catch {
                writer.abandon()
                throw error
            }
        }
        return Summary(transforms: result.transforms, seconds: seconds, gptqSeconds: result.gptqSeconds, weightBytes: writer.weightBytes,
                       floatBytes: 4 * weights.parameterCount)
    }

    /// Writes a model quantized in memory from this job's checkpoint and stats (mixed widths).
    public func write(_ q: QuantizedModel) throws {
        try q.write(directory: out, sourceDirectory: model, provenance: provenance)
    }

    /// A Vision Mamba: quantized in memory (its models are small next to the language models'),
    /// then written.
    func runVision(progress: Calibrator.Progress?) throws -> Summary {
        var q: QuantizedVisionMamba!
        let seconds = try measureSeconds {
            q = try QuantizedVisionMamba.quantize(weights: weights, stats: stats.stats, images: stats.images!, recipe: recipe, parallelism: parallelism,
                                                  progress: progress).quantized
            try q.write(directory: out, sourceDirectory: model, provenance: provenance)
        }
        return Summary(transforms: q.transforms, seconds: seconds, gptqSeconds: 0, weightBytes: q.weightBytes, floatBytes: 4 * weights.parameterCount)
    }
}
