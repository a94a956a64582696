import Foundation
import MambaModel
import MambaTensors

/// Committed fixtures (Tests/Fixtures, made by scripts/reference/make_fixtures.py with transformers).
public enum Fixtures {
    public static let root: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures").path
    }()

    public static func model(_ name: String) -> String { root + "/models/" + name }
    public static func bad(_ name: String) -> String { root + "/bad/" + name }
    public static var tokenizers: String { root + "/tokenizers" }

    /// The package's top directory (for the bundled model and corpus).
    public static let packageRoot: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }()
}

/// A fresh temporary directory, removed by the caller with `removeItem`.
public func makeTemporaryDirectory(_ label: String = "mambaquant-test") throws -> String {
    let path = NSTemporaryDirectory() + "/\(label)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

public func randomTensor(_ shape: [Int], seed: UInt64, scale: Double = 1, offset: Double = 0) -> Tensor {
    var rng = SeededRandom(seed: seed)
    return Tensor(shape: shape, storage: (0..<shape.reduce(1, *)).map { _ in Float(offset + scale * rng.nextGaussian()) })
}

public func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "sizes differ: \(a.count) vs \(b.count)")
    var m: Float = 0
    for i in a.indices { m = max(m, abs(a[i] - b[i])) }
    return m
}

/// A random model with the value ranges of a trained Mamba (A_log = log(1..N) plus noise,
/// dt bias the inverse softplus of dt in [1e-3, 1e-1], norms near 1), so tests exercise real
/// decay rates rather than zeros.
public func randomWeights(_ c: MambaConfig, seed: UInt64) -> MambaWeights {
    var s = seed
    func next() -> UInt64 { s &+= 1; return s }
    let (d, e, n, r, k) = (c.hiddenSize, c.innerSize, c.stateSize, c.timeStepRank, c.convKernel)
    func w(_ shape: [Int]) -> Tensor { randomTensor(shape, seed: next(), scale: 1 / Double(shape.last!).squareRoot()) }
    var rng = SeededRandom(seed: next())
    let layers = (0..<c.numLayers).map { _ in
        let aLog = Tensor(shape: [e, n], storage: (0..<(e * n)).map { i in Float(log(Double(i % n + 1)) + 0.1 * rng.nextGaussian()) })
        let dtBias = Tensor(shape: [e], storage: (0..<e).map { _ in
            let dt = exp(log(1e-3) + rng.nextUnit() * (log(1e-1) - log(1e-3)))
            return Float(dt + log(-expm1(-dt)))
        })
        let mixer = MixerWeights(
            inProj: w([2 * e, d]), inProjBias: c.useBias ? randomTensor([2 * e], seed: next(), scale: 0.1) : nil,
            convWeight: randomTensor([e, k], seed: next(), scale: 0.5), convBias: c.useConvBias ? randomTensor([e], seed: next(), scale: 0.1) : nil,
            xProj: w([r + 2 * n, e]), dtProj: randomTensor([e, r], seed: next(), scale: 1 / Double(r).squareRoot()),
            dtProjBias: dtBias, aLog: aLog, dSkip: randomTensor([e], seed: next(), scale: 0.2, offset: 1),
            outProj: w([d, e]), outProjBias: c.useBias ? randomTensor([d], seed: next(), scale: 0.1) : nil)
        return BlockWeights(norm: randomTensor([d], seed: next(), scale: 0.1, offset: 1), mixer: mixer)
    }
    return MambaWeights(
        config: c, embedding: randomTensor([c.vocabSize, d], seed: next()), layers: layers,
        normF: randomTensor([d], seed: next(), scale: 0.1, offset: 1),
        lmHead: c.tieWordEmbeddings ? nil : w([c.vocabSize, d]))
}
