import CMambaKernels
import Foundation
import MambaModel
import MambaTensors

// The "quantization" object of a quantized checkpoint's config.json (FORMAT.md), written and read by
// the Codable conformances below and nothing else: the recipe's keys, the format version, where the
// checkpoint came from and the transforms applied. Reading checks every value the way quantize's
// flags are checked (a hand-edited or corrupt config must not reach the kernels) and names the key.

/// Where a quantized checkpoint came from (written into its config).
public struct QuantizationProvenance: Sendable, Equatable, Codable {
    public var sourceSHA256: String
    public var statsSHA256: String

    public init(sourceSHA256: String, statsSHA256: String) {
        self.sourceSHA256 = sourceSHA256
        self.statsSHA256 = statsSHA256
    }

    enum CodingKeys: String, CodingKey {
        case sourceSHA256 = "source_sha256", statsSHA256 = "stats_sha256"
    }
}

/// config.json's "quantization" object.
public struct QuantizationObject: Sendable, Equatable, Codable {
    public var formatVersion: Int
    /// One table for the embedding and the head (format 3).
    public var tiedHead: Bool
    /// The mambaquant that wrote it.
    public var toolVersion: String
    public var recipe: QuantizationRecipe
    public var provenance: QuantizationProvenance
    /// The transforms applied, one line each ("layer 0: rotate: ...").
    public var transforms: [String]
    /// The float source's parameter count (its config, a tied head once): what bits per weight
    /// divides by. Absent from checkpoints written before it was recorded.
    public var sourceParameters: Int?

    /// Version 2 packs int4 weights two per byte; w8 checkpoints keep version 1 (nothing in them
    /// changed, so older readers still read them). Version 3 adds a tied source's head-input matrix
    /// (F32) and, with a quantized head, one table for the embedding and the head (`tied_head`).
    /// Version 4 stores some float tensors in F16 (the head-input matrix and A_log, as quantize now
    /// writes them; F32 where their values are not all halves, as in a version 3 file rewritten) and
    /// may give modules their own weight bits (`module_weight_bits`); either would be misread by a
    /// version 3 reader.
    public static func formatVersion(weightBits: Int, headInput: Bool, halfTensors: Bool = false, mixedWidths: Bool = false) -> Int {
        halfTensors || mixedWidths ? 4 : headInput ? 3 : weightBits == 4 ? 2 : 1
    }
    public static let readableVersions = [1, 2, 3, 4]
    /// From this version a float tensor may be stored in F16 (FORMAT.md).
    public static let halfTensorsVersion = 4

    public init(recipe: QuantizationRecipe, transforms: [AppliedTransform], provenance: QuantizationProvenance, headInput: Bool, halfTensors: Bool = false,
                tiedHead: Bool) {
        formatVersion = Self.formatVersion(weightBits: recipe.bits.weight, headInput: headInput, halfTensors: halfTensors, mixedWidths: !recipe.moduleWeightBits.isEmpty)
        self.tiedHead = tiedHead
        toolVersion = MambaQuantVersion.current
        self.recipe = recipe
        self.provenance = provenance
        self.transforms = transforms.map { t in (t.layer.map { "layer \($0): " } ?? "") + t.step + ": " + t.detail }
    }

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", tiedHead = "tied_head", toolVersion = "tool_version", transforms
        case int4Storage = "int4_storage", sourceParameters = "source_parameters"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(formatVersion, forKey: .formatVersion)
        try c.encode(tiedHead, forKey: .tiedHead)
        try c.encode(toolVersion, forKey: .toolVersion)
        try c.encode(transforms, forKey: .transforms)
        try c.encodeIfPresent(sourceParameters, forKey: .sourceParameters)
        try c.encode(recipe.bits.weight == 4 || recipe.moduleWeightBits.values.contains(4) ? "two per byte, low nibble first" : "one value per byte, unpacked", forKey: .int4Storage)
        try recipe.encode(to: encoder)
        try provenance.encode(to: encoder)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let version = try c.integer(.formatVersion)
        guard let version, Self.readableVersions.contains(version) else {
            throw MambaError(.badConfig, "\"quantization\" is format \(version.map(String.init) ?? "none"); this mambaquant reads formats \(Self.readableVersions.map(String.init).joined(separator: ", "))")
        }
        formatVersion = version
        tiedHead = try c.decodeIfPresent(Bool.self, forKey: .tiedHead) ?? false
        toolVersion = try c.decodeIfPresent(String.self, forKey: .toolVersion) ?? ""
        transforms = try c.decodeIfPresent([String].self, forKey: .transforms) ?? []
        sourceParameters = try c.decodeIfPresent(Int.self, forKey: .sourceParameters)
        recipe = try QuantizationRecipe(from: decoder)
        if !recipe.moduleWeightBits.isEmpty && version < 4 {
            throw MambaError(.badConfig, "\"quantization\" has module_weight_bits in format \(version); they need format 4")
        }
        provenance = try QuantizationProvenance(from: decoder)
    }

    /// As config.json holds it.
    public var json: JSONValue {
        get throws { try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(self)) }
    }

    /// From config.json's value; errors name the file and the key.
    public init(json: JSONValue, source: String) throws {
        do {
            self = try JSONDecoder().decode(Self.self, from: JSONEncoder().encode(json))
        } catch let e as MambaError {
            throw MambaError(e.kind, "\(source): \(e.message)")
        } catch let e as DecodingError {
            throw MambaError(.badConfig, "\(source): \"quantization\" \(e.shortDescription)")
        }
    }
}

extension QuantizationRecipe: Codable {
    enum CodingKeys: String, CodingKey {
        case method, weightBits = "weight_bits", activationBits = "activation_bits", groupSize = "group_size"
        case activationScale = "activation_scale", activationBlock = "activation_block", profile, scanScales = "scan_scales"
        case clip = "act_clip", alpha, seed, keptFloat = "kept_float", weightRounding = "weight_rounding", gptq
        case moduleWeightBits = "module_weight_bits"
    }

    enum GPTQKeys: String, CodingKey {
        case dampening, blockSize = "block_size", actOrder = "act_order"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(method, forKey: .method)
        try c.encode(bits.weight, forKey: .weightBits)
        try c.encode(bits.activation, forKey: .activationBits)
        try c.encode(groupSize, forKey: .groupSize)
        try c.encode(activations.name, forKey: .activationScale)
        try c.encode(activations.block, forKey: .activationBlock)
        try c.encode(profile, forKey: .profile)
        try c.encode(scanScales, forKey: .scanScales)
        try c.encode(clip, forKey: .clip)
        try c.encode(alpha, forKey: .alpha)
        try c.encode(seed, forKey: .seed)
        try c.encode(keepFloat.sorted(), forKey: .keptFloat)
        try c.encode(weightRounding, forKey: .weightRounding)
        if !moduleWeightBits.isEmpty { try c.encode(moduleWeightBits, forKey: .moduleWeightBits) }
        if weightRounding == .gptq {
            var g = c.nestedContainer(keyedBy: GPTQKeys.self, forKey: .gptq)
            try g.encode(gptq.dampening, forKey: .dampening)
            try g.encode(gptq.blockSize, forKey: .blockSize)
            try g.encode(gptq.actOrder, forKey: .actOrder)
        } else {
            try c.encodeNil(forKey: .gptq)
        }
    }

    /// Keys absent from older checkpoints take what those checkpoints were made with: rounding to
    /// nearest, the maximum as the clip, static per-tensor scales.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let method = try c.decodeIfPresent(String.self, forKey: .method), let m = QuantizationMethod(rawValue: method),
              let wb = try c.integer(.weightBits), let ab = try c.integer(.activationBits) else {
            throw MambaError(.badConfig, "\"quantization\" lacks method, weight_bits or activation_bits, or names an unknown method")
        }
        let bits: BitWidths
        do { bits = try BitWidths(validating: wb, activation: ab, source: "\"quantization\"") } catch {
            throw MambaError(.badConfig, "\"quantization\" has weight_bits \(wb) and activation_bits \(ab); weight bits 4 or 8 and activation bits 4 to 8 are supported")
        }
        let group = try c.integer(.groupSize)
        if let group, !(1...QuantizationRecipe.maxGroupSize).contains(group) {
            throw MambaError(.badConfig, "\"quantization\" has group_size \(group); it must be in 1...\(QuantizationRecipe.maxGroupSize) or null")
        }
        let seed = try c.integer(.seed) ?? 0
        guard seed >= 0 else { throw MambaError(.badConfig, "\"quantization\" has seed \(seed); it must be non-negative") }
        let scaleName = try c.decodeIfPresent(String.self, forKey: .activationScale) ?? "static"
        let block = try c.integer(.activationBlock)
        guard let activations = ActivationScaling(name: scaleName, block: block ?? 0) else {
            throw MambaError(.badConfig, "\"quantization\" activation_scale must be \"static\", \"dynamic\" or \"block\", found \"\(scaleName)\"")
        }
        if case .perTokenBlocks(let b) = activations, !(b > 0 && b % Int(MQ_S8_KSTEP) == 0 && b <= 1 << 20) {
            throw MambaError(.badConfig, "\"quantization\" activation_block must be a positive multiple of \(MQ_S8_KSTEP) with block scales, found \(block.map(String.init) ?? "none")")
        }
        self.init(method: m, bits: bits, groupSize: group, activations: activations,
                  clip: try c.decodeIfPresent(ActivationClip.self, forKey: .clip) ?? .max, seed: UInt64(seed),
                  keepFloat: Set(try c.decodeIfPresent([String].self, forKey: .keptFloat) ?? []),
                  alpha: try c.decodeIfPresent(Double.self, forKey: .alpha) ?? 0.5)
        scanScales = try c.decodeIfPresent(ScanScales.self, forKey: .scanScales) ?? .tensor
        moduleWeightBits = try c.decodeIfPresent([String: Int].self, forKey: .moduleWeightBits) ?? [:]
        if let (name, b) = moduleWeightBits.first(where: { ![4, 8].contains($0.value) }) {
            throw MambaError(.badConfig, "\"quantization\" module_weight_bits gives \(name) \(b) bits; 4 or 8 are supported")
        }
        profile = try c.decodeIfPresent(QuantizationProfile.self, forKey: .profile)
        weightRounding = try c.decodeIfPresent(WeightRounding.self, forKey: .weightRounding) ?? .rtn
        if weightRounding == .gptq, (try? c.decodeNil(forKey: .gptq)) == false, c.contains(.gptq) {
            let g = try c.nestedContainer(keyedBy: GPTQKeys.self, forKey: .gptq)
            gptq = GPTQ.Options(dampening: try g.decodeIfPresent(Double.self, forKey: .dampening) ?? 0.01,
                                blockSize: try g.integer(.blockSize) ?? 128, actOrder: try g.decodeIfPresent(Bool.self, forKey: .actOrder) ?? true)
            guard gptq.dampening > 0 && gptq.dampening < 1, (1...(1 << 20)).contains(gptq.blockSize) else {
                throw MambaError(.badConfig, "\"quantization\" gptq has dampening \(gptq.dampening) and block_size \(gptq.blockSize); dampening must be in (0, 1) and block_size in 1...\(1 << 20)")
            }
        }
    }
}

extension KeyedDecodingContainer {
    /// A JSON number that must be a whole number in Int's range (nil: absent or null): "2.5" and
    /// "1e300" are refused by key, not truncated or trapped on.
    func integer(_ key: Key) throws -> Int? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        let v = try decode(Double.self, forKey: key)
        guard v.rounded() == v, abs(v) < 9.0e15 else {
            throw MambaError(.badConfig, "\"quantization\" has \(key.stringValue) \(v); it must be an integer")
        }
        return Int(v)
    }
}

extension DecodingError {
    /// One line: the key path and what was wrong there.
    var shortDescription: String {
        func path(_ c: Context) -> String { c.codingPath.map(\.stringValue).joined(separator: ".") }
        switch self {
        case .typeMismatch(let type, let c): return "\(path(c)) is not a \(type)"
        case .valueNotFound(let type, let c): return "\(path(c)) lacks a \(type)"
        case .keyNotFound(let key, let c): return "lacks \((c.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: "."))"
        case .dataCorrupted(let c): return "\(path(c)) holds an unknown value"
        @unknown default: return "is malformed"
        }
    }
}
