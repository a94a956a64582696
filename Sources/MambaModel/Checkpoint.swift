import Foundation
import MambaTensors

/// What a checkpoint directory is, for `inspect` and for commands that find their model.
public struct CheckpointSummary: Sendable, Encodable {
    public struct TensorInfo: Sendable, Encodable {
        public let name: String
        public let dtype: String
        public let shape: [Int]
        public let bytes: Int
    }
    public let directory: String
    public let modelType: String
    /// The mixer family the layers run ("mamba1", "falcon_mamba"; kinds joined by "+" for a mix).
    public let family: String
    /// Settings taken from defaults rather than config.json.
    public let notes: [String]
    public let hiddenSize, numLayers, innerSize, stateSize, timeStepRank, convKernel, vocabSize: Int
    /// The mixer's own settings (MixerDescription.settings).
    public let mixerSettings: String
    public let tiedHead: Bool
    public let parameters: Int
    public let bytesOnDisk: Int
    /// The float model's parameter count (from the config: a quantized checkpoint's source's).
    public let modelParameters: Int
    /// 8 x the safetensors bytes (every tensor, scales and float-kept modules, headers included) /
    /// the float model's parameters: the size a user compares across formats (a GGUF's the same way).
    public let bitsPerWeight: Double
    public let tensors: [TensorInfo]
    public let tokenizer: String?
    public let tokenizerVocabSize: Int?
    public let quantization: JSONValue?
    /// A Vision Mamba's image settings in a few words (nil: a language model).
    public let vision: String?

    public static func describe(directory: String) throws -> CheckpointSummary {
        let config = try MambaConfig.load(directory: directory)
        let store = try TensorStore(directory: directory)
        let tensors = try store.names.map { name in
            let v = try store.view(name)
            return TensorInfo(name: name, dtype: v.dtype.rawValue, shape: v.shape, bytes: v.bytes.count)
        }
        let tokenizerPath = directory + "/" + Tokenizer.fileName
        let tokenizer = FileManager.default.fileExists(atPath: tokenizerPath) ? try Tokenizer(contentsOf: tokenizerPath) : nil
        let isQuantized = config.json["quantization"] != nil
        let modelParameters = floatParameters(config)
        return CheckpointSummary(
            directory: directory,
            modelType: config.json["model_type"]?.string ?? "mamba (state-spaces config)",
            family: config.family, notes: config.structureNotes + config.defaultedSettings,
            hiddenSize: config.hiddenSize, numLayers: config.numLayers, innerSize: config.innerSize,
            stateSize: config.stateSize, timeStepRank: config.timeStepRank, convKernel: config.convKernel,
            vocabSize: config.vocabSize, mixerSettings: config.distinctKinds.map { $0.spec.settings(config) }.joined(separator: "; "),
            tiedHead: !tensors.contains { $0.name == ModelParameter.lmHead.name },
            // Scales and other side tensors of a quantized checkpoint are not parameters.
            parameters: tensors.filter { !isQuantized || !$0.name.hasSuffix("_scale") }.reduce(0) { $0 + $1.shape.reduce(1, *) },
            bytesOnDisk: store.bytesOnDisk, modelParameters: modelParameters,
            bitsPerWeight: 8 * Double(store.bytesOnDisk) / Double(max(1, modelParameters)), tensors: tensors,
            tokenizer: tokenizer == nil ? nil : tokenizerPath, tokenizerVocabSize: tokenizer?.vocabSize,
            quantization: config.json["quantization"],
            vision: config.vision.map { v in
                "images \(v.shapeDescription), patch \(v.patchSize) stride \(v.stride), \(v.tokens) tokens, cls token \(v.classToken.rawValue)"
                    + (v.classToken == .none ? ", \(v.pool == .last ? "last row" : v.pool.rawValue) pooling" : "") + ", \(v.classes) classes"
            })
    }
}

/// The float model's parameters: a quantized checkpoint records its source's (`source_parameters`;
/// its own config may say untied where the source was tied). One written before that was recorded
/// counts from its config, so a tied source whose head was stored apart counts the head twice.
func floatParameters(_ config: MambaConfig) -> Int {
    config.json["quantization"]?["source_parameters"]?.int ?? config.parameterCount
}

/// Loads `directory/tokenizer.json` when the checkpoint has one (a checkpoint without one still
/// runs from token ids).
public func loadTokenizer(modelDirectory: String) throws -> Tokenizer? {
    let path = modelDirectory + "/" + Tokenizer.fileName
    guard FileManager.default.fileExists(atPath: path) else { return nil }
    return try Tokenizer(contentsOf: path)
}
