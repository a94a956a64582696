import Foundation
import MambaTensors

/// Float tensors of one mixer: the float stage of the layer store.
public typealias MixerWeights = LayerStore<FloatModule>

public struct BlockWeights: Sendable {
    public var norm: Tensor            // [D]
    public var mixer: MixerWeights

    public init(norm: Tensor, mixer: MixerWeights) {
        self.norm = norm
        self.mixer = mixer
    }
}

/// All float weights of a Mamba language model.
public struct MambaWeights: Sendable {
    public var config: MambaConfig
    public var embedding: Tensor       // [V, D]
    public var layers: [BlockWeights]
    public var normF: Tensor           // [D]
    /// nil when the head is tied to the embedding.
    public var lmHead: Tensor?         // [V, D]

    public init(config: MambaConfig, embedding: Tensor, layers: [BlockWeights], normF: Tensor, lmHead: Tensor?) {
        (self.config, self.embedding, self.layers, self.normF, self.lmHead) = (config, embedding, layers, normF, lmHead)
    }

    /// Loads `directory` strictly: every expected tensor present with its shape, float dtype, and
    /// no tensor left unused (CheckpointWeights checks), then every tensor widened to float32.
    public static func load(directory: String) throws -> MambaWeights {
        try CheckpointWeights(directory: directory).all()
    }

    public static func load(store: TensorStore, config c: MambaConfig) throws -> MambaWeights {
        try CheckpointWeights(store: store, config: c).all()
    }

    /// The tensors as a Hugging Face checkpoint names them, in a fixed order (for writing).
    public func namedTensors() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = [(ModelParameter.embedding.name, embedding)]
        for (i, l) in layers.enumerated() {
            out.append((BlockNames.norm(layer: i), l.norm))
            let prefix = BlockNames.mixerPrefix(layer: i)
            for (spec, _) in l.mixer.spec.presentParameters(config) {
                guard let t = l.mixer.tensor(of: spec) else { continue }
                out.append((prefix + spec.key, t.reshaped(spec.diskShape(config)!)))
            }
        }
        out.append((ModelParameter.normF.name, normF))
        if let lmHead { out.append((ModelParameter.lmHead.name, lmHead)) }
        return out
    }

    /// Writes config.json and model.safetensors into `directory` (which must exist).
    public func save(directory: String, dtype: DType = .f32) throws {
        var writer = SafeTensorsWriter(metadata: ["format": "pt"])
        for (name, t) in namedTensors() { writer.add(name, t, as: dtype) }
        try writer.write(to: directory + "/" + TensorStore.singleFileName)
        var json = config.json
        json["tie_word_embeddings"] = .bool(lmHead == nil)
        try writeAtomically(try JSONValue.object(json).prettyData(), to: directory + "/" + MambaConfig.fileName)
    }

    /// Number of parameters (the tied head counted once).
    public var parameterCount: Int { namedTensors().reduce(0) { $0 + $1.1.count } }
}
