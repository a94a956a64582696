import Foundation
import MambaTensors

/// Float weights of one mixer, in the shapes the forward uses (DESIGN.md section 1).
public struct MixerWeights: Sendable {
    public var inProj: Tensor          // [2E, D]
    public var inProjBias: Tensor?     // [2E]
    public var convWeight: Tensor      // [E, K]
    public var convBias: Tensor?       // [E]
    public var xProj: Tensor           // [R + 2N, E]
    public var dtProj: Tensor          // [E, R]
    public var dtProjBias: Tensor      // [E]
    public var aLog: Tensor            // [E, N]
    public var dSkip: Tensor           // [E]
    public var outProj: Tensor         // [D, E]
    public var outProjBias: Tensor?    // [D]

    public init(
        inProj: Tensor, inProjBias: Tensor?, convWeight: Tensor, convBias: Tensor?, xProj: Tensor, dtProj: Tensor,
        dtProjBias: Tensor, aLog: Tensor, dSkip: Tensor, outProj: Tensor, outProjBias: Tensor?
    ) {
        (self.inProj, self.inProjBias, self.convWeight, self.convBias) = (inProj, inProjBias, convWeight, convBias)
        (self.xProj, self.dtProj, self.dtProjBias) = (xProj, dtProj, dtProjBias)
        (self.aLog, self.dSkip, self.outProj, self.outProjBias) = (aLog, dSkip, outProj, outProjBias)
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

/// All float weights of a Mamba-1 language model.
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
        func block(_ p: BlockParameter, _ layer: Int) throws -> Tensor? {
            guard let shape = p.shape(c) else { return nil }
            return try take(p.name(layer: layer), shape)
        }

        let embeddingName = store.contains(ModelParameter.embedding.name) || !store.contains(ModelParameter.legacyEmbeddingName)
            ? ModelParameter.embedding.name : ModelParameter.legacyEmbeddingName
        let embedding = try take(embeddingName, ModelParameter.embedding.shape(c))
        var layers: [BlockWeights] = []
        for i in 0..<c.numLayers {
            let mixer = MixerWeights(
                inProj: try block(.inProj, i)!, inProjBias: try block(.inProjBias, i),
                convWeight: sanitizeConv(try block(.convWeight, i)!), convBias: try block(.convBias, i),
                xProj: try block(.xProj, i)!, dtProj: try block(.dtProj, i)!, dtProjBias: try block(.dtProjBias, i)!,
                aLog: try block(.aLog, i)!, dSkip: try block(.dSkip, i)!,
                outProj: try block(.outProj, i)!, outProjBias: try block(.outProjBias, i))
            layers.append(BlockWeights(norm: try block(.norm, i)!, mixer: mixer))
        }
        let normF = try take(ModelParameter.normF.name, ModelParameter.normF.shape(c))
        // The head is tied unless the checkpoint carries its own (DESIGN.md section 1).
        var lmHead: Tensor? = nil
        if store.contains(ModelParameter.lmHead.name) {
            lmHead = try take(ModelParameter.lmHead.name, ModelParameter.lmHead.shape(c))
        } else if !c.tieWordEmbeddings {
            throw MambaError(.missingTensor, "checkpoint \(store.directory) lacks tensor lm_head.weight (tie_word_embeddings is false)")
        }
        if let extra = unused.sorted().first {
            let more = unused.count > 1 ? " (and \(unused.count - 1) more)" : ""
            throw MambaError(.unusedTensor, "checkpoint \(store.directory) has tensor \(extra)\(more), which a Mamba-1 model with this config does not use")
        }
        return MambaWeights(config: c, embedding: embedding, layers: layers, normF: normF, lmHead: lmHead)
    }

    /// torch stores the depthwise conv as [E, 1, K]; the forward wants [E, K].
    static func sanitizeConv(_ w: Tensor) -> Tensor { w.reshaped([w.shape[0], w.shape[2]]) }

    /// The tensors as a Hugging Face checkpoint names them, in a fixed order (for writing).
    public func namedTensors() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = [(ModelParameter.embedding.name, embedding)]
        for (i, l) in layers.enumerated() {
            let m = l.mixer
            let entries: [(BlockParameter, Tensor?)] = [
                (.norm, l.norm), (.inProj, m.inProj), (.inProjBias, m.inProjBias),
                (.convWeight, m.convWeight.reshaped([m.convWeight.shape[0], 1, m.convWeight.shape[1]])),
                (.convBias, m.convBias), (.xProj, m.xProj), (.dtProj, m.dtProj), (.dtProjBias, m.dtProjBias),
                (.aLog, m.aLog), (.dSkip, m.dSkip), (.outProj, m.outProj), (.outProjBias, m.outProjBias),
            ]
            for (p, t) in entries { if let t { out.append((p.name(layer: i), t)) } }
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
