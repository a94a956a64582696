import MambaModel
import MambaTensors

/// The four methods of docs/DESIGN.md section 2's table, run by the same pipeline.
public enum QuantizationMethod: String, CaseIterable, Sendable, Codable {
    case rtn, smoothquant, hadamard, mambaquant
}

/// `--bits wXaY`: X in {4, 8} weight bits, Y in 4...8 activation bits.
public struct BitWidths: Sendable, Equatable, CustomStringConvertible {
    public let weight: Int
    public let activation: Int

    public init(weight: Int, activation: Int) {
        self.weight = weight
        self.activation = activation
    }

    /// The widths the kernels take, or a refusal naming the one that is not.
    public init(validating weight: Int, activation: Int, source: String) throws {
        guard [4, 8].contains(weight) else { throw MambaError(.badInput, "weight bits \(weight) in \(source): 4 or 8 are supported") }
        guard (4...8).contains(activation) else { throw MambaError(.badInput, "activation bits \(activation) in \(source): 4 to 8 are supported") }
        self.init(weight: weight, activation: activation)
    }

    public init(parsing text: String) throws {
        let t = text.lowercased()
        guard t.hasPrefix("w"), let a = t.firstIndex(of: "a"),
              let w = Int(t[t.index(after: t.startIndex)..<a]), let x = Int(t[t.index(after: a)...]) else {
            throw MambaError(.badInput, "bits \"\(text)\" is not of the form wXaY (e.g. w8a8, w4a8, w8a6)")
        }
        try self.init(validating: w, activation: x, source: "\"\(text)\"")
    }

    public var description: String { "w\(weight)a\(activation)" }
}

/// How the recipe scales activations at every quantized site (each site's own scale is an
/// ActivationScale).
public enum ActivationScaling: Sendable, Equatable {
    /// A static scale per tensor from the second calibration pass's clip (the paper's setting).
    case calibrated
    /// One scale per token, at run time.
    case perToken
    /// One scale per token and block of this many input columns, at run time (llama.cpp Q8_0's 32).
    case perTokenBlocks(Int)

    /// The block of `--act-scale block`.
    public static let defaultBlock = 32

    /// The word config.json and `--act-scale` use: static, dynamic or block.
    public var name: String {
        switch self {
        case .calibrated: "static"
        case .perToken: "dynamic"
        case .perTokenBlocks: "block"
        }
    }

    /// From its word (a block's size given apart).
    public init?(name: String, block: Int = defaultBlock) {
        switch name {
        case "static": self = .calibrated
        case "dynamic": self = .perToken
        case "block": self = .perTokenBlocks(block)
        default: return nil
        }
    }

    public var isDynamic: Bool { self != .calibrated }

    /// The block size of `.perTokenBlocks`.
    public var block: Int? {
        if case .perTokenBlocks(let b) = self { return b }
        return nil
    }

    /// Every site's run-time scale (nil: each site's calibrated one).
    public var runtimeScale: ActivationScale? {
        switch self {
        case .calibrated: nil
        case .perToken: .dynamic
        case .perTokenBlocks(let b): .dynamicBlocks(b)
        }
    }
}

/// Static scan-input scales: one per tensor, or one per channel group where the mixer has groups
/// (Mamba-2: per head for x and dt, per group for B and C).
public enum ScanScales: String, CaseIterable, Sendable, Codable {
    case tensor, group
}

/// Where static activation scales clip: the maximum seen in calibration or a percentile of |x|.
/// The default, p99.99, was the best or within 0.004 bits of the best for mambaquant and rtn at
/// w8a8 and w8a6 on the bundled model's validation split (README, "Choosing the clip").
public enum ActivationClip: String, CaseIterable, Sendable, Codable {
    case max, p99_9 = "p99.9", p99_99 = "p99.99", p99_999 = "p99.999"

    /// The quantile (nil for the maximum).
    public var quantile: Double? {
        switch self {
        case .max: nil
        case .p99_9: 0.999
        case .p99_99: 0.9999
        case .p99_999: 0.99999
        }
    }
}

/// Everything that decides a quantized checkpoint besides its inputs.
/// Named recipes (`quantize --profile`, `bench --profile`), chosen from the error budget
/// (`compare --budget`; README "Choosing a recipe"). Explicit flags override a profile's settings.
public enum QuantizationProfile: String, CaseIterable, Sendable, Codable {
    /// Static per-tensor activation scales, every site quantized: the MambaQuant paper's setting,
    /// the fastest.
    case fast
    /// The cheapest combination that met llama.cpp Q8_0's accuracy on the bundled model (KL <=
    /// 0.00008, top-1 >= 99.4% on the test split): dynamic per-token activation scales, and the
    /// modules llama.cpp leaves in float (x_proj, dt_proj, the conv: all but in_proj and out_proj)
    /// and the SSM inputs kept float. Measured: KL 0.00005, top-1 99.54% (fast: 0.00059, 98.72%).
    case accurate
    /// Accurate's dynamic per-token scales with only the convs and the scan inputs float (x_proj and
    /// dt_proj int8): on the bundled model KL 0.000069 in 6.47 MB against llama.cpp Q8_0's 0.000080
    /// in 6.68 MB, where accurate spends 7.56 MB for 0.000051 (README "Size against accuracy").
    case compact

    /// What the compact profile keeps in float: every depthwise conv and the scan inputs.
    public static func compactFloatSet(_ kinds: [MixerKind]) -> Set<String> {
        Set(kinds.flatMap { $0.spec.modules.filter { $0.kind == .depthwiseConv }.map(\.name) } + [QuantizationRecipe.allScanInputs])
    }

    /// What the accurate profile keeps in float on these layer kinds: every module that neither
    /// reads nor writes the residual stream (on Mamba all but in_proj and out_proj) and the scan inputs.
    public static func floatSet(_ kinds: [MixerKind]) -> Set<String> {
        Set(kinds.flatMap { k in
            let spec = k.spec, residual = Set(spec.residualReaders + spec.residualWriters)
            return spec.modules.map(\.name).filter { !residual.contains($0) }
        } + [QuantizationRecipe.allScanInputs])
    }

    /// The profile's settings on top of `recipe` (method, bits and seed are the caller's).
    public func apply(to recipe: inout QuantizationRecipe, config: MambaConfig) {
        recipe.profile = self
        switch self {
        case .fast:
            recipe.activations = .calibrated
            recipe.keepFloat = []
        case .accurate:
            recipe.activations = .perToken
            recipe.keepFloat = Self.floatSet(config.distinctKinds)
        case .compact:
            recipe.activations = .perToken
            recipe.keepFloat = Self.compactFloatSet(config.distinctKinds)
        }
    }
}

/// How weights are rounded onto their scales: to nearest (with the clip search at <= 4 bits), or by
/// GPTQ against each linear's input Hessian from the second pass (GPTQ.swift).
public enum WeightRounding: String, CaseIterable, Sendable, Codable {
    case rtn, gptq

    /// The default per weight width, by measurement on the bundled model (README "GPTQ").
    public static func defaultFor(weightBits: Int) -> WeightRounding { weightBits <= 4 ? .gptq : .rtn }
}

public struct QuantizationRecipe: Sendable, Equatable {
    public var method: QuantizationMethod
    public var bits: BitWidths
    public var groupSize: Int?
    public var activations: ActivationScaling
    public var clip: ActivationClip
    public var seed: UInt64
    /// What stays in float: module names ("lm_head", "backbone.layers.0.mixer.out_proj"), a
    /// module's short name for every layer ("x_proj"), "ssm_inputs" for every scan input, or one
    /// scan input in every layer ("ssm_inputs.dt"; the sites are the mixer's scan inputs).
    public var keepFloat: Set<String>
    /// SmoothQuant's migration strength.
    public var alpha: Double
    public var scanScales: ScanScales = .tensor
    /// The named profile the recipe came from (nil: flags only).
    public var profile: QuantizationProfile?
    /// Rounding of the linears' weights (the conv's and the embedding's are always to nearest).
    public var weightRounding: WeightRounding
    /// GPTQ's dampening, block size and column order: act-order by default (on the bundled model,
    /// all text, mambaquant w4a8: KL 0.00986 against 0.01033 in natural order; README "4-bit weights").
    public var gptq = GPTQ.Options(actOrder: true)
    /// Weight bits of single modules where they differ from `bits.weight`, by full name
    /// ("backbone.layers.3.mixer.in_proj", "lm_head": a tied table goes by the head's): the mixed
    /// widths `quantize --bits-per-weight` chooses (WidthAllocation.swift).
    public var moduleWeightBits: [String: Int] = [:]

    /// The weight bits of the module `name` (full name).
    public func weightBits(module name: String) -> Int { moduleWeightBits[name] ?? bits.weight }

    /// The activation scale of every quantized site (nil: each site's calibrated one).
    public var activationScale: ActivationScale? { activations.runtimeScale }

    /// Everything but the method, bits and seed, in words: what tells two checkpoints of one method
    /// and bit width apart (compare's rows carry it).
    public var settings: String {
        let scaling = switch activations {
        case .calibrated: "static activation scales (clip \(clip.rawValue))"
        case .perToken: "dynamic per-token activation scales"
        case .perTokenBlocks(let b): "dynamic activation scales per token and block of \(b)"
        }
        var parts = [scaling, groupSize.map { "weight groups of \($0)" } ?? "per-channel weights"]
        if !keepFloat.isEmpty { parts.append("kept float: " + keepFloat.sorted().joined(separator: ", ")) }
        if method == .smoothquant || method == .mambaquant { parts.append("alpha \(alpha)") }
        if scanScales == .group { parts.append("scan-input scales per head and group") }
        if !moduleWeightBits.isEmpty { parts.append(mixedWidths) }
        parts.append(weightRounding == .gptq ? "GPTQ weights (dampening \(gptq.dampening), \(gptq.actOrder ? "act-order" : "natural order"))" : "weights rounded to nearest")
        if let profile { parts.insert("profile \(profile.rawValue)", at: 0) }
        return parts.joined(separator: "; ")
    }

    /// The settings that differ from the defaults, short (empty for the default recipe).
    public var tag: String {
        let d = QuantizationRecipe(method: method, bits: bits)
        var parts: [String] = []
        if let profile { parts.append(profile.rawValue) }
        switch activations {
        case .perToken: parts.append("dynamic")
        case .perTokenBlocks(let b): parts.append("act blocks \(b)")
        case .calibrated: if clip != d.clip { parts.append("clip \(clip.rawValue)") }
        }
        if let g = groupSize { parts.append("g\(g)") }
        if !keepFloat.isEmpty { parts.append("float " + keepFloat.sorted().map { $0.split(separator: ".").suffix(2).joined(separator: ".") }.joined(separator: ",")) }
        if alpha != d.alpha && (method == .smoothquant || method == .mambaquant) { parts.append("alpha \(alpha)") }
        if scanScales == .group { parts.append("scan groups") }
        if !moduleWeightBits.isEmpty { parts.append(mixedWidths) }
        if weightRounding != d.weightRounding { parts.append(weightRounding.rawValue) }
        if weightRounding == .gptq && gptq != d.gptq { parts.append("damp \(gptq.dampening), \(gptq.actOrder ? "act-order" : "natural order")") }
        return parts.joined(separator: ", ")
    }

    /// The mixed widths in words: how many modules at which bits.
    var mixedWidths: String {
        Dictionary(grouping: moduleWeightBits.values, by: { $0 }).sorted { $0.key < $1.key }
            .map { "\($0.value.count) module\($0.value.count == 1 ? "" : "s") at \($0.key) bits" }.joined(separator: ", ")
    }

    /// Whether the module `name` (full name: lm_head or backbone.layers.N.mixer.MODULE) stays float.
    public func keepsFloat(module name: String) -> Bool {
        // A module's name inside its mixer ("x_proj", "experts.3.down_proj"), its last part,
        // and its every-expert group ("experts.*.down_proj"); Vim's backward-branch modules
        // (conv1d_b, x_proj_b, dt_proj_b: BiMambaMixer.swift) also go by their forward twin's name.
        let inMixer = name.range(of: ".mixer.").map { String(name[$0.upperBound...]) } ?? name
        let short = String(name.split(separator: ".").last ?? "")
        let twin = Self.forwardTwin(of: short)
        return keepFloat.contains(name) || keepFloat.contains(inMixer) || keepFloat.contains(MoEMixer.group(of: inMixer))
            || keepFloat.contains(short) || Self.alwaysFloat.contains(short) || twin.map(keepFloat.contains) == true
    }

    /// The forward module a Vim backward-branch module goes by ("x_proj" for "x_proj_b"), else nil.
    public static func forwardTwin(of module: String) -> String? { module.hasSuffix("_b") ? String(module.dropLast(2)) : nil }

    /// Modules no recipe quantizes: a mixture-of-experts router (MoEMixer.swift) picks experts by
    /// comparing its logits, and 8-bit rounding of them flips choices, each flip a different
    /// expert's whole output (QuaRot and SpinQuant leave it alone for the same reason).
    public static let alwaysFloat: Set<String> = ["router"]

    /// Whether a scan input stays float (no quantize-dequantize before the recurrence).
    public func keepsFloat(scanInput site: Site) -> Bool {
        keepFloat.contains(Self.allScanInputs) || keepFloat.contains(Self.scanInputName(site))
    }

    public static let allScanInputs = "ssm_inputs"
    /// The largest weight group (`--group-size`, group_size): far past any K, and small enough
    /// that every product of it with a shape stays inside Int32, which the kernels index with.
    public static let maxGroupSize = 1 << 16
    public static func scanInputName(_ site: Site) -> String { "\(allScanInputs).\(site.rawValue)" }

    public init(method: QuantizationMethod, bits: BitWidths = BitWidths(weight: 8, activation: 8), groupSize: Int? = nil,
                activations: ActivationScaling = .calibrated, clip: ActivationClip = .p99_99, seed: UInt64 = 0, keepFloat: Set<String> = [],
                alpha: Double = 0.5) {
        self.method = method; self.bits = bits; self.groupSize = groupSize; self.activations = activations
        self.clip = clip; self.seed = seed; self.keepFloat = keepFloat; self.alpha = alpha
        weightRounding = .defaultFor(weightBits: bits.weight)
    }
}
