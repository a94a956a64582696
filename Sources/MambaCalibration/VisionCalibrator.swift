import Foundation
import MambaModel
import MambaTensors

// Calibration of a Vision Mamba: each image is one window (its [T, D] tokens), and the windows
// advance a layer at a time through the blocks as the language models' do (WindowStreams), so the
// statistics, the KLT sites and GPTQ's Hessians are gathered by the same code. The head's input is
// what the model's head reads: norm_f's output at the cls token's row, or the pooled rows.

public enum VisionCalibrator {
    /// Every site's statistics over `images` [n, C, H, W] through the float model.
    public static func run(model: VisionMamba, images: Tensor, parallelism: Parallelism, progress: Calibrator.Progress? = nil) throws -> CalibrationStats {
        let streams = WindowStreams(model.embedAll(images, parallelism), config: model.config, parallelism: parallelism)
        for (i, block) in model.blocks.enumerated() {
            try streams.advance(through: block, layer: i)
            progress?((i + 1) * streams.count, model.blocks.count * streams.count)
        }
        try streams.observeHead { [model] u in model.headInput(u) }
        return streams.stats
    }
}

/// Calibration of a Vision Mamba checkpoint on the first `samples` images of an image file or
/// folder (`preprocess`: the transform for a folder, the model's own when nil), tied
/// to the checkpoint and the file it came from; the images go into the stats file for quantize's
/// second pass (shared by `calibrate` and tests).
public func calibrateVisionStats(_ weights: CheckpointWeights, modelDirectory modelDir: String, imageFile: String, samples: Int, preprocess: ImagePreprocess? = nil,
                                 parallelism par: Parallelism, progress: Calibrator.Progress?) throws -> StatsFile {
    let model = try VisionMamba(checkpoint: weights)
    let set = try ImageSet.load(path: imageFile, for: model.vision, preprocess: preprocess, limit: samples)
    let stats = try VisionCalibrator.run(model: model, images: set.images, parallelism: par, progress: progress)
    let provenance = StatsFile.Provenance(
        checkpointSHA256: try checkpointSHA256(directory: modelDir), dataSHA256: try SHA256.hex(ofFiles: ImageFolder.sourceFiles(imageFile)),
        dataFiles: [URL(fileURLWithPath: imageFile).lastPathComponent], seed: 0)
    return StatsFile(stats: stats, windows: CalibrationWindows(seqLength: 0, windows: []), images: set.images, provenance: provenance)
}
