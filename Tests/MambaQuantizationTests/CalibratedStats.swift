import MambaCalibration
import MambaModel

/// The stats file the quantization tests start from: windows drawn from the token ids `text` (one
/// file named "t"), run through `w`'s float model serially, provenance `label` for both hashes.
func calibratedStats(_ w: MambaWeights, text: [Int], samples: Int, seqLength: Int, seed: UInt64, label: String = "t") throws -> StatsFile {
    let windows = try CalibrationWindows.draw(from: [("t", text)], samples: samples, seqLength: seqLength, seed: seed)
    let stats = try Calibrator.run(model: MambaLM(weights: w), windows: windows, parallelism: .serial)
    return StatsFile(stats: stats, windows: windows, provenance: .init(checkpointSHA256: label, dataSHA256: label, dataFiles: ["t"], seed: seed))
}
