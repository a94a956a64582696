import Foundation
import MambaTensors

/// Gaussian values from a seed (weights of benchmark presets and tests).
public func randomTensor(_ shape: [Int], seed: UInt64, scale: Double = 1, offset: Double = 0) -> Tensor {
    var rng = SeededRandom(seed: seed)
    return Tensor(shape: shape, storage: (0..<shape.reduce(1, *)).map { _ in Float(offset + scale * rng.nextGaussian()) })
}

/// A random model with the value ranges of a trained Mamba (A_log = log(1..N) plus noise,
/// dt bias the inverse softplus of dt in [1e-3, 1e-1], norms near 1), so tests exercise real
/// decay rates rather than zeros.
extension MambaWeights {
public static func random(_ c: MambaConfig, seed: UInt64) -> MambaWeights {
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
}
