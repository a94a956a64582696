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
    /// The same GEMM on int4 panels (nil: not timed).
    public let int4Gops: Double?

    enum CodingKeys: String, CodingKey {
        case shape, m, n, k
        case sgemmGflops = "sgemm_gflops", int8Gops = "int8_gops", gemmSpeedup = "gemm_speedup", int4Gops = "int4_gops"
    }
}

/// The random weights [n, k] and input [m, k] of a kernel-level timing, and the timer: one forward
/// repeated so that a timing is about 20 ms at 100 GFLOP/s.
private struct LinearProblem {
    let weight: Tensor
    let x: Tensor
    let reps: Int
    var ops: Double { 2 * Double(x.rows * weight.rows * weight.cols) }

    init(m: Int, n: Int, k: Int, seed: UInt64) {
        var rng = SeededRandom(seed: seed)
        weight = Tensor(shape: [n, k], storage: (0..<(n * k)).map { _ in Float(rng.nextGaussian()) * 0.05 })
        x = Tensor(shape: [m, k], storage: (0..<(m * k)).map { _ in Float(rng.nextGaussian()) })
        reps = max(1, Int(2e9 / Double(2 * m * n * k)))
    }

    func seconds(_ op: any LinearOp, _ parallelism: Parallelism) -> Double {
        measureSeconds { for _ in 0..<reps { _ = op.forward(x, parallelism) } } / Double(reps)
    }
}

/// `weightBits` [8] or [8, 4]: the int8 GEMM on int8 panels, and on int4 panels too, interleaved.
public func benchmarkLinear(
    shape: String, m: Int, n: Int, k: Int, runs: Int, parallelism: Parallelism, seed: UInt64 = 1, weightBits: [Int] = [8]
) -> LinearBenchmarkResult {
    let problem = LinearProblem(m: m, n: n, k: k, seed: seed)
    let float = FloatLinear(weight: problem.weight)
    let quantized = weightBits.map { bits in
        Int8Linear(weight: QuantizedMatrix(quantizing: .init(problem.weight), bits: bits), bias: nil,
                   input: ActivationQuantizer(bits: 8, scale: .static(problem.x.absMax / 127)))
    }
    _ = problem.seconds(float, parallelism)
    for q in quantized { _ = problem.seconds(q, parallelism) }
    var f: [Double] = [], q = [[Double]](repeating: [], count: quantized.count)
    for _ in 0..<runs {
        f.append(problem.seconds(float, parallelism))
        for (i, op) in quantized.enumerated() { q[i].append(problem.seconds(op, parallelism)) }
    }
    let (fs, qs) = (median(f), q.map(median))
    return LinearBenchmarkResult(shape: shape, m: m, n: n, k: k, sgemmGflops: problem.ops / fs / 1e9, int8Gops: problem.ops / qs[0] / 1e9,
                                 gemmSpeedup: fs / qs[0], int4Gops: qs.count > 1 ? problem.ops / qs[1] / 1e9 : nil)
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
    let problem = LinearProblem(m: m, n: n, k: k, seed: seed)
    let float = FloatLinear(weight: problem.weight)
    _ = problem.seconds(float, parallelism)
    return problem.ops / median((0..<runs).map { _ in problem.seconds(float, parallelism) }) / 1e9
}
