import Foundation
import MambaTensors

// Vision Mamba's config: a config.json with "model_type": "vim" and the keyword arguments of
// VisionMamba's constructor (hustvl/Vim vim/models_mamba.py; its defaults are the defaults here),
// as scripts/convert_vim.py writes for the published checkpoints. The blocks are the tool's layers
// (each a norm and a BiMambaMixer, or Mamba-1's mixer under bimamba_type "none"); the tensors
// around them (patch embedding, cls token, position embedding, head) are VisionParameter's.

/// The settings of a Vision Mamba outside its blocks.
public struct VisionSettings: Sendable, Equatable {
    /// Where the cls token sits among the patch tokens (use_middle_cls_token, if_cls_token).
    public enum ClassToken: String, Sendable {
        case middle, head, none
    }

    /// How a model without a cls token pools its last rows (final_pool_type): the last row, the
    /// mean of all rows, or the head on every row and the largest output per class.
    public enum Pool: String, Sendable {
        case last = "none", mean, max
    }

    public var imageHeight: Int
    public var imageWidth: Int
    public var patchSize: Int
    public var stride: Int
    public var channels: Int
    public var classes: Int
    public var classToken: ClassToken
    public var positionEmbedding: Bool
    public var pool: Pool
    /// How image folders become input (config image_mean, image_std, eval_crop_ratio).
    public var preprocess = ImagePreprocess(mean: nil, std: nil, cropRatio: ImagePreprocess.defaultCropRatio)

    /// PatchEmbed's grid: (size - patch) / stride + 1 on each side.
    public var gridHeight: Int { (imageHeight - patchSize) / stride + 1 }
    public var gridWidth: Int { (imageWidth - patchSize) / stride + 1 }
    public var patches: Int { gridHeight * gridWidth }
    /// The sequence the blocks read: the patches and the cls token.
    public var tokens: Int { patches + (classToken == .none ? 0 : 1) }
    /// The cls token's row: M / 2 in the middle (VisionMamba.forward_features), 0 at the head.
    public var classTokenRow: Int? {
        switch classToken {
        case .middle: patches / 2
        case .head: 0
        case .none: nil
        }
    }
    /// One patch's inputs: the patch embedding's [D, C, p, p] weight read as [D, C p p].
    public var patchFeatures: Int { channels * patchSize * patchSize }
    /// Values of one image [C, H, W].
    public var imageValues: Int { channels * imageHeight * imageWidth }

    public var shapeDescription: String { "\(channels)x\(imageHeight)x\(imageWidth)" }
}

/// The tensors of a Vim checkpoint outside its blocks, by their names in Vim's state dict.
public enum VisionParameter: String, CaseIterable, Sendable {
    case patchWeight = "patch_embed.proj.weight"
    case patchBias = "patch_embed.proj.bias"
    case classToken = "cls_token"
    case positionEmbedding = "pos_embed"
    case headWeight = "head.weight"
    case headBias = "head.bias"

    public var name: String { rawValue }

    /// Its shape for a config (nil: the config has none).
    public func shape(_ c: MambaConfig, _ v: VisionSettings) -> [Int]? {
        let d = c.hiddenSize
        switch self {
        case .patchWeight: return [d, v.channels, v.patchSize, v.patchSize]
        case .patchBias: return [d]
        case .classToken: return v.classToken == .none ? nil : [1, 1, d]
        case .positionEmbedding: return v.positionEmbedding ? [1, v.tokens, d] : nil
        case .headWeight: return [v.classes, d]
        case .headBias: return [v.classes]
        }
    }
}

extension CheckpointLayout {
    /// Vim's state dict: layers.N.mixer.*, layers.N.norm.weight and norm_f.weight at the top level.
    public static let vim = CheckpointLayout(roots: [""], embedding: VisionParameter.patchWeight.name, normF: "norm_f.weight", layers: nil)
}

extension MambaConfig {
    /// Vim's features VisionMamba has and this tool does not run, each refused in one line.
    static let vimRefusals: [(key: String, refused: @Sendable (JSONValue) -> Bool, why: String)] = [
        ("if_rope", { $0.bool == true }, "rotary position embedding"),
        ("if_rope_residual", { $0.bool == true }, "rotary position embedding on the residual"),
        ("use_double_cls_token", { $0.bool == true }, "a cls token at each end"),
        ("if_bimamba", { $0.bool == true }, "the v1 bidirectional mixer"),
        ("if_bidirectional", { $0.bool == true }, "layers paired over the reversed sequence"),
        ("init_layer_scale", { !$0.isNull }, "a layer scale (gamma)"),
        ("rms_norm", { $0.bool == false }, "LayerNorm blocks"),
    ]

    /// A Vim config (the constructor's keyword arguments, its defaults where absent).
    static func vim(_ json: [String: JSONValue], source: String) throws -> MambaConfig {
        let r = HybridConfigReader(json: json, source: source)
        for refusal in vimRefusals {
            if let v = json[refusal.key], refusal.refused(v) {
                throw MambaError(.unsupportedModel, "\(source): \(refusal.key) \(v.encodable) (\(refusal.why)) is not supported for Vision Mamba")
            }
        }
        let mixerType = try r.word("bimamba_type", ["v2", "none"], default: "v2")
        let pool = try r.word("final_pool_type", ["none", "mean", "max"], default: "none")
        let ssm = HybridConfigReader(json: json["ssm_cfg"]?.object ?? [:], source: source + " ssm_cfg")
        let (height, width): (Int, Int)
        switch json["img_size"] {
        case .array(let sides)?:
            guard sides.count == 2, let h = sides[0].int, let w = sides[1].int, h > 0, w > 0, h <= 1 << 14, w <= 1 << 14 else {
                throw MambaError(.badConfig, "\(source): img_size must be a positive integer or two (at most \(1 << 14)), found \(JSONValue.array(sides).encodable)")
            }
            (height, width) = (h, w)
        default:
            let side = try r.int(["img_size"], default: 224)
            guard side <= 1 << 14 else { throw MambaError(.badConfig, "\(source): img_size \(side) is beyond what mambaquant supports (at most \(1 << 14))") }
            (height, width) = (side, side)
        }
        let patch = try r.int(["patch_size"], default: 16), stride = try r.int(["stride"], default: patch)
        guard patch <= min(height, width) else {
            throw MambaError(.badConfig, "\(source): patch_size \(patch) is larger than the image (img_size \(height)x\(width))")
        }
        let channels = try r.int(["channels", "in_chans"], default: 3)
        guard channels <= 64 else { throw MambaError(.badConfig, "\(source): channels \(channels) is beyond what mambaquant supports (at most 64)") }
        let classes = try r.int(["num_classes"], default: 1000)
        let hasClassToken = r.bool(["if_cls_token"], default: true)
        var vision = VisionSettings(
            imageHeight: height, imageWidth: width, patchSize: patch, stride: stride, channels: channels, classes: classes,
            classToken: hasClassToken ? (r.bool(["use_middle_cls_token"], default: true) ? .middle : .head) : .none,
            positionEmbedding: r.bool(["if_abs_pos_embed"], default: true), pool: VisionSettings.Pool(rawValue: pool)!)
        vision.preprocess = try imagePreprocess(r, channels: channels)
        guard vision.tokens <= 1 << 20 else { throw MambaError(.badConfig, "\(source): \(vision.tokens) tokens per image is beyond what mambaquant supports") }

        let hidden = try r.int(["embed_dim", "d_model"], default: 192)
        let rankValue = json["ssm_cfg"]?["dt_rank"]
        let rank: Int? = try rankValue.flatMap { v in
            if v.isNull || v.string == "auto" { return nil }
            return try ssm.int(["dt_rank"])
        }
        var config = MambaConfig(
            hiddenSize: hidden, numLayers: try r.int(["depth"], default: 24), stateSize: try r.int(["d_state"], default: 16),
            expand: try ssm.int(["expand"], default: 2), convKernel: try ssm.int(["d_conv"], default: 4), timeStepRank: rank,
            vocabSize: classes, layerNormEpsilon: Float(try r.float(["norm_epsilon"], default: 1e-5)),
            useBias: ssm.bool(["bias"], default: false), useConvBias: ssm.bool(["conv_bias"], default: true), tieWordEmbeddings: false,
            mixer: mixerType == "v2" ? MixerKind(BiMambaMixer(divideOut: r.bool(["if_divide_out", "if_devide_out"], default: true))) : .mamba1)
        guard config.layerNormEpsilon > 0, config.layerNormEpsilon < 1 else {
            throw MambaError(.badConfig, "\(source): norm_epsilon must be in (0, 1), found \(config.layerNormEpsilon)")
        }
        guard config.expand <= 64, config.stateSize <= 1 << 16, config.convKernel <= 1 << 10, config.numLayers <= 1 << 16 else {
            throw MambaError(.badConfig, "\(source): expand, d_state, d_conv or depth is beyond what mambaquant supports")
        }
        config.vision = vision
        config.layout = .vim
        config.json = JSONValue.object(json).encodable.object!
        return config
    }

    /// image_mean and image_std (ImageNet's when absent for 3 channels), eval_crop_ratio.
    private static func imagePreprocess(_ r: HybridConfigReader, channels: Int) throws -> ImagePreprocess {
        func list(_ key: String, positive: Bool) throws -> [Float]? {
            guard let v = r.json[key], !v.isNull else { return nil }
            let values = v.array?.compactMap(\.float).map(Float.init) ?? []
            guard let count = v.array?.count, count == values.count, count == channels || count == 1,
                  values.allSatisfy({ $0.isFinite && (!positive || $0 > 0) }) else {
                throw MambaError(.badConfig, "\(r.source): \(key) must be a list of \(channels) finite\(positive ? " positive" : "") numbers (or one), found \(v.encodable)")
            }
            return values
        }
        let imageNet = channels == 3
        let ratio = try r.float(["eval_crop_ratio"], default: ImagePreprocess.defaultCropRatio)
        guard ratio > 0 else { throw MambaError(.badConfig, "\(r.source): eval_crop_ratio must be positive") }
        return ImagePreprocess(mean: try list("image_mean", positive: false) ?? (imageNet ? ImagePreprocess.imageNetMean : nil),
                               std: try list("image_std", positive: true) ?? (imageNet ? ImagePreprocess.imageNetStd : nil), cropRatio: ratio)
    }
}
