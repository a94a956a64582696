import MambaTensors

// Every checkpoint tensor name of a Mamba-1 model, in this one file (transformers
// models/mamba/modeling_mamba.py and state-spaces mamba_ssm/models/mixer_seq_simple.py).

/// A parameter of one block, bound to its checkpoint name and shape here and nowhere else.
public enum BlockParameter: String, CaseIterable, Sendable {
    case norm = "norm.weight"
    case inProj = "mixer.in_proj.weight"
    case inProjBias = "mixer.in_proj.bias"
    case convWeight = "mixer.conv1d.weight"
    case convBias = "mixer.conv1d.bias"
    case xProj = "mixer.x_proj.weight"
    case dtProj = "mixer.dt_proj.weight"
    case dtProjBias = "mixer.dt_proj.bias"
    case aLog = "mixer.A_log"
    case dSkip = "mixer.D"
    case outProj = "mixer.out_proj.weight"
    case outProjBias = "mixer.out_proj.bias"

    public func name(layer: Int) -> String { "backbone.layers.\(layer).\(rawValue)" }

    /// Shape on disk for this config, or nil when the config says the tensor is absent.
    public func shape(_ c: MambaConfig) -> [Int]? {
        let (d, e, n, r, k) = (c.hiddenSize, c.innerSize, c.stateSize, c.timeStepRank, c.convKernel)
        switch self {
        case .norm: return [d]
        case .inProj: return [2 * e, d]
        case .inProjBias: return c.useBias ? [2 * e] : nil
        case .convWeight: return [e, 1, k]   // torch's Conv1d(groups=E) layout; see `sanitize`
        case .convBias: return c.useConvBias ? [e] : nil
        case .xProj: return [r + 2 * n, e]
        case .dtProj: return [e, r]
        case .dtProjBias: return [e]
        case .aLog: return [e, n]
        case .dSkip: return [e]
        case .outProj: return [d, e]
        case .outProjBias: return c.useBias ? [d] : nil
        }
    }
}

/// Parameters outside the blocks.
public enum ModelParameter: String, CaseIterable, Sendable {
    case embedding = "backbone.embeddings.weight"
    case normF = "backbone.norm_f.weight"
    case lmHead = "lm_head.weight"

    /// Older checkpoints (state-spaces, early transformers) spell the embedding in the singular.
    public static let legacyEmbeddingName = "backbone.embedding.weight"

    public var name: String { rawValue }

    public func shape(_ c: MambaConfig) -> [Int] {
        switch self {
        case .embedding, .lmHead: [c.vocabSize, c.hiddenSize]
        case .normF: [c.hiddenSize]
        }
    }
}
