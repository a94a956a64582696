import MambaModel
import MambaTensors
import MambaTransforms
import TestSupport
import XCTest

/// Every transform leaves the float model's logits unchanged (max abs error <= 1e-4 of the logits'
/// max abs), on the transformers fixtures and random models.
final class TransformTests: XCTestCase {
    let tokens = (0..<29).map { ($0 * 11 + 3) % 50 }

    func models() throws -> [(String, MambaWeights)] {
        [("tiny-tied", try MambaWeights.load(directory: Fixtures.model("tiny-tied"))),
         ("tiny-untied-k3", try MambaWeights.load(directory: Fixtures.model("tiny-untied-k3"))),
         ("random-bias", randomWeights(MambaConfig(hiddenSize: 24, numLayers: 2, stateSize: 6, convKernel: 4, timeStepRank: 3, vocabSize: 60, useBias: true), seed: 9))]
    }

    func positive(_ n: Int, seed: UInt64) -> [Double] {
        var rng = SeededRandom(seed: seed)
        return (0..<n).map { _ in exp(rng.nextGaussian()) }   // spread over ~e^-3..e^3
    }

    func orthogonal(_ n: Int, seed: UInt64) throws -> Matrix { try offlineRotation(n: n, secondMoment: nil, seed: seed).0 }

    func assertPreserved(_ name: String, _ transform: (inout ModelParameters) throws -> Void, file: StaticString = #filePath, line: UInt = #line) throws {
        for (model, w) in try models() {
            let reference = try MambaLM(weights: w).logits(tokens)
            var p = ModelParameters(weights: w)
            try transform(&p)
            let got = try p.floatModel().logits(tokens)
            let err = maxAbsDifference(got.storage, reference.storage)
            XCTAssertLessThanOrEqual(err, 1e-4 * reference.absMax, "\(name) on \(model): \(err) of \(reference.absMax)", file: file, line: line)
        }
    }

    func testNormFolding() throws {
        try assertPreserved("fold") { $0.foldNorms() }
    }

    func testResidualRotationR1() throws {
        try assertPreserved("R1") { p in
            p.foldNorms()
            p.rotateResidual(try orthogonal(p.hiddenSize, seed: 4))
        }
    }

    func testDtPathRotationR5() throws {
        try assertPreserved("R5") { p in
            for i in p.blocks.indices { p.rotateDtPath(layer: i, try orthogonal(p.timeStepRank, seed: UInt64(i))) }
        }
    }

    func testConvInputSmoothing() throws {
        try assertPreserved("conv smoothing") { p in
            for i in p.blocks.indices { p.smoothConvInput(layer: i, positive(p.innerSize, seed: UInt64(i + 1))) }
        }
    }

    func testSSiLUSmoothingOfOutProjInput() throws {
        try assertPreserved("S-SiLU") { p in
            for i in p.blocks.indices {
                p.smoothOutProjInput(layer: i, positive(p.innerSize, seed: UInt64(i + 7)))
                p.smoothOutProjInput(layer: i, positive(p.innerSize, seed: UInt64(i + 8)))   // composes
            }
        }
    }

    func testOnlineRotationR2() throws {
        try assertPreserved("R2") { p in
            for i in p.blocks.indices {
                guard let h = RandomizedHadamard(size: p.innerSize, seed: UInt64(i)) else { return }
                p.rotateOutProjInput(layer: i, h)
            }
        }
    }

    func testSmoothQuantInProjAndDtPath() throws {
        try assertPreserved("SmoothQuant in_proj + dt") { p in
            p.foldNorms()
            for i in p.blocks.indices {
                p.smoothInProjInput(layer: i, positive(p.hiddenSize, seed: UInt64(i + 3)))
                p.smoothDtPath(layer: i, positive(p.timeStepRank, seed: UInt64(i + 5)))
            }
        }
    }

    func testAllTogether() throws {
        try assertPreserved("all") { p in
            p.foldNorms()
            p.rotateResidual(try orthogonal(p.hiddenSize, seed: 1))
            for i in p.blocks.indices {
                p.rotateDtPath(layer: i, try orthogonal(p.timeStepRank, seed: 2))
                p.smoothConvInput(layer: i, positive(p.innerSize, seed: 3))
                p.smoothOutProjInput(layer: i, positive(p.innerSize, seed: 4))
                if let h = RandomizedHadamard(size: p.innerSize, seed: 5) { p.rotateOutProjInput(layer: i, h) }
            }
        }
    }

    func testSmoothingFactorFormula() {
        let s = smoothingFactors(activationAbsMax: [4, 0, 1e-8], weightColumnAbsMax: [1, 2, 1], alpha: 0.5)
        XCTAssertEqual(s[0], 2, accuracy: 1e-12)       // 4^0.5 / 1^0.5
        XCTAssertEqual(s[1], 1)                        // dead channel
        XCTAssertEqual(s[2], 1e-2)                     // floor
    }
}
