import Foundation
import MambaCalibration
import MambaQuantization
import MambaTransforms
import TestSupport
import XCTest

/// A mixer type that exists only here: a gated linear unit, out_proj(x * SiLU(z)) with
/// [x | z] = in_proj(u), and no state. Declaring it is all a new layer type needs: loading, the
/// transforms, the quantized checkpoint, keep-float validation and the int8 ops follow from the
/// description. (This file is the only one it touches.)
struct GatedLinearMixer: MixerDescription {
    var name: String { "gated-linear" }

    var parameters: [ParameterSpec] {
        [
            ParameterSpec("in_proj.weight", .weight(module: "in_proj")) { c in [2 * c.innerSize, c.hiddenSize] },
            ParameterSpec("out_proj.weight", .weight(module: "out_proj")) { c in [c.hiddenSize, c.innerSize] },
            ParameterSpec("out_proj.bias", .bias(module: "out_proj")) { c in [c.hiddenSize] },
        ]
    }

    var modules: [ModuleSpec] {
        [ModuleSpec("in_proj", .linear, input: .inProjInput), ModuleSpec("out_proj", .linear, input: .outProjInput)]
    }

    var scanInputs: [(site: Site, scaleKey: String)] { [] }

    func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? {
        switch site {
        case .x: OutputSlice(module: "in_proj", rows: 0..<c.innerSize)
        case .z: OutputSlice(module: "in_proj", rows: c.innerSize..<(2 * c.innerSize))
        default: nil
        }
    }

    var sites: [Site] { [.inProjInput, .x, .z, .outProjInput] }
    var residualReaders: [String] { ["in_proj"] }
    var residualWriters: [String] { ["out_proj"] }
    var modelType: String { "mamba" }   // read back with the mixer passed in (loaders take `mixer:`)
    var architecture: String { "GatedLinearForCausalLM" }
    func configJSON(_ c: MambaConfig) -> [String: JSONValue] { [:] }
    func settings(_ c: MambaConfig) -> String { "" }

    func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        GatedLinearOp(inProj: ops.linear("in_proj"), gate: ops.gate(), rotation: ops.onlineRotation(before: "out_proj"), outProj: ops.linear("out_proj"))
    }

    func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        let (d, e) = (c.hiddenSize, c.innerSize)
        return [
            "in_proj.weight": randomTensor([2 * e, d], seed: next(), scale: 1 / Double(d).squareRoot()),
            "out_proj.weight": randomTensor([d, e], seed: next(), scale: 1 / Double(e).squareRoot()),
            "out_proj.bias": randomTensor([d], seed: next(), scale: 0.1),
        ]
    }
}

struct GatedLinearOp: MixerOp {
    let inProj: any LinearOp, gate: any GateOp, rotation: OnlineHadamard?, outProj: any LinearOp

    func makeState() -> StatelessState { StatelessState() }

    func forward(_ u: Tensor, state: inout StatelessState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        let e = outProj.inFeatures
        observer?.observe(u, site: .inProjInput, layer: layer)
        let xz = inProj.forward(u, par)
        let (x, z) = (xz.columns(0..<e), xz.columns(e..<(2 * e)))
        observer?.observe(x, site: .x, layer: layer)
        observer?.observe(z, site: .z, layer: layer)
        var g = gate.forward(y: x, z: z)
        if let rotation { g = rotation.rotate(g) }
        observer?.observe(g, site: .outProjInput, layer: layer)
        return outProj.forward(g, par)
    }
}

final class ToyMixerTests: XCTestCase {
    let config = MambaConfig(hiddenSize: 16, numLayers: 2, expand: 2, vocabSize: 40, tieWordEmbeddings: false, mixer: MixerKind(GatedLinearMixer()))
    let tokens = (0..<23).map { ($0 * 7 + 3) % 40 }

    func stats(_ w: MambaWeights) throws -> StatsFile {
        try calibratedStats(w, text: (0..<300).map { ($0 * 11 + $0 / 7) % 40 }, samples: 4, seqLength: 20, seed: 2)
    }

    /// The generic loader reads exactly the description's tensors back, and a Mamba-1 config refuses them.
    func testCheckpointRoundTripThroughTheDescription() throws {
        let w = MambaWeights.random(config, seed: 5)
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try w.save(directory: dir)
        let loaded = try MambaWeights.load(store: try TensorStore(directory: dir), config: config)
        XCTAssertEqual(try MambaLM(weights: loaded).logits(tokens).storage, try MambaLM(weights: w).logits(tokens).storage)
        XCTAssertEqual(w.parameterCount, 40 * 16 * 2 + 2 * (16 + 64 * 16 + 16 * 32 + 16) + 16)
        var mamba1 = config
        mamba1.setAllLayers(.mamba1)
        XCTAssertThrowsError(try MambaWeights.load(store: try TensorStore(directory: dir), config: mamba1)) { error in
            XCTAssertTrue("\(error)".contains("conv1d.weight"), "\(error)")
        }
    }

    /// Every method's plan on the new mixer keeps the float logits (R1, S-SiLU and R2 apply; the
    /// steps whose sites it lacks are skipped), and its int8 model runs close to float.
    func testEveryMethodOnTheNewMixer() throws {
        let w = MambaWeights.random(config, seed: 6)
        let reference = try MambaLM(weights: w).logits(tokens)
        let file = try stats(w)
        for method in QuantizationMethod.allCases {
            var p = ModelParameters(weights: w)
            let log = try applyPlan(method, to: &p, stats: file.stats, seed: 3, alpha: 0.5)
            let err = maxAbsDifference(try p.floatModel().logits(tokens).storage, reference.storage)
            XCTAssertLessThanOrEqual(err, 1e-4 * reference.absMax, "\(method)")
            if method == .mambaquant {
                XCTAssertNotNil(p.blocks[0].mixer.gateSmoothing)
                XCTAssertNotNil(p.blocks[0].mixer.hadamardSigns(before: "out_proj"))
                XCTAssertTrue(log.contains { $0.detail.contains("R2 online Hadamard 32") }, "\(log)")
            }
            let q = try QuantizedModel.quantize(weights: w, stats: file, recipe: .init(method: method, activations: .perToken), parallelism: .serial)
            let int8 = try q.model(runtime: .int8).logits(tokens)
            let ref = try q.model(runtime: .reference).logits(tokens)
            XCTAssertLessThanOrEqual(maxAbsDifference(int8.storage, ref.storage), 1e-3 * ref.absMax, "\(method)")
            XCTAssertLessThanOrEqual(maxAbsDifference(int8.storage, reference.storage), 0.1 * reference.absMax, "\(method)")
            XCTAssertGreaterThan(maxAbsDifference(int8.storage, reference.storage), 0, "\(method) must round")
        }
    }

    /// The quantized checkpoint's names come from the description: it writes, reads back bit for
    /// bit, and keep-float accepts this mixer's modules and refuses another mixer's.
    func testQuantizedCheckpointAndKeepFloat() throws {
        let w = MambaWeights.random(config, seed: 7)
        let file = try stats(w)
        XCTAssertEqual(QuantizedModel.quantizableModules(config),
                       ["lm_head", "backbone.layers.0.mixer.in_proj", "backbone.layers.0.mixer.out_proj",
                        "backbone.layers.1.mixer.in_proj", "backbone.layers.1.mixer.out_proj"])
        XCTAssertThrowsError(try QuantizedModel.quantize(weights: w, stats: file, recipe: .init(method: .rtn, keepFloat: ["backbone.layers.0.mixer.x_proj"]), parallelism: .serial)) { error in
            XCTAssertTrue("\(error)".contains("backbone.layers.0.mixer.x_proj"), "\(error)")
        }
        let recipe = QuantizationRecipe(method: .mambaquant, keepFloat: ["backbone.layers.1.mixer.out_proj"])
        let q = try QuantizedModel.quantize(weights: w, stats: file, recipe: recipe, parallelism: .serial)
        XCTAssertNil(q.blocks[1].mixer.modules["out_proj"]!.weight)
        XCTAssertNotNil(q.blocks[0].mixer.modules["out_proj"]!.weight)
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/q"
        try q.write(directory: out, sourceDirectory: dir, provenance: .init(sourceSHA256: "s", statsSHA256: "t"))
        let names = try TensorStore(directory: out).names
        XCTAssertTrue(names.contains("backbone.layers.0.mixer.out_proj.hadamard_signs"))
        XCTAssertTrue(names.contains("backbone.layers.0.mixer.gate_smooth"))
        XCTAssertFalse(names.contains { $0.contains("conv1d") || $0.contains("A_log") })
        let loaded = try QuantizedModel.load(directory: out, layerKinds: config.layerKinds)
        XCTAssertEqual(loaded.weightBytes, q.weightBytes)
        XCTAssertEqual(try loaded.model().logits(tokens).storage, try q.model().logits(tokens).storage)
        // Without the mixer, config.json's model_type says Mamba-1, whose tensors are not there.
        XCTAssertThrowsError(try QuantizedModel.load(directory: out))
    }
}
