import Foundation
import MambaModel
import MambaTensors

/// Writes a quantized checkpoint (FORMAT.md) as its parts are produced: the embedding, each
/// block in layer order, then norm_f, lm_head and config.json. Tensors go to disk as they come
/// (ShardedSafeTensorsWriter: one model.safetensors, or shards with an index past `shardBytes`),
/// into a temporary directory beside the destination that `finish` renames into place, so the
/// destination is absent, the old checkpoint or the whole new one; `abandon` (or any error)
/// removes the temporary directory and leaves an existing destination untouched.
public final class QuantizedCheckpointWriter {
    public let directory: String
    let sourceDirectory: String
    let temp: String
    let tensors: ShardedSafeTensorsWriter
    private(set) public var weightBytes = 0
    /// Whether a float tensor went to disk in F16 (format 4).
    private var wroteHalf = false
    let halfTensors: Bool
    private var finished = false

    /// 5 GB shards, Hugging Face's default.
    public static let defaultShardBytes = 5_000_000_000

    /// With `halfTensors` the head-input matrix and A_log go in F16 (format 4), as the pipeline
    /// rounded them; without, in F32 (a checkpoint of an older format written again).
    public init(directory: String, sourceDirectory: String, shardBytes: Int = defaultShardBytes, halfTensors: Bool = true) throws {
        self.halfTensors = halfTensors
        let fm = FileManager.default
        let url = URL(fileURLWithPath: directory).standardizedFileURL
        let parent = url.deletingLastPathComponent().path
        guard fm.fileExists(atPath: parent) else {
            throw MambaError(.missingFile, "cannot write \(directory): directory \(parent) does not exist")
        }
        if fm.fileExists(atPath: directory) {
            let isQuantized = QuantizedModel.isQuantized(directory: directory)
            let empty = (try? fm.contentsOfDirectory(atPath: directory))?.isEmpty ?? false
            guard isQuantized || empty else {
                throw MambaError(.badInput, "refusing to replace \(directory): it exists and is not a mambaquant quantized checkpoint")
            }
        }
        (self.directory, self.sourceDirectory) = (directory, sourceDirectory)
        temp = parent + "/.\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)"
        TemporaryPaths.sweepStale(beside: directory)
        try? fm.removeItem(atPath: temp)
        TemporaryPaths.register(temp)
        do {
            try fm.createDirectory(atPath: temp, withIntermediateDirectories: false)
        } catch {
            throw MambaError(.io, "cannot create \(temp): \(error.localizedDescription)")
        }
        tensors = ShardedSafeTensorsWriter(directory: temp, shardBytes: shardBytes, metadata: [:])   // set by finish
    }

    deinit { if !finished { abandon() } }

    /// Removes the temporary directory (after an error or an interruption).
    public func abandon() {
        try? FileManager.default.removeItem(atPath: temp)
        TemporaryPaths.unregister(temp)
    }

    /// A float tensor in F16 (format 4) with `halfTensors` where every value is a half, as the
    /// pipeline rounds the head-input matrix and A_log; in F32 otherwise.
    private func addHalfIfExact(_ name: String, _ t: Tensor) throws {
        let half = halfTensors && t.storage.allSatisfy { Float(Float16($0)) == $0 }
        try tensors.add(name, t, as: half ? .f16 : .f32)
        wroteHalf = wroteHalf || half
    }

    /// Integer weights and their scales.
    private func matrix(_ prefix: String, _ q: QuantizedMatrix, shape: [Int]? = nil) throws {
        if q.bits == 4 {
            // Format 2: two per byte along the last axis (FORMAT.md).
            var disk = shape ?? [q.rows, q.cols]
            disk[disk.count - 1] = QuantizedMatrix.packedInt4Columns(disk[disk.count - 1])
            try tensors.add(prefix + ".weight", dtype: .u8, shape: disk, bytes: q.packedInt4)
        } else {
            try tensors.add(prefix + ".weight", shape: shape ?? [q.rows, q.cols], int8s: q.values)
        }
        try tensors.add(prefix + ".weight_scale", shape: q.scaleShape, floats: q.scales)
    }

    /// The static scale of a module's input (none with dynamic scales).
    private func inputScale(_ prefix: String, _ l: QuantizedLayer) throws {
        if let s = l.input?.scale.staticScale { try tensors.add(prefix + ".input_scale", shape: [], floats: [s]) }
    }

    func layer(_ prefix: String, _ l: QuantizedLayer, shape: [Int]? = nil) throws {
        if let q = l.weight {
            try matrix(prefix, q, shape: shape)
            try inputScale(prefix, l)
        } else {
            let t = l.floatWeight!
            try tensors.add(prefix + ".weight", dtype: .f32, shape: shape ?? t.shape, floats: t.storage)
        }
        if let b = l.bias { try tensors.add(prefix + ".bias", b) }
    }

    /// The embedding: int8 per row, or a tied head's table (its bits and groups).
    public func add(embedding e: QuantizedMatrix) throws {
        try matrix(QuantizedNames.embedding, e)
        weightBytes += e.storedBytes
    }

    /// Block `i`'s tensors in its description's order, then its scan-input scales, S-SiLU's s and
    /// the online rotations' signs.
    public func add(block b: QuantizedBlock, layer i: Int, config: MambaConfig) throws {
        let m = b.mixer, p = BlockNames.mixerPrefix(layer: i)
        try tensors.add(BlockNames.norm(layer: i), b.norm ?? Tensor(repeating: 1, shape: [config.hiddenSize]))
        for (spec, _) in m.spec.presentParameters(config) {
            switch spec.role {
            case .weight(let module): try layer(p + module, m.modules[module]!, shape: spec.diskShape(config))
            case .bias: break   // written with its module
            case .vector:
                let t = m.tensors[spec.key]!
                if QuantizedNames.halfVectors.contains(spec.key) { try addHalfIfExact(p + spec.key, t) } else { try tensors.add(p + spec.key, t) }
            }
        }
        for (site, key) in m.spec.scanInputs {
            switch b.scanInputs[site]?.scale {
            case .static(let s)?: try tensors.add(p + key, shape: [], floats: [s])
            case .groups(let g)?: try tensors.add(p + key, shape: [g.count], floats: g)   // per head or group (FORMAT.md)
            default: break
            }
        }
        if let s = m.gateSmoothing { try tensors.add(p + LayerArtifact.gateSmoothing, s) }
        for module in m.spec.modules {
            if let s = m.hadamardSigns(before: module.name) { try tensors.add(p + LayerArtifact.hadamardSigns(module.name), s) }
        }
        weightBytes += b.weightBytes
    }

    /// norm_f (all ones: folded), the head-input matrix, lm_head (only its input scale when tied:
    /// the table was the embedding), config.json with the "quantization" object, the source's
    /// tokenizer files; then the rename into place.
    public func finish(config: MambaConfig, recipe: QuantizationRecipe, lmHead: QuantizedLayer, headInput: Tensor? = nil, tiedHead: Bool = false,
                       transforms: [AppliedTransform], provenance: QuantizationProvenance) throws {
        try tensors.add(QuantizedNames.normF, Tensor(repeating: 1, shape: [config.hiddenSize]))
        weightBytes += 4 * config.hiddenSize
        if let headInput {
            try addHalfIfExact(QuantizedNames.headInput, headInput)
            weightBytes += 4 * headInput.count   // as held in memory, like every count here
        }
        if tiedHead {
            try inputScale(QuantizedNames.lmHead, lmHead)
        } else {
            try layer(QuantizedNames.lmHead, lmHead)
            weightBytes += lmHead.storedBytes
        }
        var object = QuantizationObject(recipe: recipe, transforms: transforms, provenance: provenance, headInput: headInput != nil,
                                        halfTensors: wroteHalf, tiedHead: tiedHead)
        var json = config.json
        json["tie_word_embeddings"] = .bool(tiedHead)
        try finish(config: config, json: json, object: &object)
    }

    /// The tensors of a Vision Mamba outside its blocks (the float patch embedding, cls token and
    /// position embedding in Vim's names and shapes; norm_f all ones; the head quantized or float
    /// with its bias), config.json with the "quantization" object, then the rename into place.
    public func finishVision(_ q: QuantizedVisionMamba, provenance: QuantizationProvenance) throws {
        let c = q.config, v = c.vision!, d = c.hiddenSize
        try tensors.add(VisionParameter.patchWeight.name, q.patchWeight.reshaped([d, v.channels, v.patchSize, v.patchSize]))
        try tensors.add(VisionParameter.patchBias.name, q.patchBias)
        if let t = q.classToken { try tensors.add(VisionParameter.classToken.name, t.reshaped([1, 1, d])) }
        if let t = q.positionEmbedding { try tensors.add(VisionParameter.positionEmbedding.name, t.reshaped([1, v.tokens, d])) }
        try tensors.add(QuantizedNames.normF, Tensor(repeating: 1, shape: [d]))
        try layer(QuantizedVisionMamba.headModule, q.head)
        weightBytes = q.weightBytes + 4 * d
        var object = QuantizationObject(recipe: q.recipe, transforms: q.transforms, provenance: provenance, headInput: false, halfTensors: wroteHalf, tiedHead: false)
        try finish(config: c, json: c.json, object: &object)
    }

    private func finish(config: MambaConfig, json: [String: JSONValue], object: inout QuantizationObject) throws {
        object.sourceParameters = config.parameterCount
        tensors.metadata = QuantizedNames.metadata(formatVersion: object.formatVersion)
        try tensors.finish()
        var json = json
        json["quantization"] = try object.json
        try writeAtomically(try JSONValue.object(json).prettyData(), to: temp + "/" + MambaConfig.fileName)
        let fm = FileManager.default
        for f in QuantizedNames.tokenizerFiles where fm.fileExists(atPath: sourceDirectory + "/" + f) {
            try fm.copyItem(atPath: sourceDirectory + "/" + f, toPath: temp + "/" + f)
        }
        // rename(2), tried first and retried once over an existing checkpoint: no check-then-act
        // window, and a run that loses a race with another one writing the same --out says so in
        // one line (FileManager.moveItem printed an NSCocoaErrorDomain dump).
        func failure(_ what: String) -> MambaError {
            let code = errno
            let race = code == EEXIST || code == ENOTEMPTY || code == ENOENT ? " (another run wrote \(directory) at the same time?)" : ""
            return MambaError(.io, "cannot \(what): \(String(cString: strerror(code)))\(race)")
        }
        if rename(temp, directory) != 0 {
            guard errno == EEXIST || errno == ENOTEMPTY else { throw failure("move the finished checkpoint to \(directory)") }
            let old = temp + ".old"
            guard rename(directory, old) == 0 else { throw failure("move the previous \(directory) aside") }
            guard rename(temp, directory) == 0 else { throw failure("move the finished checkpoint to \(directory)") }
            try? fm.removeItem(atPath: old)
        }
        TemporaryPaths.unregister(temp)
        finished = true
    }
}

extension QuantizedModel {
    /// Writes the checkpoint directory (QuantizedCheckpointWriter).
    public func write(directory: String, sourceDirectory: String, provenance: QuantizationProvenance,
                      shardBytes: Int = QuantizedCheckpointWriter.defaultShardBytes) throws {
        let w = try QuantizedCheckpointWriter(directory: directory, sourceDirectory: sourceDirectory, shardBytes: shardBytes, halfTensors: halfTensors)
        do {
            // A tied table goes after the blocks, as `stream` hands it out.
            if !tiedHead { try w.add(embedding: embedding) }
            for (i, b) in blocks.enumerated() { try w.add(block: b, layer: i, config: config) }
            if tiedHead { try w.add(embedding: embedding) }
            try w.finish(config: config, recipe: recipe, lmHead: lmHead, headInput: headInput, tiedHead: tiedHead, transforms: transforms, provenance: provenance)
        } catch {
            w.abandon()
            throw error
        }
    }
}
