/// Shapes of the published Mamba-1 checkpoints (state-spaces/mamba-*-hf config.json), for
/// benchmarks on random weights of the real sizes.
public enum ModelPreset: String, CaseIterable, Sendable {
    case mamba130m = "mamba-130m"
    case mamba370m = "mamba-370m"
    case mamba790m = "mamba-790m"
    case mamba1_4b = "mamba-1.4b"

    public var config: MambaConfig {
        switch self {
        case .mamba130m: MambaConfig(hiddenSize: 768, numLayers: 24, vocabSize: 50280)
        case .mamba370m: MambaConfig(hiddenSize: 1024, numLayers: 48, vocabSize: 50280)
        case .mamba790m: MambaConfig(hiddenSize: 1536, numLayers: 48, vocabSize: 50280)
        case .mamba1_4b: MambaConfig(hiddenSize: 2048, numLayers: 48, vocabSize: 50280)
        }
    }
}
