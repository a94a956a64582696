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
         ("random-bias", randomWeights(MambaConfig(hiddenSize: 24, numLayers: 2, stateSize: 6, convKernel: 4, timeStepRank: 3, vocabSize: 60, useBias: true), seed: 9)),
         // Falcon-Mamba: the weightless RMSNorm on dt_low sits inside R5's path.
         ("tiny-falcon-untied-bf16", try MambaWeights.load(directory: Fixtures.model("tiny-falcon-untied-bf16")))]
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
                // Not across Falcon-Mamba's RMSNorm (below); the plan skips it there.
                if p.canSmooth(site: .dtLow, layer: i) { p.smoothDtPath(layer: i, positive(p.timeStepRank, seed: UInt64(i + 5))) }
            }
        }
    }

    /// Why R5 may cross Falcon-Mamba's weightless RMSNorm on dt_low and a smoothing may not: the
    /// same per-channel scaling of x_proj's dt rows and dt_proj's columns that is exact on Mamba-1
    /// changes Falcon-Mamba's logits, while the rotation keeps them (testDtPathRotationR5).
    func testFalconDtNormAdmitsRotationNotSmoothing() throws {
        let w = try MambaWeights.load(directory: Fixtures.model("tiny-falcon-untied-bf16"))
        let reference = try MambaLM(weights: w).logits(tokens)
        let p = ModelParameters(weights: w)
        XCTAssertTrue(p.hasPath(through: .dtLow, layer: 0))
        XCTAssertFalse(p.canSmooth(site: .dtLow, layer: 0))
        XCTAssertTrue(p.canSmooth(site: .x, layer: 0))
        var scaled = w
        let r = w.config.timeStepRank
        for i in scaled.layers.indices {
            let s = positive(r, seed: UInt64(i + 5)).map(Float.init)
            var xProj = scaled.layers[i].mixer.module("x_proj").floatWeight
            var dtProj = scaled.layers[i].mixer.module("dt_proj").floatWeight
            for row in 0..<r { for c in 0..<xProj.cols { xProj.storage[row * xProj.cols + c] /= s[row] } }
            for row in 0..<dtProj.rows { for c in 0..<r { dtProj.storage[row * r + c] *= s[c] } }
            scaled.layers[i].mixer.modules["x_proj"]!.weight = .float(xProj)
            scaled.layers[i].mixer.modules["dt_proj"]!.weight = .float(dtProj)
        }
        let err = maxAbsDifference(try MambaLM(weights: scaled).logits(tokens).storage, reference.storage)
        XCTAssertGreaterThan(err, 1e-3 * reference.absMax)
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

    // MARK: Mamba-2 (docs/DESIGN.md, "Mamba-2"): each site's transform on the transformers fixtures.

    func mamba2Models() throws -> [(String, MambaWeights)] {
        try ["tiny-mamba2", "tiny-mamba2-g2-untied"].map { ($0, try MambaWeights.load(directory: Fixtures.model($0))) }
    }

    func assertMamba2(_ name: String, preserved: Bool = true, _ transform: (inout ModelParameters) throws -> Void) throws {
        for (model, w) in try mamba2Models() {
            let reference = try MambaLM(weights: w).logits(tokens)
            var p = ModelParameters(weights: w)
            try transform(&p)
            let err = maxAbsDifference(try p.floatModel().logits(tokens).storage, reference.storage)
            if preserved {
                XCTAssertLessThanOrEqual(err, 1e-4 * reference.absMax, "\(name) on \(model): \(err) of \(reference.absMax)")
            } else {
                XCTAssertGreaterThan(err, 1e-3 * reference.absMax, "\(name) on \(model) should not be exact")
            }
        }
    }

    /// Norm folding and R1 carry over; the conv input x, B, C smooths per channel (one factor per
    /// conv channel); out_proj's input smooths into the gated norm's weight; R2 rotates it online.
    func testMamba2TransformsKeepTheLogits() throws {
        try assertMamba2("fold + R1") { p in
            p.foldNorms()
            p.rotateResidual(try orthogonal(p.hiddenSize, seed: 4))
        }
        try assertMamba2("conv input smoothing") { p in
            for i in p.blocks.indices {
                let channels = p.blocks[i].mixer.weight("conv1d").rows
                XCTAssertTrue(p.canSmooth(site: .x, layer: i))
                p.smooth(site: .x, layer: i, positive(channels, seed: UInt64(i + 1)))
            }
        }
        try assertMamba2("out_proj input into the norm weight") { p in
            for i in p.blocks.indices {
                XCTAssertFalse(p.hasSmoothableGate(layer: i), "S-SiLU does not cross the gated norm")
                XCTAssertTrue(p.blocks[i].canSmoothThroughVector(site: .outProjInput))
                p.blocks[i].smoothThroughVector(site: .outProjInput, positive(p.innerSize, seed: UInt64(i + 7)))
            }
        }
        try assertMamba2("SmoothQuant in_proj") { p in
            p.foldNorms()
            for i in p.blocks.indices { p.smoothInProjInput(layer: i, positive(p.hiddenSize, seed: UInt64(i + 3))) }
        }
        try assertMamba2("R2") { p in
            for i in p.blocks.indices {
                guard let h = RandomizedHadamard(size: p.innerSize, seed: UInt64(i)) else { return XCTFail("no Hadamard of \(p.innerSize)") }
                p.rotateOutProjInput(layer: i, h)
            }
        }
    }

    /// Why S-SiLU is not used on Mamba-2: scaling z (and the gate by s) is exact on Mamba-1, but the
    /// group RMSNorm after Mamba-2's gate sees y * silu(z) / s, so the logits change.
    func testMamba2GateSmoothingIsNotExact() throws {
        try assertMamba2("S-SiLU", preserved: false) { p in
            for i in p.blocks.indices { p.smoothOutProjInput(layer: i, positive(p.innerSize, seed: UInt64(i + 7))) }
        }
    }
}
