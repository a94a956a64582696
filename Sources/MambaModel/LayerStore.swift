import MambaTensors

// One layer's parameters at every stage of the pipeline, in one store keyed by checkpoint name
// under the mixer prefix (BlockNames.mixerPrefix): the quantizable modules by module name, in the
// stage's own representation (the float checkpoint's weights, Double while the transforms change
// them, quantized), and every other float tensor by its key: the description's vectors (A_log, D)
// and the transforms' artifacts (LayerArtifact). One op source (LayerOpSource) builds the forward
// from a store of any stage, so a new artifact is a tensor named once in LayerArtifact and read
// where the forward needs it.

/// Tensors the transforms add beside a layer's checkpoint tensors, named once: the quantized
/// checkpoint stores them under these keys and the op source reads them there.
public enum LayerArtifact {
    /// S-SiLU's per-channel s of the gate: the gate becomes y * z * sigmoid(s z) (docs/DESIGN.md section 2).
    public static let gateSmoothing = "gate_smooth"
    /// The ±1 signs of the online Hadamard (R2) on `module`'s input.
    public static func hadamardSigns(_ module: String) -> String { module + ".hadamard_signs" }
}

public struct LayerStore<Module: Sendable>: Sendable {
    public var kind: MixerKind
    /// Quantizable modules (weight and bias) by module name.
    public var modules: [String: Module]
    /// Every other float32 tensor by key: role .vector tensors in their memory shapes, and artifacts.
    public var tensors: [String: Tensor]

    public init(kind: MixerKind, modules: [String: Module], tensors: [String: Tensor]) {
        (self.kind, self.modules, self.tensors) = (kind, modules, tensors)
    }

    public var spec: any MixerDescription { kind.spec }

    /// A module the description names (present by construction: a missing one is a bug).
    public func module(_ name: String) -> Module {
        guard let m = modules[name] else { preconditionFailure("\(spec.name) mixer has no module \(name)") }
        return m
    }

    /// A tensor the description names (present by construction: a missing one is a bug).
    public func tensor(_ key: String) -> Tensor {
        guard let t = tensors[key] else { preconditionFailure("\(spec.name) mixer has no tensor \(key)") }
        return t
    }

    /// S-SiLU's s (nil: plain SiLU).
    public var gateSmoothing: Tensor? { tensors[LayerArtifact.gateSmoothing] }

    /// The signs of the online Hadamard on `module`'s input (nil: none).
    public func hadamardSigns(before module: String) -> Tensor? { tensors[LayerArtifact.hadamardSigns(module)] }

    /// The same layer with each module in another representation.
    public func mapModules<T: Sendable>(_ transform: (String, Module) throws -> T) rethrows -> LayerStore<T> {
        LayerStore<T>(kind: kind, modules: try Dictionary(uniqueKeysWithValues: modules.map { ($0.key, try transform($0.key, $0.value)) }), tensors: tensors)
    }
}

/// A module of the float checkpoint: its weight as the runtime holds it (16-bit matrices in place,
/// everything else float32; a depthwise conv's as [C, K]) and its bias.
public struct FloatModule: Sendable {
    public var weight: StoredMatrix
    public var bias: Tensor?

    public init(weight: StoredMatrix, bias: Tensor?) {
        self.weight = weight
        self.bias = bias
    }

    /// The weight in float32 (a 16-bit one widened).
    public var floatWeight: Tensor {
        switch weight {
        case .float(let t): t
        case .half(let h): h.widened()
        }
    }
}

extension LayerStore where Module == FloatModule {
    /// A layer from its tensors keyed as the description's parameters (memory shapes).
    public init(kind: MixerKind, keyed: [String: Tensor]) {
        var modules: [String: FloatModule] = [:], tensors: [String: Tensor] = [:]
        for p in kind.spec.parameters {
            guard let t = keyed[p.key] else { continue }
            switch p.role {
            case .weight(let m): modules[m, default: FloatModule(weight: .float(t), bias: nil)].weight = .float(t)
            case .bias(let m): modules[m, default: FloatModule(weight: .float(Tensor(zeros: [0])), bias: nil)].bias = t
            case .vector: tensors[p.key] = t
            }
        }
        self.init(kind: kind, modules: modules, tensors: tensors)
    }

    /// The tensor of parameter `spec` in float32 (nil: absent for this config).
    public func tensor(of spec: ParameterSpec) -> Tensor? {
        switch spec.role {
        case .weight(let m): modules[m]?.floatWeight
        case .bias(let m): modules[m]?.bias
        case .vector: tensors[spec.key]
        }
    }
}

/// Ops over a layer store of any stage: its modules become linears and convs through the stage's
/// own constructors; its artifacts become the gate and the online rotations the same way at
/// every stage.
public struct LayerOpSource<Module: Sendable>: MixerOpSource {
    let store: LayerStore<Module>
    let makeLinear: (Module) -> any LinearOp
    let makeConv: (Module) -> any ConvOp
    let scanInputOp: any ScanInputOp

    public init(_ store: LayerStore<Module>, linear: @escaping (Module) -> any LinearOp, conv: @escaping (Module) -> any ConvOp,
                scanInput: any ScanInputOp = IdentityScanInput()) {
        (self.store, makeLinear, makeConv, scanInputOp) = (store, linear, conv, scanInput)
    }

    public func linear(_ module: String) -> any LinearOp { makeLinear(store.module(module)) }
    public func conv(_ module: String) -> any ConvOp { makeConv(store.module(module)) }
    public func tensor(_ key: String) -> Tensor { store.tensor(key) }
    public func scanInput() -> any ScanInputOp { scanInputOp }
    public func gate() -> any GateOp { store.gateSmoothing.map { SmoothSiLUGate(s: $0.storage) } ?? SiLUGate() }

    public func onlineRotation(before module: String) -> OnlineHadamard? {
        store.hadamardSigns(before: module).map { OnlineHadamard(signs: $0.storage, hadamard: Hadamard(size: $0.count)!) }
    }
}

extension LayerOpSource where Module == FloatModule {
    /// The float model's ops: 16-bit linears in place, everything else float32.
    public init(float store: LayerStore<FloatModule>) {
        self.init(store, linear: { $0.weight.linear(bias: $0.bias) }, conv: { FloatConv(weight: $0.floatWeight, bias: $0.bias) })
    }
}
