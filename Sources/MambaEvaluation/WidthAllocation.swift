import Foundation
import MambaCalibration
import MambaModel
import MambaQuantization
import MambaTensors

// Mixed weight widths under a size budget (`quantize --bits-per-weight B`, docs/DESIGN.md section 2,
// "Mixed widths"). The model is quantized twice in memory, every linear at 4 bits and every linear
// at 8; the second pass runs the calibration windows through the transformed *float* blocks, so
// both share their static scales and GPTQ's Hessians, and a module taken from the 8-bit model
// into the 4-bit one is exactly what the pipeline gives that module at 8 bits (WidthAllocationTests
// checks it). Each module's worth is measured, not modelled: the KL from float on calibration
// windows of the 4-bit model, less that of the 4-bit model with only this module at 8 bits. Modules
// are then promoted greedily by KL saved per byte added while the file stays within the budget
// (a knapsack by ratio; the gains are measured alone, so their sum is an estimate, and the mixed
// model's own KL is measured and reported).

/// One module that may go from 4 to 8 bits.
public struct WidthCandidate: Sendable, Equatable {
    /// Full module name ("backbone.layers.3.mixer.in_proj", "lm_head").
    public let name: String
    /// Bytes the file grows by at 8 bits (the weights' integers; scales are the same).
    public let extraBytes: Int
    /// KL from float (nats, mean over the windows' positions) saved by this module alone at 8 bits.
    public let gain: Double
    public var chosen = false
}

/// What the allocation chose and measured.
public struct WidthChoice: Sendable {
    /// The mixed model (its recipe's `moduleWeightBits` name the 8-bit modules).
    public let model: QuantizedModel
    /// Every candidate, in the order they were weighed (best gain per byte first).
    public let candidates: [WidthCandidate]
    /// KL from float on the allocation windows: all at 4 bits, the mix, all at 8 bits.
    public let lowKL: Double, mixedKL: Double, highKL: Double
}

extension QuantizedModel {
    /// The modules a width choice weighs: every quantized linear (and conv), and the head (a tied
    /// table with it).
    public var widthCandidates: [String] {
        var names: [String] = []
        for (i, b) in blocks.enumerated() {
            let p = BlockNames.mixerPrefix(layer: i)
            names += b.mixer.spec.modules.map(\.name).filter { b.mixer.modules[$0]?.weight != nil }.map { p + $0 }
        }
        if lmHead.weight != nil { names.append(QuantizedModel.lmHeadModule) }
        return names
    }

    /// This model with `modules` (full names) taken from `other`, a quantization of the same
    /// source with the same recipe but for the weights' bits; the recipe records their widths.
    public func taking(_ modules: [String], from other: QuantizedModel) -> QuantizedModel {
        var out = self
        for name in modules {
            if name == QuantizedModel.lmHeadModule {
                out.lmHead = other.lmHead
                if tiedHead { out.embedding = other.embedding }
            } else {
                let (layer, module) = BlockNames.split(module: name)!
                out.blocks[layer].mixer.modules[module] = other.blocks[layer].mixer.modules[module]
            }
            let bits = other.recipe.weightBits(module: name)
            out.recipe.moduleWeightBits[name] = bits == recipe.bits.weight ? nil : bits
        }
        return out
    }

    /// Bytes the file grows by when `name` is taken from `other`.
    public func extraBytes(_ name: String, from other: QuantizedModel) -> Int {
        func bytes(_ m: QuantizedModel) -> Int {
            if name == QuantizedModel.lmHeadModule { return m.tiedHead ? m.embedding.storedBytes : m.lmHead.storedBytes }
            let (layer, module) = BlockNames.split(module: name)!
            return m.blocks[layer].mixer.modules[module]!.storedBytes
        }
        return bytes(other) - bytes(self)
    }
}

public enum WidthAllocation {
    /// The 4- and 8-bit recipes of a mixed-width quantization of `recipe` (its activation bits,
    /// rounding, groups and everything else shared).
    public static func recipes(_ recipe: QuantizationRecipe) -> (low: QuantizationRecipe, high: QuantizationRecipe) {
        var low = recipe, high = recipe
        low.bits = BitWidths(weight: 4, activation: recipe.bits.activation)
        high.bits = BitWidths(weight: 8, activation: recipe.bits.activation)
        low.moduleWeightBits = [:]; high.moduleWeightBits = [:]
        return (low, high)
    }

    /// Chooses which modules of `low` take `high`'s weights so the file grows by at most
    /// `extraBudget` bytes, measuring each module's KL gain against `reference` on `windows`.
    /// `progress` counts models scored.
    public static func choose(
        low: QuantizedModel, high: QuantizedModel, reference: MambaLM, windows: [[Int]], extraBudget: Int,
        runtime: QuantizedRuntime = .int8, parallelism: Parallelism, progress: ((Int, Int) -> Void)? = nil
    ) throws -> WidthChoice {
        let names = low.widthCandidates
        let total = names.count + 3
        var done = 0
        func kl(_ models: [MambaLM]) throws -> [Double] {
            let acc = try compareOnWindows(reference: reference, candidates: models, windows: windows, tokenBytes: { _ in 1 }, parallelism: parallelism)
            done += models.count
            progress?(done, total)
            return acc.dropFirst().map(\.meanKL)
        }
        let lowModel = low.model(runtime: runtime)
        let (lowKL, highKL) = try { let k = try kl([lowModel, high.model(runtime: runtime)]); return (k[0], k[1]) }()
        // A layer's candidates are scored together (one reference pass over the windows); each
        // candidate model differs from the 4-bit one in one block, or in the head.
        var gains: [String: Double] = [:]
        let byLayer = Dictionary(grouping: names) { BlockNames.split(module: $0)?.layer ?? -1 }
        for layer in byLayer.keys.sorted() {
            let group = byLayer[layer]!
            let models = group.map { name -> MambaLM in
                let mixed = low.taking([name], from: high)
                guard layer >= 0 else { return mixed.model(runtime: runtime) }
                var m = lowModel
                m.blocks[layer] = mixed.blocks[layer].block(runtime: runtime, config: low.config, layer: layer)
                return m
            }
            for (name, k) in zip(group, try kl(models)) { gains[name] = lowKL - k }
        }
        var candidates = names.map { WidthCandidate(name: $0, extraBytes: low.extraBytes($0, from: high), gain: gains[$0]!) }
        // Best KL saved per byte first; ties (and the order of equal ratios) by name, so the choice
        // is the same on every run.
        candidates.sort { a, b in
            let (x, y) = (a.gain / Double(max(1, a.extraBytes)), b.gain / Double(max(1, b.extraBytes)))
            return x != y ? x > y : a.name < b.name
        }
        var left = extraBudget
        for i in candidates.indices where candidates[i].gain > 0 && candidates[i].extraBytes <= left {
            candidates[i].chosen = true
            left -= candidates[i].extraBytes
        }
        let mixed = low.taking(candidates.filter(\.chosen).map(\.name), from: high)
        let mixedKL = try kl([mixed.model(runtime: runtime)])[0]
        return WidthChoice(model: mixed, candidates: candidates, lowKL: lowKL, mixedKL: mixedKL, highKL: highKL)
    }

}

extension QuantizeJob {
    /// What `runMixedWidths` reports.
    public struct WidthSummary: Sendable {
        public let choice: WidthChoice
        /// The file's bytes: all at 4 bits (measured by writing it aside), the target, what was written.
        public let lowFileBytes: Int, targetFileBytes: Int, fileBytes: Int
        public let parameters: Int
        public let seconds: Double
    }

    /// `quantize --bits-per-weight B`: quantizes at 4 and at 8 bits in memory, chooses the 8-bit
    /// modules (WidthAllocation.choose, KL on the first `windows` calibration windows), writes the
    /// mix. Bits per weight = 8 x the safetensors files' bytes / the float model's parameters, as
    /// `inspect` counts it; a target below the all-4-bit file is refused, nothing written.
    public func runMixedWidths(bitsPerWeight: Double, windows count: Int, quantizeProgress: ((String) -> Calibrator.Progress)? = nil,
                               scoreProgress: ((Int, Int) -> Void)? = nil) throws -> WidthSummary {
        let c = weights.config
        guard c.vision == nil else { throw MambaError(.badInput, "--bits-per-weight chooses widths for language models; \(model) is a Vision Mamba") }
        let p = Double(weights.parameterCount)
        // The float model, the two quantized models, their kernels' packed copies and the
        // pipeline's working set at once: measured 1.92 GB peak at the mamba-130m shape (129 M
        // parameters, 14.9 bytes each), so 16 bytes a parameter.
        try MemoryEstimate(parts: [("the float model (float32)", 4 * p), ("the 4- and 8-bit models, their kernels' copies and the pipeline", 12 * p)])
            .check(job: "quantize --bits-per-weight", lower: "the model's size: mixed widths hold it whole (quantize without --bits-per-weight streams it)")
        let parameters = c.parameterCount
        let target = Int((bitsPerWeight * Double(parameters) / 8).rounded(.down))
        var result: (choice: WidthChoice, lowBytes: Int, written: Int)!
        let seconds = try measureSeconds {
            let reference = try MambaLM(checkpoint: weights)
            let (lowRecipe, highRecipe) = WidthAllocation.recipes(recipe)
            let low = try QuantizedModel.quantize(weights: weights, stats: stats, recipe: lowRecipe, parallelism: parallelism,
                                                  progress: quantizeProgress?("quantize w4"))
            let lowBytes = try fileBytes(of: low)
            guard target >= lowBytes else {
                throw MambaError(.badInput, String(format: "--bits-per-weight %g is below this model's all-4-bit checkpoint, %.3f bits per weight (%d bytes): nothing to choose", bitsPerWeight, 8 * Double(lowBytes) / Double(parameters), lowBytes))
            }
            let high = try QuantizedModel.quantize(weights: weights, stats: stats, recipe: highRecipe, parallelism: parallelism,
                                                   progress: quantizeProgress?("quantize w8"))
            // A promoted module's header entry changes dtype (U8 to I8, as long) and shape (never
            // more digits), and the header is padded to 8 bytes: 16 per module is more than enough.
            let margin = 16 * (low.widthCandidates.count + 1)
            let choice = try WidthAllocation.choose(low: low, high: high, reference: reference, windows: Array(stats.windows.windows.prefix(count)),
                                                    extraBudget: max(0, target - lowBytes - margin), parallelism: parallelism, progress: scoreProgress)
            try write(choice.model)
            result = (choice, lowBytes, try TensorStore(directory: out).bytesOnDisk)
        }
        return WidthSummary(choice: result.choice, lowFileBytes: result.lowBytes, targetFileBytes: target, fileBytes: result.written,
                            parameters: parameters, seconds: seconds)
    }

    /// The bytes of `q`'s safetensors files, written aside (beside --out) and removed.
    func fileBytes(of q: QuantizedModel) throws -> Int {
        let url = URL(fileURLWithPath: out).standardizedFileURL
        let aside = url.deletingLastPathComponent().path + "/.\(url.lastPathComponent).widths-\(ProcessInfo.processInfo.processIdentifier)"
        TemporaryPaths.register(aside)
        defer { try? FileManager.default.removeItem(atPath: aside); TemporaryPaths.unregister(aside) }
        try q.write(directory: aside, sourceDirectory: model, provenance: provenance)
        return try TensorStore(directory: aside).bytesOnDisk
    }
}
