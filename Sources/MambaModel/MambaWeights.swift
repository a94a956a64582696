import Foundation
import MambaTensors

/// Float tensors of one mixer, keyed as its description names them (memory shapes: a depthwise
/// conv's weight is [C, K]).
public struct MixerWeights: Sendable {
    public var kind: MixerKind
    public var tensors: [String: Tensor]

    public init(kind: MixerKind, tensors: [String: Tensor]) {
        self.kind = kind
        self.tensors = tensors
    }

    public subscript(key: String) -> Tensor? {
        get { tensors[key] }
        set { tensors[key] = newValue }
    }
}

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
    /// no tensor left unused. Errors name the tensor and both shapes.
    public static func load(directory: String) throws -> MambaWeights {
        let config = try MambaConfig.load(directory: directory)
        let store = try TensorStore(directory: directory)
        return try load(store: store, config: config)
    }

    public static func load(store: TensorStore, config c: MambaConfig) throws -> MambaWeights {
        var unused = Set(store.names)
        func take(_ name: String, _ shape: [Int]) throws -> Tensor {
            guard store.contains(name) else {
                throw MambaError(.missingTensor, "checkpoint \(store.directory) lacks tensor \(name) (expected shape \(shapeString(shape)))")
            }
            let view = try store.view(name)
            guard view.shape == shape else {
                throw MambaError(.shapeMismatch, "tensor \(name) has shape \(shapeString(view.shape)), expected \(shapeString(shape)) for this config")
            }
            guard view.dtype.isFloatingPoint else {
                throw MambaError(.dtypeMismatch, "tensor \(name) has dtype \(view.dtype.rawValue); a float checkpoint needs F32, F16 or BF16")
            }
            unused.remove(name)
            return try view.tensor()
        }

        let embeddingName = store.contains(ModelParameter.embedding.name) || !store.contains(ModelParameter.legacyEmbeddingName)
            ? ModelParameter.embedding.name : ModelParameter.legacyEmbeddingName
        let embedding = try take(embeddingName, ModelParameter.embedding.shape(c))
        var layers: [BlockWeights] = []
        for i in 0..<c.numLayers {
            let kind = c.mixer
            let prefix = BlockNames.mixerPrefix(layer: i)
            var tensors: [String: Tensor] = [:]
            for (spec, shape) in kind.spec.presentParameters(c) {
                // The memory shape has the disk shape's element count (a conv's [C, 1, K] is [C, K]).
                tensors[spec.key] = try take(prefix + spec.key, spec.diskShape(c)!).reshaped(shape)
            }
            layers.append(BlockWeights(norm: try take(BlockNames.norm(layer: i), [c.hiddenSize]), mixer: MixerWeights(kind: kind, tensors: tensors)))
        }
        let normF = try take(ModelParameter.normF.name, ModelParameter.normF.shape(c))
        // The head is tied unless the checkpoint carries its own.
        var lmHead: Tensor? = nil
        if store.contains(ModelParameter.lmHead.name) {
            lmHead = try take(ModelParameter.lmHead.name, ModelParameter.lmHead.shape(c))
        } else if !c.tieWordEmbeddings {
            throw MambaError(.missingTensor, "checkpoint \(store.directory) lacks tensor lm_head.weight (tie_word_embeddings is false)")
        }
        if let extra = unused.sorted().first {
            let more = unused.count > 1 ? " (and \(unused.count - 1) more)" : ""
            throw MambaError(.unusedTensor, "checkpoint \(store.directory) has tensor \(extra)\(more), which a \(c.mixer.spec.name) model with this config does not use")
        }
        return MambaWeights(config: c, embedding: embedding, layers: layers, normF: normF, lmHead: lmHead)
    }

    /// The tensors as a Hugging Face checkpoint names them, in a fixed order (for writing).
    public func namedTensors() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = [(ModelParameter.embedding.name, embedding)]
        for (i, l) in layers.enumerated() {
            out.append((BlockNames.norm(layer: i), l.norm))
            let prefix = BlockNames.mixerPrefix(layer: i)
            for (spec, _) in l.mixer.kind.spec.presentParameters(config) {
                guard let t = l.mixer[spec.key] else { continue }
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

/// Float ops over a checkpoint's tensors: the original model.
struct FloatOpSource: MixerOpSource {
    let weights: MixerWeights

    init(_ weights: MixerWeights) { self.weights = weights }

    func linear(_ module: String) -> any LinearOp {
        FloatLinear(weight: tensor(module + ".weight"), bias: weights[module + ".bias"])
    }

    func conv(_ module: String) -> any ConvOp {
        FloatConv(weight: tensor(module + ".weight"), bias: weights[module + ".bias"])
    }

    func tensor(_ key: String) -> Tensor {
        guard let t = weights[key] else { preconditionFailure("\(weights.kind.spec.name) mixer has no tensor \(key)") }
        return t
    }

    func scanInput() -> any ScanInputOp { IdentityScanInput() }
    func gate() -> any GateOp { SiLUGate() }
    func onlineRotation(before module: String) -> OnlineHadamard? { nil }
}
