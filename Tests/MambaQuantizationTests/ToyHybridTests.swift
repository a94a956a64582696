import Foundation
import MambaCalibration
import MambaQuantization
import MambaTransforms
import TestSupport
import XCTest

/// A layer kind that exists only here: a gated MLP block (SwiGLU, as in Bamba's and Granite's
/// feed-forward layers), down_proj(SiLU(gate_proj(u)) * up_proj(u)), with two modules reading the
/// residual stream, its own sites and no decode state. The model alternates it with Mamba-1
/// layers: declaring the kind here and listing it in the config's layer kinds
/// (`ToyHybridTests.config`) is all a new kind needs; loading, calibration, every method's
/// transforms, the quantized checkpoint and the int8 runtime follow from the description.
struct ToyGatedMLP: MixerDescription {
    static let input = Site("mlp_input"), gate = Site("gate"), up = Site("up"), downInput = Site("down_proj_input")

    var name: String { "gated_mlp" }

    var parameters: [ParameterSpec] {
        [
            ParameterSpec("gate_proj.weight", .weight(module: "gate_proj")) { c in [c.innerSize, c.hiddenSize] },
            ParameterSpec("up_proj.weight", .weight(module: "up_proj")) { c in [c.innerSize, c.hiddenSize] },
            ParameterSpec("down_proj.weight", .weight(module: "down_proj")) { c in [c.hiddenSize, c.innerSize] },
        ]
    }

    var modules: [ModuleSpec] {
        [ModuleSpec("gate_proj", .linear, input: Self.input), ModuleSpec("up_proj", .linear, input: Self.input),
         ModuleSpec("down_proj", .linear, input: Self.downInput)]
    }

    var sites: [Site] { [Self.input, Self.gate, Self.up, Self.downInput] }
    var scanInputs: [(site: Site, scaleKey: String)] { [] }

    func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? {
        switch site {
        case Self.gate: OutputSlice(module: "gate_proj", rows: 0..<c.innerSize)
        case Self.up: OutputSlice(module: "up_proj", rows: 0..<c.innerSize)
        default: nil
        }
    }

    var residualReaders: [String] { ["gate_proj", "up_proj"] }
    var residualWriters: [String] { ["down_proj"] }
    // QuaRot's online Hadamard on the down projection's input (arXiv 2404.00456).
    var onlineRotated: [String] { ["down_proj"] }
    var modelType: String { "mamba" }
    var architecture: String { "ToyHybridForCausalLM" }
    func configJSON(_ c: MambaConfig) -> [String: JSONValue] { [:] }
    func settings(_ c: MambaConfig) -> String { "SwiGLU \(c.innerSize)" }

    func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        ToyGatedMLPOp(gateProj: ops.linear("gate_proj"), upProj: ops.linear("up_proj"), gate: ops.gate(),
                   rotation: ops.onlineRotation(before: "down_proj"), downProj: ops.linear("down_proj"))
    }

    func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        let (d, e) = (c.hiddenSize, c.innerSize)
        return [
            "gate_proj.weight": randomTensor([e, d], seed: next(), scale: 1 / Double(d).squareRoot()),
            "up_proj.weight": randomTensor([e, d], seed: next(), scale: 1 / Double(d).squareRoot()),
            "down_proj.weight": randomTensor([d, e], seed: next(), scale: 1 / Double(e).squareRoot()),
        ]
    }
}

struct ToyGatedMLPOp: MixerOp {
    let gateProj: any LinearOp, upProj: any LinearOp, gate: any GateOp, rotation: OnlineHadamard?, downProj: any LinearOp

    func makeState() -> StatelessState { StatelessState() }

    func forward(_ u: Tensor, state: inout StatelessState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        observer?.observe(u, site: ToyGatedMLP.input, layer: layer)
        let (g, up) = (gateProj.forward(u, par), upProj.forward(u, par))
        observer?.observe(g, site: ToyGatedMLP.gate, layer: layer)
        observer?.observe(up, site: ToyGatedMLP.up, layer: layer)
        var h = gate.forward(y: up, z: g, par)   // up * SiLU(gate)
        if let rotation { h = rotation.rotate(h) }
        observer?.observe(h, site: ToyGatedMLP.downInput, layer: layer)
        return downProj.forward(h, par)
    }
}

final class ToyHybridTests: XCTestCase {
    static let mlp = MixerKind(ToyGatedMLP())
    let config = MambaConfig(hiddenSize: 16, numLayers: 4, stateSize: 4, vocabSize: 40, tieWordEmbeddings: false,
                             layerKinds: [.mamba1, ToyHybridTests.mlp, .mamba1, ToyHybridTests.mlp])
    let tokens = (0..<23).map { ($0 * 7 + 3) % 40 }

    func stats(_ w: MambaWeights) throws -> StatsFile {
        try calibratedStats(w, text: (0..<300).map { ($0 * 11 + $0 / 7) % 40 }, samples: 4, seqLength: 20, seed: 2)
    }

    /// Each layer's own tensors load back, decode steps through both state types equal the
    /// prefill, and calibration records each layer's own sites.
    func testLoadDecodeAndCalibrate() throws {
        let w = MambaWeights.random(config, seed: 5)
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try w.save(directory: dir)
        let loaded = try MambaWeights.load(store: try TensorStore(directory: dir), config: config)
        let lm = MambaLM(weights: loaded)
        let prefill = try lm.logits(tokens)
        XCTAssertEqual(prefill.storage, try MambaLM(weights: w).logits(tokens).storage)
        var state = lm.makeState()
        XCTAssertTrue(state.layers[0] is RecurrentState && state.layers[1] is StatelessState)
        var stepwise: [Float] = []
        for t in tokens { stepwise += try lm.forward([t], state: &state).storage }
        XCTAssertLessThanOrEqual(maxAbsDifference(stepwise, prefill.storage), 1e-4 * prefill.absMax)
        XCTAssertEqual(config.family, "mamba1+gated_mlp")
        XCTAssertEqual(config.parameterCount, 40 * 16 * 2 + 16 + 2 * (Mamba1Mixer().presentParameters(config).reduce(0) { $0 + $1.shape.reduce(1, *) } + 16)
                       + 2 * (3 * 16 * 32 + 16))

        let file = try stats(w)
        for i in 0..<config.numLayers {
            let sites = Set(file.stats.sites.keys.filter { $0.layer == i }.map(\.site))
            XCTAssertEqual(sites, Set(config.mixer(layer: i).sites + [.residual]), "layer \(i)")
        }
        XCTAssertEqual(try file.stats.site(1, ToyGatedMLP.downInput).channels, 32)
        // A Mamba-1 layer where the stats have an MLP layer: refused by site, not trapped on.
        var other = config
        other.setAllLayers(.mamba1)
        XCTAssertThrowsError(try MethodPlan(.mambaquant, stats: file.stats, config: other, seed: 0, alpha: 0.5)) { error in
            XCTAssertTrue("\(error)".contains("layers.1.") && "\(error)".contains("another model"), "\(error)")
        }
    }

    /// Every method keeps the float logits on both kinds (R1 through gate_proj, up_proj and
    /// down_proj; R2 on the MLP's down_proj as on Mamba's out_proj), and its int8 model, written
    /// and read back, runs close to float, on the int8 kernels as on the reference ops, with
    /// round-to-nearest and with GPTQ.
    func testEveryMethodAndTheInt8Runtime() throws {
        let w = MambaWeights.random(config, seed: 6)
        let reference = try MambaLM(weights: w).logits(tokens)
        let file = try stats(w)
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for method in QuantizationMethod.allCases {
            var p = ModelParameters(weights: w)
            let log = try applyPlan(method, to: &p, stats: file.stats, seed: 3, alpha: 0.5)
            let err = maxAbsDifference(try p.floatModel().logits(tokens).storage, reference.storage)
            XCTAssertLessThanOrEqual(err, 1e-4 * reference.absMax, "\(method)")
            if method == .hadamard || method == .mambaquant {
                XCTAssertNotNil(p.blocks[1].mixer.hadamardSigns(before: "down_proj"), "\(method)")
                XCTAssertNotNil(p.blocks[0].mixer.hadamardSigns(before: "out_proj"), "\(method)")
                XCTAssertTrue(log.contains { $0.layer == 1 && $0.detail.contains("R2 online Hadamard 32") }, "\(log)")
            }
            if method == .smoothquant {
                XCTAssertTrue(log.contains { $0.layer == 1 && $0.detail.contains("gate_proj, up_proj input (norm)") }, "\(log)")
            }
            // Static scales come from the second pass at the MLP's own sites; on a 4-layer random
            // model of width 16 they cost more than dynamic ones (SmoothQuant's: 16% of the range).
            for rounding in [WeightRounding.rtn, .gptq] {
              for dynamic in [false, true] {
                var recipe = QuantizationRecipe(method: method, activations: dynamic ? .perToken : .calibrated)
                recipe.weightRounding = rounding
                let q = try QuantizedModel.quantize(weights: w, stats: file, recipe: recipe, parallelism: .serial)
                let int8 = try q.model(runtime: .int8).logits(tokens)
                let ref = try q.model(runtime: .reference).logits(tokens)
                let tag = "\(method) \(rounding) dynamic \(dynamic)"
                // The kernels equal their references op by op (Int8OpsTests); through four layers a
                // float-order difference can flip one activation's rounding (seen: 0.36% of the range).
                XCTAssertLessThanOrEqual(maxAbsDifference(int8.storage, ref.storage), 5e-3 * ref.absMax, tag)
                XCTAssertLessThanOrEqual(maxAbsDifference(int8.storage, reference.storage), (dynamic ? 0.1 : 0.2) * reference.absMax, tag)
                XCTAssertGreaterThan(maxAbsDifference(int8.storage, reference.storage), 0, "\(tag) must round")
                let out = dir + "/\(method)-\(rounding)-\(dynamic)"
                try q.write(directory: out, sourceDirectory: dir, provenance: .init(sourceSHA256: "s", statsSHA256: "t"))
                let back = try QuantizedModel.loadModel(directory: out, layerKinds: config.layerKinds)
                XCTAssertEqual(try back.logits(tokens).storage, int8.storage, tag)
              }
            }
        }
    }

    /// Keep-float names come from every kind: the MLP's modules by short name reach only the
    /// layers that have them, and another kind's name is refused.
    func testKeepFloatAcrossKinds() throws {
        let w = MambaWeights.random(config, seed: 7)
        XCTAssertEqual(config.moduleNames, ["in_proj", "conv1d", "x_proj", "dt_proj", "out_proj", "gate_proj", "up_proj", "down_proj"])
        var recipe = QuantizationRecipe(method: .mambaquant)
        QuantizationProfile.accurate.apply(to: &recipe, config: config)
        XCTAssertEqual(recipe.keepFloat, ["conv1d", "x_proj", "dt_proj", "ssm_inputs"], "the MLP's modules all touch the residual stream")
        recipe = QuantizationRecipe(method: .rtn, keepFloat: ["up_proj"])
        let q = try QuantizedModel.quantize(weights: w, stats: try stats(w), recipe: recipe, parallelism: .serial)
        XCTAssertNil(q.blocks[1].mixer.modules["up_proj"]!.weight)
        XCTAssertNotNil(q.blocks[1].mixer.modules["gate_proj"]!.weight)
        XCTAssertNotNil(q.blocks[0].mixer.modules["in_proj"]!.weight)
        XCTAssertThrowsError(try QuantizedModel.checkKeepFloat(["backbone.layers.4.mixer.up_proj"], config))
        XCTAssertThrowsError(try QuantizedModel.checkKeepFloat(["attn_proj"], config)) { error in
            XCTAssertTrue("\(error)".contains("gate_proj,up_proj,down_proj"), "\(error)")
        }
    }
}
