import MambaModel
import MambaTensors

/// One mixer's parameters in Double, as the transforms change them, keyed by its description's
/// module names: weights (a depthwise conv's as [C, K]), biases, the tensors no transform touches,
/// S-SiLU's smoothing of the gate and the online rotations of module inputs.
public struct MixerParameters: Sendable {
    public var kind: MixerKind
    /// The model's config (the description's row ranges depend on it).
    public let config: MambaConfig
    /// [out, in] per module ([C, K] for a depthwise conv).
    public var weights: [String: Matrix]
    /// [out] per module that has a bias.
    public var biases: [String: [Double]]
    /// Role .vector tensors (A_log, D, ...); only a norm weight a smoothing folds into changes.
    public var tensors: [String: Tensor]
    /// S-SiLU's per-channel s (nil: plain SiLU).
    public var gateSmoothing: [Double]?
    /// Online rotations of module inputs (R2), by module name.
    public var onlineRotations: [String: RandomizedHadamard]

    public init(_ w: MixerWeights, config: MambaConfig) {
        kind = w.kind
        self.config = config
        (weights, biases, tensors) = ([:], [:], [:])
        for p in w.kind.spec.parameters {
            guard let t = w[p.key] else { continue }
            switch p.role {
            case .weight(let m): weights[m] = Matrix(t)
            case .bias(let m): biases[m] = t.storage.map(Double.init)
            case .vector: tensors[p.key] = t
            }
        }
        gateSmoothing = nil
        onlineRotations = [:]
    }

    public var spec: any MixerDescription { kind.spec }

    /// The weight of `module`; a description's own module names are always present.
    public func weight(_ module: String) -> Matrix {
        guard let w = weights[module] else { preconditionFailure("\(spec.name) mixer has no module \(module)") }
        return w
    }

    /// Multiplies rows `slice.rows` of the producing module (weight and bias) by `s`.
    mutating func scaleOutputs(_ slice: OutputSlice, _ s: [Double]) {
        precondition(s.count == slice.rows.count)
        weights[slice.module]!.scaleRows(s, in: slice.rows)
        if var b = biases[slice.module] {
            for (j, r) in slice.rows.enumerated() { b[r] *= s[j] }
            biases[slice.module] = b
        }
    }

    /// Multiplies the input channels of `module` by `s`: a linear's columns, a depthwise conv's
    /// rows (channel c of its input is row c).
    mutating func scaleInputs(_ module: ModuleSpec, _ s: [Double]) {
        switch module.kind {
        case .linear: weights[module.name]!.scaleColumns(s)
        case .depthwiseConv: weights[module.name]!.scaleRows(s)
        }
    }
}

public struct BlockParameters: Sendable {
    /// RMSNorm weight; nil once folded into the residual reader (then all ones).
    public var norm: [Double]?
    public var mixer: MixerParameters

    public init(_ w: BlockWeights, config: MambaConfig) {
        norm = w.norm.storage.map(Double.init)
        mixer = MixerParameters(w.mixer, config: config)
    }

    /// The float block these parameters define (S-SiLU where smoothed, the online rotation where rotated).
    public func floatBlock(layer: Int) -> MambaBlock {
        MambaBlock(norm: norm.map(floatVector), mixer: mixer.spec.makeMixer(ParametersOpSource(mixer), mixer.config, layer: layer))
    }
}

public struct ModelParameters: Sendable {
    public var config: MambaConfig
    public var embedding: Matrix          // [V, D]
    public var blocks: [BlockParameters]
    public var normF: [Double]?           // nil once folded into lm_head
    /// nil while tied to the embedding.
    public var lmHead: Matrix?
    /// [D, D] between norm_f and a tied head (nil: none): norm_f's weight kept out of the table
    /// (`foldFinalNorm`), rotated with R1.
    public var headInput: Matrix?

    public init(weights w: MambaWeights) {
        config = w.config
        embedding = Matrix(w.embedding)
        blocks = w.layers.map { BlockParameters($0, config: w.config) }
        normF = w.normF.storage.map(Double.init)
        lmHead = w.lmHead.map(Matrix.init)
    }

    public var hiddenSize: Int { config.hiddenSize }
    public var innerSize: Int { config.innerSize }
    public var timeStepRank: Int { config.timeStepRank }

    /// The float model these parameters define (ops: S-SiLU where smoothed, the online rotation
    /// where rotated). Its logits equal the original model's up to float rounding.
    public func floatModel() -> MambaLM {
        // The head-input matrix is symmetric (diag(w), or R1ᵀ diag(w) R1), so x Mᵀ = x M.
        MambaLM(config: config, embedding: FloatEmbedding(table: embedding.tensor), blocks: blocks.enumerated().map { i, b in b.floatBlock(layer: i) },
                normF: normF.map(floatVector), headInput: headInput.map { FloatLinear(weight: $0.tensor) },
                lmHead: FloatLinear(weight: (lmHead ?? embedding).tensor))
    }
}

/// Float ops over the transformed parameters.
struct ParametersOpSource: MixerOpSource {
    let p: MixerParameters

    init(_ p: MixerParameters) { self.p = p }

    func linear(_ module: String) -> any LinearOp {
        FloatLinear(weight: p.weight(module).tensor, bias: p.biases[module].map(floatVector))
    }

    func conv(_ module: String) -> any ConvOp {
        FloatConv(weight: p.weight(module).tensor, bias: p.biases[module].map(floatVector))
    }

    func tensor(_ key: String) -> Tensor {
        guard let t = p.tensors[key] else { preconditionFailure("\(p.spec.name) mixer has no tensor \(key)") }
        return t
    }

    func scanInput() -> any ScanInputOp { IdentityScanInput() }

    func gate() -> any GateOp { p.gateSmoothing.map { SmoothSiLUGate(s: $0.map(Float.init)) } ?? SiLUGate() }

    func onlineRotation(before module: String) -> OnlineHadamard? {
        p.onlineRotations[module].map { OnlineHadamard(signs: $0.signs.map(Float.init), hadamard: $0.hadamard) }
    }
}

public func floatVector(_ v: [Double]) -> Tensor { Tensor(shape: [v.count], storage: v.map(Float.init)) }
