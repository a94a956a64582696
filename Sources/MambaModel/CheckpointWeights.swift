import CMambaKernels
import Foundation
import MambaTensors

/// A float checkpoint opened without reading its weights: every tensor's presence, shape and dtype
/// is checked against the config and its mixer descriptions at open, the data stays memory-mapped
/// in the file's dtype (F32, F16, BF16), and a part is widened to float32 only when asked for, so
/// a pipeline that works a layer at a time never holds the whole model in a wider type than its
/// file.
public final class CheckpointWeights: @unchecked Sendable {
    public let config: MambaConfig
    public let store: TensorStore
    private let embeddingName: String
    /// The prefix of the model's own tensors in this file: "backbone." (Mamba, and the hub's
    /// Nemotron-H), or "model." (what transformers 5 writes for Nemotron-H; Bamba, Granite). Names
    /// inside the tool are "backbone."'s; `fileName` maps them through the config's layout.
    public let root: String
    /// false when the checkpoint carries its own lm_head.weight.
    public let tiedHead: Bool
    /// The tensors a family keeps under another name or stacked (ParameterSpec.file): tool name ->
    /// the file's tensor and the entry of its first dimension.
    private let sources: [String: (name: String, entry: Int?)]

    public convenience init(directory: String) throws {
        let config = try MambaConfig.load(directory: directory)
        try self.init(store: try TensorStore(directory: directory), config: config)
    }

    /// Checks every name, shape and dtype (no data is read); errors name the tensor and both shapes.
    public init(store: TensorStore, config c: MambaConfig) throws {
        (self.store, self.config) = (store, c)
        let root = c.layout.roots.first { store.contains($0 + c.layout.embedding) } ?? c.layout.roots[0]
        self.root = root
        var unused = Set(store.names)
        var sources: [String: (name: String, entry: Int?)] = [:]
        for i in 0..<c.numLayers {
            let prefix = BlockNames.mixerPrefix(layer: i)
            for spec in c.mixer(layer: i).parameters {
                if let f = spec.file { sources[prefix + spec.key] = (c.layout.fileName(prefix + f.key, root: root), f.stacked?.index) }
            }
        }
        self.sources = sources
        func check(_ canonical: String, _ partShape: [Int], stackedIn count: Int? = nil) throws {
            let name = sources[canonical]?.name ?? c.layout.fileName(canonical, root: root)
            let shape = count.map { [$0] + partShape } ?? partShape
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
        }
        if let v = c.vision {
            // Vim's tensors around the blocks (VisionParameter); its head is its own, with a bias.
            embeddingName = VisionParameter.patchWeight.name
            for p in VisionParameter.allCases { if let shape = p.shape(c, v) { try check(p.name, shape) } }
        } else {
            embeddingName = root != "backbone." || store.contains(ModelParameter.embedding.name) || !store.contains(ModelParameter.legacyEmbeddingName)
                ? ModelParameter.embedding.name : ModelParameter.legacyEmbeddingName
            try check(embeddingName, ModelParameter.embedding.shape(c))
        }
        for i in 0..<c.numLayers {
            let prefix = BlockNames.mixerPrefix(layer: i)
            for (spec, _) in c.mixer(layer: i).presentParameters(c) { try check(prefix + spec.key, spec.diskShape(c)!, stackedIn: spec.file?.stacked?.count) }
            try check(BlockNames.norm(layer: i), [c.hiddenSize])
        }
        try check(ModelParameter.normF.name, ModelParameter.normF.shape(c))
        // The head is tied unless the checkpoint carries its own.
        if c.vision != nil {
            tiedHead = false
        } else {
            if store.contains(ModelParameter.lmHead.name) {
                try check(ModelParameter.lmHead.name, ModelParameter.lmHead.shape(c))
            } else if !c.tieWordEmbeddings {
                throw MambaError(.missingTensor, "checkpoint \(store.directory) lacks tensor lm_head.weight (tie_word_embeddings is false)")
            }
            tiedHead = !store.contains(ModelParameter.lmHead.name)
        }
        if let extra = unused.sorted().first {
            let more = unused.count > 1 ? " (and \(unused.count - 1) more)" : ""
            throw MambaError(.unusedTensor, "checkpoint \(store.directory) has tensor \(extra)\(more), which a \(c.family) model with this config does not use")
        }
    }

    /// The name a tool-side ("backbone.") name has in this file (a stacked tensor's whole name).
    public func fileName(_ canonical: String) -> String { sources[canonical]?.name ?? config.layout.fileName(canonical, root: root) }

    /// The file's data for a tool-side name: the tensor, or its entry of a stacked one.
    private func view(_ canonical: String) throws -> TensorView {
        let view = try store.view(fileName(canonical))
        return sources[canonical]?.entry.map { view.slice($0) } ?? view
    }

    /// One tensor widened to float32, refused when it holds NaN or Inf (a corrupt or diverged
    /// checkpoint would otherwise run and print NaN).
    public func tensor(_ canonical: String) throws -> Tensor {
        let view = try view(canonical)
        let name = view.name
        let t = try view.tensor()
        view.releasePages()
        if let bad = t.storage.firstIndex(where: { !$0.isFinite }) { throw nonFinite(name, t.storage[bad], at: bad) }
        return t
    }

    /// A 2-D tensor kept in its 16-bit type (nil when the file stores it in another one), refused
    /// when it holds NaN or Inf.
    public func halfMatrix(_ canonical: String) throws -> HalfMatrix? {
        let view = try view(canonical)
        let name = view.name
        guard let format = HalfFormat(view.dtype), view.shape.count == 2 else { return nil }
        // Copied bytewise: a tensor's offset in the file need not be 2-byte aligned.
        let bits = [UInt16](unsafeUninitializedCapacity: view.count) { buffer, initialized in
            if view.count > 0 { UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(from: view.bytes.baseAddress!, byteCount: 2 * view.count) }
            initialized = view.count
        }
        view.releasePages()
        let bad = bits.withUnsafeBufferPointer { mq_first_nonfinite_half($0.baseAddress, format.kernelFormat, $0.count) }
        if bad < bits.count { throw nonFinite(name, HalfMatrix(format: format, rows: 1, cols: 1, bits: [bits[bad]]).widened().storage[0], at: bad) }
        return HalfMatrix(format: format, rows: view.shape[0], cols: view.shape[1], bits: bits)
    }

    /// A matrix as the float runtime holds it: 16-bit in place, anything else widened.
    public func storedMatrix(_ name: String) throws -> StoredMatrix {
        if let h = try halfMatrix(name) { return .half(h) }
        return .float(try tensor(name))
    }

    /// The bytes the float runtime holds for this checkpoint: 16-bit matrices as stored, every
    /// other tensor (vectors, the conv's [C, 1, K], F32 matrices) in float32.
    public var runtimeBytes: Int {
        let stacked = Set(sources.values.filter { $0.entry != nil }.map(\.name))
        return (try? store.names.reduce(0) { total, name in
            let v = try store.view(name)
            let matrix = v.shape.count == 2 || stacked.contains(name)
            return total + (HalfFormat(v.dtype) != nil && matrix ? 2 : 4) * v.count
        }) ?? 0
    }

    /// The runtime's weight type: "float32", or the 16-bit type its matrices keep.
    public var runtimeWeightType: String {
        (try? store.view(fileName(embeddingName))).flatMap { HalfFormat($0.dtype)?.dtype.rawValue.lowercased() } ?? "float32"
    }

    /// A corrupt or diverged checkpoint would otherwise run and print NaN.
    private func nonFinite(_ name: String, _ value: Float, at index: Int) -> MambaError {
        MambaError(.badFile, "tensor \(name) of \(store.directory) holds \(value) at index \(index): the checkpoint's weights must be finite")
    }

    public func readEmbedding() throws -> Tensor {
        try requireLanguageModel()
        return try tensor(embeddingName)
    }
    public func readStoredEmbedding() throws -> StoredMatrix {
        try requireLanguageModel()
        return try storedMatrix(embeddingName)
    }

    /// Every language-model path reads the embedding first: a Vim checkpoint is refused there.
    private func requireLanguageModel() throws {
        guard config.vision == nil else {
            throw MambaError(.unsupportedModel, "\(store.directory) is a Vision Mamba (model_type vim), not a language model: `mambaquant classify` runs it")
        }
    }
    /// nil when tied to the embedding.
    public func readStoredLMHead() throws -> StoredMatrix? { tiedHead ? nil : try storedMatrix(ModelParameter.lmHead.name) }

    /// Layer `i` as the float runtime holds it: its linear modules' weights 16-bit in place, every
    /// other tensor widened to float32.
    public func readStoredLayer(_ i: Int) throws -> BlockWeights { try readLayer(i, keepHalf: true) }
    public func readNormF() throws -> Tensor { try tensor(ModelParameter.normF.name) }
    /// nil when tied to the embedding.
    public func readLMHead() throws -> Tensor? { tiedHead ? nil : try tensor(ModelParameter.lmHead.name) }

    /// Layer `i`'s norm and mixer tensors in float32 (a depthwise conv's weight as [C, K]).
    public func readLayer(_ i: Int) throws -> BlockWeights { try readLayer(i, keepHalf: false) }

    private func readLayer(_ i: Int, keepHalf: Bool) throws -> BlockWeights {
        let prefix = BlockNames.mixerPrefix(layer: i)
        let kind = config.layerKinds[i]
        var keyed: [String: Tensor] = [:], half: [String: StoredMatrix] = [:]
        for (p, shape) in kind.spec.presentParameters(config) {
            if keepHalf, case .weight(let m) = p.role, kind.spec.module(m)?.kind == .linear, let h = try halfMatrix(prefix + p.key) {
                half[m] = .half(h)
            } else {
                keyed[p.key] = try tensor(prefix + p.key).reshaped(shape)
            }
        }
        var mixer = MixerWeights(kind: kind, keyed: keyed)
        for (m, w) in half { mixer.modules[m, default: FloatModule(weight: w, bias: nil)].weight = w }
        return BlockWeights(norm: try tensor(BlockNames.norm(layer: i)), mixer: mixer)
    }

    /// Every tensor widened (small models, and tests). Refused up front when the float32 copy
    /// cannot fit in MemAvailable: the layer-at-a-time commands (calibrate, quantize) and the
    /// int8 model need far less.
    public func all(available: Double? = SystemMemory.available()) throws -> MambaWeights {
        let need = 4 * Double(config.parameterCount)
        if let available, need > available {
            throw MambaError(.outOfMemory, "the float model of \(store.directory) needs \(gigabytes(need)) in float32 (\(gigabytes(Double(bytesOnDisk))) on disk) but \(gigabytes(available)) is available (\(SystemMemory.availableSource())): calibrate and quantize it, which work a layer at a time, and run the int8 model")
        }
        return MambaWeights(config: config, embedding: try readEmbedding(), layers: try (0..<config.numLayers).map(readLayer),
                     normF: try readNormF(), lmHead: try readLMHead())
    }

    /// Parameters (the tied head counted once) and bytes of the weights as stored.
    public var parameterCount: Int { (try? store.names.reduce(0) { $0 + (try store.view($1)).count }) ?? 0 }
    public var bytesOnDisk: Int { store.bytesOnDisk }
}

/// Float weights a part at a time: a memory-mapped checkpoint (CheckpointWeights) or weights
/// already in memory (MambaWeights).
public protocol WeightSource {
    var config: MambaConfig { get }
    func readEmbedding() throws -> Tensor
    func readLayer(_ i: Int) throws -> BlockWeights
    func readNormF() throws -> Tensor
    /// nil when tied to the embedding.
    func readLMHead() throws -> Tensor?
}

extension CheckpointWeights: WeightSource {}

extension MambaWeights: WeightSource {
    public func readEmbedding() throws -> Tensor { embedding }
    public func readLayer(_ i: Int) throws -> BlockWeights { layers[i] }
    public func readNormF() throws -> Tensor { normF }
    public func readLMHead() throws -> Tensor? { lmHead }
}
