import Foundation
import MambaTensors

/// Gaussian values from a seed (weights of benchmark presets and tests).
public func randomTensor(_ shape: [Int], seed: UInt64, scale: Double = 1, offset: Double = 0) -> Tensor {
    var rng = SeededRandom(seed: seed)
    return Tensor(shape: shape, storage: (0..<shape.reduce(1, *)).map { _ in Float(offset + scale * rng.nextGaussian()) })
}

/// A random model with the value ranges of a trained Mamba (each mixer's description draws its own
/// tensors; norms near 1), so tests exercise real decay rates rather than zeros.
extension MambaWeights {
    public static func random(_ c: MambaConfig, seed: UInt64) -> MambaWeights {
        var s = seed
        func next() -> UInt64 { s &+= 1; return s }
        let d = c.hiddenSize
        func w(_ shape: [Int]) -> Tensor { randomTensor(shape, seed: next(), scale: 1 / Double(shape.last!).squareRoot()) }
        let layers = c.layerKinds.map { kind in
            let mixer = MixerWeights(kind: kind, keyed: kind.spec.randomTensors(c, next: next))
            return BlockWeights(norm: randomTensor([d], seed: next(), scale: 0.1, offset: 1), mixer: mixer)
        }
        return MambaWeights(
            config: c, embedding: randomTensor([c.vocabSize, d], seed: next()), layers: layers,
            normF: randomTensor([d], seed: next(), scale: 0.1, offset: 1),
            lmHead: c.tieWordEmbeddings ? nil : w([c.vocabSize, d]))
    }
}
