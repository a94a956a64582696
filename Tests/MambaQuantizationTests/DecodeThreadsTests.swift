import Foundation
import MambaCalibration
import MambaModel
import MambaQuantization
import MambaTensors
import TestSupport
import XCTest

/// Decode steps on spinning workers (Parallelism.withSpinningWorkers) give the logits of serial
/// decode, float and int8, Mamba-1 and Mamba-2, at sizes where every product splits.
final class DecodeThreadsTests: XCTestCase {
    func testDecodeWithWorkersEqualsSerialDecode() throws {
        let seed = freshSeed()
        for mixer in [MixerKind.mamba1, MixerKind(Mamba2Mixer(heads: 8, headDim: 64, groups: 2))] {
            let c = MambaConfig(hiddenSize: 256, numLayers: 2, stateSize: 16, vocabSize: 515, mixer: mixer)
            let w = MambaWeights.random(c, seed: seed)
            let stats = try calibratedStats(w, text: (0..<600).map { ($0 * 37 + 11) % 515 }, samples: 2, seqLength: 32, seed: 1)
            let q = try QuantizedModel.quantize(weights: w, stats: stats, recipe: QuantizationRecipe(method: .mambaquant), parallelism: .serial)
            for (name, model) in [("float", MambaLM(weights: w)), ("int8", try q.model(runtime: .int8))] {
                let prompt = [3, 99, 250], steps = [7, 512, 0, 41, 300]
                func decode(_ par: Parallelism) throws -> [Float] {
                    var state = model.makeState()
                    _ = try model.forward(prompt, state: &state, logits: .last, parallelism: par)
                    return try par.withSpinningWorkers { p in
                        try steps.flatMap { try model.forward([$0], state: &state, logits: .last, parallelism: p).storage }
                    }
                }
                let serial = try decode(.serial), threaded = try decode(Parallelism(threads: 2))
                let scale = serial.map(abs).max() ?? 1
                XCTAssertLessThanOrEqual(maxAbsDifference(serial, threaded), 1e-5 * scale, "\(mixer.spec.name) \(name) seed \(seed)")
            }
        }
    }
}
