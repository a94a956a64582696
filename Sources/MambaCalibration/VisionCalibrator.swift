import MambaModel
import MambaTensors

// Calibration of a Vision Mamba: each image is one window (its [T, D] tokens), and the windows
// advance a layer at a time through the blocks as the language models' do (WindowStreams), so the
// statistics, the KLT sites and GPTQ's Hessians are gathered by the same code. The head's input is
// what the model's head reads: norm_f's output at the cls token's row, or the pooled rows.

public enum VisionCalibrator {
    /// Every site's statistics over `images` [n, C, H, W] through the float model.
    public static func run(model: VisionMamba, images: Tensor, parallelism: Parallelism, hessianSites: Set<Site> = [],
                           progress: Calibrator.Progress? = nil) throws -> CalibrationStats {
        let streams = WindowStreams(model.embedAll(images, parallelism), config: model.config, parallelism: parallelism, hessianSites: hessianSites)
        for (i, block) in model.blocks.enumerated() {
            try streams.advance(through: block, layer: i)
            progress?((i + 1) * streams.count, model.blocks.count * streams.count)
        }
        try streams.observeHead { [model] u in model.headInput(u) }
        return streams.stats
    }
}
