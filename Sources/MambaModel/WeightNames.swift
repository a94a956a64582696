import MambaTensors

// The checkpoint names outside the mixers (transformers models/mamba/modeling_mamba.py and
// state-spaces mamba_ssm/models/mixer_seq_simple.py); each mixer's own names are in its
// description (Mamba1Mixer.swift), the block norm's in BlockNames (MixerDescription.swift).

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
