import Foundation
import MambaTensors

// The MLP layers of the hybrids (docs/DESIGN.md section 1, "Hybrids"), one norm and one MLP per
// tool layer. Upstream: transformers models/nemotron_h/modeling_nemotron_h.py (NemotronHMLP:
// down_proj(relu(up_proj x)^2)), models/bamba/modeling_bamba.py (BambaMLP: down_proj(silu(gate_proj x)
// * up_proj x)), models/granitemoehybrid/modeling_granitemoehybrid.py (GraniteMoeHybridMLP: the same
// with gate and up fused in input_linear, rows [gate | up], and output_linear). I is the MLP's width.

/// The MLP's activation.
public enum MLPActivation: String, Sendable {
    /// relu(x)^2 (Nemotron-H's relu2).
    case relu2
}

/// An MLP layer without a gate (Nemotron-H's): down_proj(act(up_proj(x))).
public struct MLPMixer: MixerDescription {
    public let width: Int
    public let activation: MLPActivation
    /// Biases on up and down (`mlp_bias`).
    public let bias: Bool

    public init(width: Int, activation: MLPActivation, bias: Bool = false) {
        precondition(width > 0)
        (self.width, self.activation, self.bias) = (width, activation, bias)
    }

    public static let input = Site("mlp_input"), downInput = Site("down_proj_input")

    public var name: String { "mlp" }

    var inputModules: [String] { ["up_proj"] }
    var outputModule: String { "down_proj" }

    func makeExpert(_ ops: any MixerOpSource, prefix: String, input: Site?, downInput: Site) -> any ExpertForward {
        makeForward(ops, prefix: prefix, input: input, downInput: downInput)
    }

    /// The forward of this MLP whose modules are named `prefix` + its own names (an expert of a
    /// mixture, "experts.3."), reporting `input` (nil: the caller reports it) and `downInput`.
    func makeForward(_ ops: any MixerOpSource, prefix: String, input: Site?, downInput: Site) -> MLPForward {
        MLPForward(upProj: ops.linear(prefix + "up_proj"), activation: activation, rotation: ops.onlineRotation(before: prefix + "down_proj"),
                   downProj: ops.linear(prefix + "down_proj"), inputSite: input, downSite: downInput)
    }

    public var parameters: [ParameterSpec] {
        let (w, b) = (width, bias)
        return [
            ParameterSpec("up_proj.weight", .weight(module: "up_proj")) { c in [w, c.hiddenSize] },
            ParameterSpec("up_proj.bias", .bias(module: "up_proj")) { _ in b ? [w] : nil },
            ParameterSpec("down_proj.weight", .weight(module: "down_proj")) { c in [c.hiddenSize, w] },
            ParameterSpec("down_proj.bias", .bias(module: "down_proj")) { c in b ? [c.hiddenSize] : nil },
        ]
    }

    public var modules: [ModuleSpec] {
        [ModuleSpec("up_proj", .linear, input: Self.input), ModuleSpec("down_proj", .linear, input: Self.downInput)]
    }

    public var sites: [Site] { [Self.input, Self.downInput] }
    public var scanInputs: [(site: Site, scaleKey: String)] { [] }
    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? { nil }
    public var residualReaders: [String] { ["up_proj"] }
    public var residualWriters: [String] { ["down_proj"] }
    /// QuaRot's online Hadamard on the down projection's input (arXiv 2404.00456).
    public var onlineRotated: [String] { ["down_proj"] }

    public var modelType: String { "nemotron_h" }
    public var architecture: String { "NemotronHForCausalLM" }
    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] { [:] }
    public func settings(_ c: MambaConfig) -> String { "MLP \(width) \(activation.rawValue)" }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        makeForward(ops, prefix: "", input: Self.input, downInput: Self.downInput)
    }

    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        let d = c.hiddenSize
        var t: [String: Tensor] = [
            "up_proj.weight": randomTensor([width, d], seed: next(), scale: 1 / Double(d).squareRoot()),
            "down_proj.weight": randomTensor([d, width], seed: next(), scale: 1 / Double(width).squareRoot()),
        ]
        if bias {
            t["up_proj.bias"] = randomTensor([width], seed: next(), scale: 0.1)
            t["down_proj.bias"] = randomTensor([d], seed: next(), scale: 0.1)
        }
        return t
    }
}

public struct MLPForward: MixerOp, ExpertForward {
    public var upProj: any LinearOp
    public let activation: MLPActivation
    public var rotation: OnlineHadamard?
    public var downProj: any LinearOp
    /// The sites this MLP reports its input (nil: none, an expert's caller reports it) and the
    /// down projection's input at.
    public var inputSite: Site? = MLPMixer.input
    public var downSite: Site = MLPMixer.downInput

    public func makeState() -> StatelessState { StatelessState() }

    public func forward(_ u: Tensor, state: inout StatelessState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        forward(u, layer: layer, par, observer: observer)
    }

    public func forward(_ u: Tensor, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        if let inputSite { observer?.observe(u, site: inputSite, layer: layer) }
        var h = profiled("up_proj") { upProj.forward(u, par) }          // [L, I]
        profiled("activation") {
            h.storage.withUnsafeMutableBufferPointer { p in
                switch activation {
                case .relu2: for i in p.indices { let r = max(p[i], 0); p[i] = r * r }
                }
            }
        }
        return profiled("down_proj") { downProj.forward(h, rotatedBy: rotation, par, observer: observer, site: downSite, layer: layer) } // [L, D]
    }
}


/// A gated MLP (SwiGLU): down(silu(gate x) * up x), with gate and up as two modules (Bamba's
/// gate_proj, up_proj, down_proj) or fused in one whose rows are [gate | up] (Granite's
/// input_linear, output_linear).
public struct GatedMLPMixer: MixerDescription {
    public let width: Int
    /// Gate and up in one module (Granite's spelling).
    public let fused: Bool
    /// Biases on every projection (`mlp_bias`).
    public let bias: Bool
    /// Falcon-H1's mlp_multipliers: on the gate projection's output (before SiLU) and on the down
    /// projection's output; 1 elsewhere.
    public let multipliers: (gate: Float, down: Float)

    public init(width: Int, fused: Bool, bias: Bool = false, multipliers: (gate: Float, down: Float) = (1, 1)) {
        precondition(width > 0)
        (self.width, self.fused, self.bias, self.multipliers) = (width, fused, bias, multipliers)
    }

    public static let input = Site("mlp_input"), downInput = Site("down_proj_input")

    public var name: String { "swiglu_mlp" }

    /// The module names: the input modules (gate and up, or the fused one) and the output one.
    var inputModules: [String] { fused ? ["input_linear"] : ["gate_proj", "up_proj"] }
    var outputModule: String { fused ? "output_linear" : "down_proj" }

    public var parameters: [ParameterSpec] {
        let (w, b, out) = (width, bias, outputModule)
        let rows = fused ? 2 * w : w
        return inputModules.flatMap { m in
            [ParameterSpec(m + ".weight", .weight(module: m)) { c in [rows, c.hiddenSize] },
             ParameterSpec(m + ".bias", .bias(module: m)) { _ in b ? [rows] : nil }]
        } + [ParameterSpec(out + ".weight", .weight(module: out)) { c in [c.hiddenSize, w] },
             ParameterSpec(out + ".bias", .bias(module: out)) { c in b ? [c.hiddenSize] : nil }]
    }

    public var modules: [ModuleSpec] {
        inputModules.map { ModuleSpec($0, .linear, input: Self.input) } + [ModuleSpec(outputModule, .linear, input: Self.downInput)]
    }

    public var sites: [Site] { [Self.input, Self.downInput] }
    public var scanInputs: [(site: Site, scaleKey: String)] { [] }
    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? { nil }
    public var residualReaders: [String] { inputModules }
    public var residualWriters: [String] { [outputModule] }
    /// QuaRot's online Hadamard on the down projection's input (arXiv 2404.00456).
    public var onlineRotated: [String] { [outputModule] }

    public var modelType: String { "bamba" }
    public var architecture: String { "BambaForCausalLM" }
    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] { [:] }
    public func settings(_ c: MambaConfig) -> String {
        "SwiGLU MLP \(width)" + (fused ? " (gate and up fused)" : "") + (multipliers == (1, 1) ? "" : ", multipliers gate \(multipliers.gate) down \(multipliers.down)")
    }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        makeForward(ops, prefix: "", input: Self.input, downInput: Self.downInput)
    }

    func makeExpert(_ ops: any MixerOpSource, prefix: String, input: Site?, downInput: Site) -> any ExpertForward {
        makeForward(ops, prefix: prefix, input: input, downInput: downInput)
    }

    /// The forward of this MLP whose modules are named `prefix` + its own names (an expert of a
    /// mixture, "experts.3."), reporting `input` (nil: the caller reports it) and `downInput`.
    func makeForward(_ ops: any MixerOpSource, prefix: String, input: Site?, downInput: Site) -> GatedMLPForward {
        GatedMLPForward(inputs: inputModules.map { ops.linear(prefix + $0) }, width: width,
                        rotation: ops.onlineRotation(before: prefix + outputModule), downProj: ops.linear(prefix + outputModule),
                        multipliers: multipliers, inputSite: input, downSite: downInput)
    }

    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        let (d, rows) = (c.hiddenSize, fused ? 2 * width : width)
        var t: [String: Tensor] = [:]
        for m in inputModules { t[m + ".weight"] = randomTensor([rows, d], seed: next(), scale: 1 / Double(d).squareRoot()) }
        t[outputModule + ".weight"] = randomTensor([d, width], seed: next(), scale: 1 / Double(width).squareRoot())
        if bias {
            for m in inputModules { t[m + ".bias"] = randomTensor([rows], seed: next(), scale: 0.1) }
            t[outputModule + ".bias"] = randomTensor([d], seed: next(), scale: 0.1)
        }
        return t
    }
}

public struct GatedMLPForward: MixerOp, ExpertForward {
    /// [gate, up], or the one fused module whose output is [L, 2I] = [gate | up].
    public var inputs: [any LinearOp]
    public let width: Int
    public var rotation: OnlineHadamard?
    public var downProj: any LinearOp
    public var multipliers: (gate: Float, down: Float) = (1, 1)
    /// The sites this MLP reports its input (nil: none, an expert's caller reports it) and the
    /// down projection's input at.
    public var inputSite: Site? = GatedMLPMixer.input
    public var downSite: Site = GatedMLPMixer.downInput

    public func makeState() -> StatelessState { StatelessState() }

    public func forward(_ u: Tensor, state: inout StatelessState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        forward(u, layer: layer, par, observer: observer)
    }

    public func forward(_ u: Tensor, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        if let inputSite { observer?.observe(u, site: inputSite, layer: layer) }
        let (gate, up): (Tensor, Tensor)                                 // [L, I] each
        if inputs.count == 2 {
            gate = profiled("gate_proj") { inputs[0].forward(u, par) }
            up = profiled("up_proj") { inputs[1].forward(u, par) }
        } else {
            let gateUp = profiled("input_linear") { inputs[0].forward(u, par) } // [L, 2I] = [gate | up]
            (gate, up) = (gateUp.columns(0..<width), gateUp.columns(width..<(2 * width)))
        }
        // up * silu(gate): the Mamba blocks' gate kernel (gateRows), rows split between threads.
        let h = profiled("activation") { gateRows(y: up, z: scaled(gate, multipliers.gate), smoothing: nil, par) }
        return profiled("down_proj") {                                  // [L, D]
            scaled(downProj.forward(h, rotatedBy: rotation, par, observer: observer, site: downSite, layer: layer), multipliers.down)
        }
    }
}

/// An MLP as one expert of a mixture (MoEMixer.swift), or as the shared MLP beside the experts:
/// its modules under a prefix, its input reported by the mixture.
protocol ExpertDescription: Sendable {
    var parameters: [ParameterSpec] { get }
    var inputModules: [String] { get }
    var outputModule: String { get }
    func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor]
    func makeExpert(_ ops: any MixerOpSource, prefix: String, input: Site?, downInput: Site) -> any ExpertForward
}

extension MLPMixer: ExpertDescription {}
extension GatedMLPMixer: ExpertDescription {}

/// An expert's forward on the tokens routed to it.
public protocol ExpertForward: Sendable {
    func forward(_ u: Tensor, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor
}
