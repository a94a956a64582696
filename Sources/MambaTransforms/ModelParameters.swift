import MambaModel
import MambaTensors

/// A module while the transforms change it: [out, in] in Double ([C, K] for a depthwise conv)
/// and its bias.
public struct DoubleModule: Sendable {
    public var weight: Matrix
    public var bias: [Double]?

    public init(weight: Matrix, bias: [Double]?) {
        self.weight = weight
        self.bias = bias
    }
}

/// One mixer's parameters in Double, as the transforms change them: the transform stage of the
/// layer store. The tensors no transform touches stay float32; a norm weight a smoothing folds
/// into changes, and the transforms add their artifacts there (LayerArtifact).
public typealias MixerParameters = LayerStore<DoubleModule>

extension LayerStore where Module == DoubleModule {
    public init(_ w: MixerWeights) {
        self = w.mapModules { _, m in DoubleModule(weight: Matrix(m.floatWeight), bias: m.bias?.storage.map(Double.init)) }
    }

    /// The weight of `module`.
    public func weight(_ module: String) -> Matrix { self.module(module).weight }

    /// Multiplies rows `slice.rows` of the producing module (weight and bias) by `s`.
    mutating func scaleOutputs(_ slice: OutputSlice, _ s: [Double]) {
        precondition(s.count == slice.rows.count)
        modules[slice.module]!.weight.scaleRows(s, in: slice.rows)
        if var b = modules[slice.module]!.bias {
            for (j, r) in slice.rows.enumerated() { b[r] *= s[j] }
            modules[slice.module]!.bias = b
        }
    }

    /// Multiplies the input channels of `module` by `s`: a linear's columns, a depthwise conv's
    /// rows (channel c of its input is row c).
    mutating func scaleInputs(_ module: ModuleSpec, _ s: [Double]) {
        switch module.kind {
        case .linear: modules[module.name]!.weight.scaleColumns(s)
        case .depthwiseConv: modules[module.name]!.weight.scaleRows(s)
        }
    }
}

public struct BlockParameters: Sendable {
    /// RMSNorm weight; nil once folded into the residual readers (then all ones).
    public var norm: [Double]?
    public var mixer: MixerParameters
    /// The model's config (the description's row ranges depend on it).
    public let config: MambaConfig

    public init(_ w: BlockWeights, config: MambaConfig) {
        norm = w.norm.storage.map(Double.init)
        mixer = MixerParameters(w.mixer)
        self.config = config
    }

    /// The float block these parameters define (S-SiLU where smoothed, the online rotation where rotated).
    public func floatBlock(layer: Int) -> MambaBlock {
        MambaBlock(norm: norm.map(floatVector), mixer: mixer.spec.makeMixer(LayerOpSource(transformed: mixer), config, layer: layer))
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

extension LayerOpSource where Module == DoubleModule {
    /// Float ops over the transformed parameters.
    public init(transformed store: LayerStore<DoubleModule>) {
        self.init(store, linear: { FloatLinear(weight: $0.weight.tensor, bias: $0.bias.map(floatVector)) },
                  conv: { FloatConv(weight: $0.weight.tensor, bias: $0.bias.map(floatVector)) })
    }
}

public func floatVector(_ v: [Double]) -> Tensor { Tensor(shape: [v.count], storage: v.map(Float.init)) }
