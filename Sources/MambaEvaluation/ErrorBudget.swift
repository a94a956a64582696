import MambaModel
import MambaQuantization

/// The error budget of `compare --budget` (docs/DESIGN.md section 2, "Choosing a recipe"): which
/// quantization site and which family of choices costs how much accuracy, each as a recipe that
/// compare evaluates against the float model like any other row.
public enum ErrorBudget {
    /// A named variant and what it isolates.
    public struct Variant: Sendable {
        public let name: String
        public let recipe: QuantizationRecipe
    }

    /// The variants for `method` at `bits` on this model's layer kinds: the baseline (static per-tensor scales,
    /// everything quantized: the paper's setting and `--profile fast`), each site alone (every
    /// other module and scan input float; the embedding table is 8-bit in every row), then one
    /// family of choices at a time, then the combinations a user would pick from.
    public static func variants(method: QuantizationMethod, bits: BitWidths, config: MambaConfig) -> [Variant] {
        let base = QuantizationRecipe(method: method, bits: bits)
        func with(_ change: (inout QuantizationRecipe) -> Void) -> QuantizationRecipe {
            var r = base
            change(&r)
            return r
        }
        // A module of every expert is one row ("experts.*.down_proj"): 62 experts are not 186 rows.
        // Vim's backward-branch modules go by their forward twin's name (Recipe.keepsFloat): one row.
        func withoutTwins(_ names: [String]) -> [String] {
            names.filter { m in QuantizationRecipe.forwardTwin(of: m).map { !names.contains($0) } ?? true }
        }
        let head = config.vision == nil ? QuantizedModel.lmHeadModule : QuantizedVisionMamba.headModule
        let modules = withoutTwins(config.moduleGroups + [head])
        let scanSites = config.scanInputSites.map(QuantizationRecipe.scanInputName)
        let everything = Set(modules + [QuantizationRecipe.allScanInputs])
        var v = [Variant(name: "baseline: all sites, static per-tensor", recipe: base)]
        v.append(Variant(name: config.vision == nil ? "floor: only the 8-bit embedding" : "floor: nothing quantized", recipe: with { $0.keepFloat = everything }))
        for m in modules {
            v.append(Variant(name: "only \(m)", recipe: with { $0.keepFloat = everything.subtracting([m]) }))
        }
        for s in scanSites {
            v.append(Variant(name: "only \(s)", recipe: with { $0.keepFloat = Set(modules + scanSites.filter { $0 != s }) }))
        }
        v.append(Variant(name: "activations: dynamic per token", recipe: with { $0.activations = .perToken }))
        v.append(Variant(name: "activations: dynamic, blocks of 32", recipe: with { $0.activations = .perTokenBlocks(32) }))
        for clip in ActivationClip.allCases where clip != base.clip {
            v.append(Variant(name: "activations: static, clip \(clip.rawValue)", recipe: with { $0.clip = clip }))
        }
        v.append(Variant(name: "weights: groups of 32", recipe: with { $0.groupSize = 32 }))
        let q8 = Set(withoutTwins(Array(QuantizationProfile.floatSet(config.distinctKinds))))   // what llama.cpp Q8_0 leaves in float
        for m in q8.sorted() {
            v.append(Variant(name: "float: \(m)", recipe: with { $0.keepFloat = [m] }))
        }
        v.append(Variant(name: "float: " + q8.sorted().joined(separator: ", "), recipe: with { $0.keepFloat = q8 }))
        for other in QuantizationMethod.allCases where other != method {
            v.append(Variant(name: "method: \(other.rawValue)", recipe: with { $0.method = other }))
        }
        v.append(Variant(name: "dynamic per token + Q8_0's float set", recipe: with { $0.activations = .perToken; $0.keepFloat = q8 }))
        v.append(Variant(name: "dynamic blocks of 32 + Q8_0's float set", recipe: with {
            $0.activations = .perTokenBlocks(32); $0.keepFloat = q8
        }))
        v.append(Variant(name: "dynamic blocks of 32 + weight groups of 32 + Q8_0's float set", recipe: with {
            $0.activations = .perTokenBlocks(32); $0.groupSize = 32; $0.keepFloat = q8
        }))
        return v
    }
}
