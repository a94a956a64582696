import Foundation

/// Shapes of the published checkpoints (state-spaces/mamba-*-hf, tiiuae/falcon-mamba-7b and
/// state-spaces/mamba2-* config.json), for benchmarks on random weights of the real sizes
/// (scripts/reference/make_random_sharded_checkpoint.py writes the same shapes to disk).
public enum ModelPreset: String, CaseIterable, Sendable {
    case mamba130m = "mamba-130m"
    case mamba370m = "mamba-370m"
    case mamba790m = "mamba-790m"
    case mamba1_4b = "mamba-1.4b"
    case mamba2_8b = "mamba-2.8b"
    /// tiiuae/falcon-mamba-7b: Falcon-Mamba's normed dt, B and C, dt rank 256.
    case falconMamba7b = "falcon-mamba-7b"
    /// state-spaces/mamba2-*: head_dim 64, one group, state 128, vocab 50277 padded to 50288.
    case mamba2_130m = "mamba2-130m"
    case mamba2_1_3b = "mamba2-1.3b"
    case mamba2_2_7b = "mamba2-2.7b"
    /// The hybrids' shapes scripts/reference/make_random_hybrid_checkpoint.py writes for transformers
    /// to run on the same weights: Falcon-H1-0.5B's (transformers' FalconH1 documentation's table;
    /// MLP width and vocabulary assumed there) and a Bamba-like 0.6B (not a published checkpoint).
    case falconH1_0_5b = "falcon-h1-0.5b"
    case bamba600m = "bamba-600m"
    /// Vision Mamba's published shapes (hustvl/Vim vim/models_mamba.py): 224 px, patch 16 (197
    /// tokens with the middle cls token), 24 layers, D 192 / 384 / 768, ImageNet's 1,000 classes.
    case vimT = "vim-t"
    case vimS = "vim-s"
    case vimB = "vim-b"

    public var config: MambaConfig {
        switch self {
        case .mamba130m: MambaConfig(hiddenSize: 768, numLayers: 24, vocabSize: 50280)
        case .mamba370m: MambaConfig(hiddenSize: 1024, numLayers: 48, vocabSize: 50280)
        case .mamba790m: MambaConfig(hiddenSize: 1536, numLayers: 48, vocabSize: 50280)
        case .mamba1_4b: MambaConfig(hiddenSize: 2048, numLayers: 48, vocabSize: 50280)
        case .mamba2_8b: MambaConfig(hiddenSize: 2560, numLayers: 64, vocabSize: 50280)
        case .falconMamba7b:
            MambaConfig(hiddenSize: 4096, numLayers: 64, stateSize: 16, convKernel: 4, timeStepRank: 256, vocabSize: 65024,
                        mixer: .falconMamba(ssmNormEpsilon: Float(MambaConfig.defaultMixerRMSEpsilon)))
        case .mamba2_130m: Self.mamba2(hiddenSize: 768, numLayers: 24)
        case .mamba2_1_3b: Self.mamba2(hiddenSize: 2048, numLayers: 48)
        case .mamba2_2_7b: Self.mamba2(hiddenSize: 2560, numLayers: 64)
        case .falconH1_0_5b:
            Self.parsed(#"""
                {"model_type": "falcon_h1", "hidden_size": 1024, "num_hidden_layers": 36, "num_attention_heads": 8, "num_key_value_heads": 2,
                 "head_dim": 64, "intermediate_size": 2048, "mamba_d_ssm": 1536, "mamba_n_heads": 24, "mamba_d_head": 64,
                 "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_chunk_size": 128, "vocab_size": 32784}
                """#)
        case .vimT: Self.parsed(#"{"model_type": "vim", "embed_dim": 192}"#)
        case .vimS: Self.parsed(#"{"model_type": "vim", "embed_dim": 384}"#)
        case .vimB: Self.parsed(#"{"model_type": "vim", "embed_dim": 768}"#)
        case .bamba600m:
            Self.parsed(#"""
                {"model_type": "bamba", "hidden_size": 1536, "num_hidden_layers": 16, "attn_layer_indices": [3, 7, 11, 15],
                 "num_attention_heads": 12, "num_key_value_heads": 4, "intermediate_size": 4096, "mamba_n_heads": 48,
                 "mamba_d_head": 64, "mamba_n_groups": 1, "mamba_d_state": 128, "vocab_size": 32000, "tie_word_embeddings": false}
                """#)
        }
    }

    /// A preset written as the config.json keys its family's reader takes (valid by construction).
    static func parsed(_ json: String) -> MambaConfig {
        do { return try MambaConfig.parse(Data(json.utf8), source: "preset") } catch { preconditionFailure("preset config: \(error)") }
    }

    static func mamba2(hiddenSize d: Int, numLayers: Int) -> MambaConfig {
        MambaConfig(hiddenSize: d, numLayers: numLayers, stateSize: 128, vocabSize: 50288,
                    mixer: MixerKind(Mamba2Mixer(heads: 2 * d / 64, headDim: 64, groups: 1)))
    }
}
