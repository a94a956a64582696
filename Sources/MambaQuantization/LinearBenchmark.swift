import MambaCalibration
import MambaModel
import MambaTensors

/// One shape of the kernel-level comparison: the float32 linear (OpenBLAS sgemm, sgemv at one
/// row) against the int8 linear (row quantization + int8 GEMM + float epilogue) on the same
/// random data, runs interleaved, medians.
public struct LinearBenchmarkResult: Sendable, Encodable {
    public let shape: String
    public let m, n, k: Int
    public let sgemmGflops: Double
    public let int8Gops: Double
    public let gemmSpeedup: Double

    enum CodingKeys: String, CodingKey {
        case shape, m, n, k
        case sgemmGflops = "sgemm_gflops", int8Gops = "int8_gops", gemmSpeedup = "gemm_speedup"
    }
}

public func benchmarkLinear(
    shape: String, m: Int, n: Int, k: Int, runs: Int, parallelism: Parallelism, seed: UInt64 = 1
) -> LinearBenchmarkResult {
    var rng = SeededRandom(seed: seed)
    let w = (0..<(n * k)).map { _ in Float(rng.nextGaussian()) * 0.05 }
    let x = Tensor(shape: [m, k], storage: (0..<(m * k)).map { _ in Float(rng.nextGaussian()) })
    let float = FloatLinear(weight: Tensor(shape: [n, k], storage: w))
    let int8 = Int8Linear(weight: QuantizedMatrix(quantizing: .init(Tensor(shape: [n, k], storage: w)), bits: 8), bias: nil,
                          input: ActivationQuantizer(bits: 8, scale: .static(x.absMax / 127)))
    // Enough repetitions that one timing is about 20 ms at 100 GFLOP/s.
    let reps = max(1, Int(2e9 / Double(2 * m * n * k)))
    func seconds(_ op: any LinearOp) -> Double {
        measureSeconds { for _ in 0..<reps { _ = op.forward(x, parallelism) } } / Double(reps)
    }
    _ = seconds(float); _ = seconds(int8)
    var f: [Double] = [], q: [Double] = []
    for _ in 0..<runs { f.append(seconds(float)); q.append(seconds(int8)) }
    let ops = 2 * Double(m * n * k)
    let (fs, qs) = (median(f), median(q))
    return LinearBenchmarkResult(shape: shape, m: m, n: n, k: k, sgemmGflops: ops / fs / 1e9, int8Gops: ops / qs / 1e9, gemmSpeedup: fs / qs)
}

extension QuantizedModel {
    /// mambaquant w8a8 (or `recipe`) of `weights`, calibrated on `windows` windows of `seqLength`
    /// random token ids: what `bench` times when it is given no checkpoint (speed does not depend
    /// on what the scales are, only that they exist).
    public static func quantizeOnRandomTokens(weights: MambaWeights, float: MambaLM, recipe: QuantizationRecipe = .init(method: .mambaquant),
                                              windows count: Int = 4, seqLength: Int = 128, parallelism par: Parallelism) throws -> QuantizedModel {
        var rng = SeededRandom(seed: 7)
        let ids = (0..<(count * seqLength * 8)).map { _ in Int(rng.next() % UInt64(float.vocabSize)) }
        let windows = try CalibrationWindows.draw(from: [("random", ids)], samples: count, seqLength: seqLength, seed: 7)
        let stats = try Calibrator.run(model: float, windows: windows, parallelism: par)
        let file = StatsFile(stats: stats, windows: windows, provenance: .init(checkpointSHA256: "random", dataSHA256: "random", dataFiles: ["random"], seed: 7))
        return try quantize(weights: weights, stats: file, recipe: recipe, parallelism: par)
    }
}

/// sgemm GFLOP/s of the float32 linear alone (OpenBLAS under whatever core it runs), median of
/// `runs`: what `bench --blas-cores` compares between cores.
public func benchmarkSgemm(m: Int, n: Int, k: Int, runs: Int, parallelism: Parallelism, seed: UInt64 = 1) -> Double {
    var rng = SeededRandom(seed: seed)
    let float = FloatLinear(weight: Tensor(shape: [n, k], storage: (0..<(n * k)).map { _ in Float(rng.nextGaussian()) * 0.05 }))
    let x = Tensor(shape: [m, k], storage: (0..<(m * k)).map { _ in Float(rng.nextGaussian()) })
    let reps = max(1, Int(2e9 / Double(2 * m * n * k)))
    func seconds() -> Double { measureSeconds { for _ in 0..<reps { _ = float.forward(x, parallelism) } } / Double(reps) }
    _ = seconds()
    return 2 * Double(m * n * k) / median((0..<runs).map { _ in seconds() }) / 1e9
}
