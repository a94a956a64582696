import Foundation
import MambaCalibration
@testable import MambaQuantization
import MambaTransforms
import TestSupport
import XCTest

/// The layer-at-a-time quantize pipeline against the whole-model one written out plainly here:
/// transform every layer at once (applyPlan), run the second pass window by window through the
/// whole transformed model (MambaLM.forward with an observer), quantize, write. Both must give
/// the same checkpoint byte for byte, for every method and the recipes' variants, on the
/// transformers fixtures (Mamba-1 and Falcon-Mamba) and the bundled model.
final class StreamedQuantizeTests: XCTestCase {
    /// The second pass as the whole-model pipeline ran it: each window through every layer, its
    /// sites recorded, window statistics merged in window order.
    final class Recorder: ActivationObserver {
        var stats = CalibrationStats(sites: [:], pooledResidual: Moments(channels: 1))
        /// Sites whose x xᵀ sums GPTQ needs (the linears' inputs).
        let momentSites: Set<Site>
        init(momentSites: Set<Site>) { self.momentSites = momentSites }
        func observe(_ activation: Tensor, site: Site, layer: Int?) {
            let key = SiteKey(layer: layer, site: site)
            if stats.sites[key] == nil { stats.sites[key] = SiteStatistics(channels: activation.cols, moments: momentSites.contains(site)) }
            stats.sites[key]!.update(activation)
        }
    }

    func wholeModelQuantize(_ w: MambaWeights, _ file: StatsFile, _ recipe: QuantizationRecipe) throws -> QuantizedModel {
        var p = ModelParameters(weights: w)
        let log = try applyPlan(recipe.method, to: &p, stats: file.stats, seed: recipe.seed, alpha: recipe.alpha)
        // The head-input matrix as format 4 stores it (F16), before the second pass sees the head's input.
        p.headInput = p.headInput.map { Matrix($0.tensor.roundedToHalf()) }
        let transformed = p.floatModel()
        var final = CalibrationStats(sites: [:], pooledResidual: Moments(channels: 1))
        for window in file.windows.windows {
            let gptq = recipe.weightRounding == .gptq
            let linearInputs = Set(transformed.config.distinctKinds.flatMap { $0.spec.linearInputs })
            let r = Recorder(momentSites: gptq ? linearInputs.union([Site.lmHeadInput]) : [])
            var state = transformed.makeState()
            _ = try transformed.forward(window, state: &state, logits: .none, observer: r)
            final.merge(r.stats)
        }
        let (wb, ab) = (recipe.bits.weight, recipe.bits.activation)
        func act(_ layer: Int?, _ site: Site) throws -> ActivationQuantizer {
            if recipe.activations.isDynamic { return ActivationQuantizer(bits: ab, scale: .dynamic) }
            return ActivationQuantizer(bits: ab, scale: .static(try final.site(layer, site).clip(recipe.clip.quantile) / Float(qmax(bits: ab))))
        }
        func layer(_ name: String, _ m: Matrix, _ bias: [Double]?, _ input: ActivationQuantizer, groups: Bool, hessian: [Double]? = nil) throws -> QuantizedLayer {
            let b = bias.map(floatVector)
            if recipe.keepsFloat(module: name) { return QuantizedLayer(weight: nil, floatWeight: m.tensor, bias: b, input: nil) }
            var q = QuantizedMatrix(quantizing: m, bits: wb, groupSize: groups ? recipe.groupSize : nil)
            // GPTQ on the same scales, against the whole-model second pass's Hessian of the input.
            if let hessian { q.values = try GPTQ.round(m, hessian: hessian, bits: wb, groupSize: q.groupSize, scales: q.scales, options: recipe.gptq) }
            return QuantizedLayer(weight: q, floatWeight: nil, bias: b, input: input)
        }
        let blocks = try p.blocks.enumerated().map { i, b in
            let m = b.mixer
            var modules: [String: QuantizedLayer] = [:]
            for s in m.spec.modules {
                let hessian = recipe.weightRounding == .gptq && s.kind == .linear ? try final.site(i, s.input).moments!.symmetrized.sumOfProducts : nil
                modules[s.name] = try layer("backbone.layers.\(i).mixer." + s.name, m.weight(s.name), m.module(s.name).bias, try act(i, s.input),
                                            groups: s.allowsGroups, hessian: hessian)
            }
            var scan: [Site: ActivationQuantizer] = [:]
            for (site, _) in m.spec.scanInputs {
                scan[site] = try act(i, site)
                // Per head / group: each group's absmax, capped at the site's clip.
                if recipe.scanScales == .group, !recipe.activations.isDynamic, let g = m.spec.scanScaleGroups(site, p.config) {
                    let st = try final.site(i, site), size = st.channels / g
                    let clip = st.clip(recipe.clip.quantile)
                    scan[site] = ActivationQuantizer(bits: ab, scale: .groups((0..<g).map { k in
                        min(clip, st.range.absmax[(k * size)..<((k + 1) * size)].max()!) / Float(qmax(bits: ab)) }))
                }
            }
            // A_log as format 4 stores it (F16).
            var tensors = m.tensors
            tensors["A_log"] = tensors["A_log"]?.roundedToHalf()
            return QuantizedBlock(norm: b.norm.map(floatVector), mixer: QuantizedMixer(kind: m.kind, modules: modules, tensors: tensors), scanInputs: scan)
        }
        // A tied head stays tied: the embedding's table quantized as the head is both (unless the
        // head is kept float: then a float copy of the table beside the int8 embedding).
        // GPTQ rounds the head, a tied table too, against the head input's Hessian.
        let tied = p.lmHead == nil && !recipe.keepFloat.contains("lm_head")
        let headHessian = recipe.weightRounding == .gptq && !recipe.keepFloat.contains("lm_head")
            ? try final.site(nil, .lmHeadInput).moments!.symmetrized.sumOfProducts : nil
        // The pipeline holds the head in float32 until its Hessian is known.
        let headWeights = headHessian == nil ? p.lmHead ?? p.embedding : Matrix((p.lmHead ?? p.embedding).tensor)
        let head = try layer("lm_head", headWeights, nil, try act(nil, .lmHeadInput), groups: true, hessian: headHessian)
        let embedding = tied ? head.weight! : QuantizedMatrix(quantizing: p.embedding, bits: 8)
        var config = p.config
        config.json["tie_word_embeddings"] = .bool(tied)
        return QuantizedModel(config: config, recipe: recipe, embedding: embedding, blocks: blocks, lmHead: head, transforms: log,
                              headInput: p.headInput?.tensor, tiedHead: tied)
    }

    func statsFile(_ w: MambaWeights, samples: Int, seqLength: Int, vocab: Int) throws -> StatsFile {
        try calibratedStats(w, text: (0..<2000).map { ($0 * 7 + $0 / 9) % vocab }, samples: samples, seqLength: seqLength, seed: 4)
    }

    func assertSameCheckpoint(_ directory: String, _ w: MambaWeights, _ file: StatsFile, _ recipes: [QuantizationRecipe], _ label: String) throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let provenance = QuantizationProvenance(sourceSHA256: "s", statsSHA256: "t")
        let source = try CheckpointWeights(directory: directory)
        for (k, recipe) in recipes.enumerated() {
            let whole = try wholeModelQuantize(w, file, recipe)
            try whole.write(directory: dir + "/whole\(k)", sourceDirectory: directory, provenance: provenance)
            let writer = try QuantizedCheckpointWriter(directory: dir + "/streamed\(k)", sourceDirectory: directory)
            let r = try QuantizedModel.stream(weights: source, stats: file, recipe: recipe, parallelism: Parallelism(threads: 2),
                                              embedding: { try writer.add(embedding: $0) },
                                              block: { try writer.add(block: $1, layer: $0, config: w.config) })
            try writer.finish(config: r.config, recipe: recipe, lmHead: r.lmHead, headInput: r.headInput, tiedHead: r.tiedHead,
                              transforms: r.transforms, provenance: provenance)
            XCTAssertEqual(writer.weightBytes, whole.weightBytes, "\(label) \(recipe.method) weight bytes")
            for f in ["model.safetensors", "config.json"] {
                XCTAssertTrue(FileManager.default.contentsEqual(atPath: dir + "/whole\(k)/" + f, andPath: dir + "/streamed\(k)/" + f),
                              "\(label) \(recipe.method) \(recipe.bits) \(f)")
            }
        }
    }

    func testStreamedEqualsWholeModelOnTheFixtures() throws {
        var recipes = QuantizationMethod.allCases.map { QuantizationRecipe(method: $0) }
        recipes.append(QuantizationRecipe(method: .mambaquant, activations: .perToken))
        recipes.append(QuantizationRecipe(method: .mambaquant, bits: .init(weight: 4, activation: 8), groupSize: 8,
                                          keepFloat: ["lm_head", "backbone.layers.1.mixer.x_proj"]))
        // w4 rounded to nearest, and GPTQ in natural column order (the recipe above takes GPTQ with
        // act-order, w4's default).
        var rtn = QuantizationRecipe(method: .mambaquant, bits: .init(weight: 4, activation: 8))
        rtn.weightRounding = .rtn
        var natural = QuantizationRecipe(method: .hadamard, bits: .init(weight: 4, activation: 8), groupSize: 8)
        natural.gptq.actOrder = false
        recipes.insert(contentsOf: [rtn, natural], at: recipes.count - 1)   // the keep-float recipe stays last
        for name in ["tiny-tied", "tiny-untied-k3", "tiny-falcon-untied-bf16"] {
            let w = try MambaWeights.load(directory: Fixtures.model(name))
            try assertSameCheckpoint(Fixtures.model(name), w, try statsFile(w, samples: 5, seqLength: 24, vocab: 50), recipes, name)
        }
        // Mamba-2: no x_proj to keep float; its out_proj instead.
        recipes[recipes.count - 1] = QuantizationRecipe(method: .mambaquant, bits: .init(weight: 4, activation: 8), groupSize: 8,
                                                        keepFloat: ["lm_head", "backbone.layers.1.mixer.out_proj"])
        // And Quamba2-style scan scales: x and dt per head, B and C per group.
        var grouped = QuantizationRecipe(method: .mambaquant)
        grouped.scanScales = .group
        recipes.append(grouped)
        let name = "tiny-mamba2-g2-untied"
        let w = try MambaWeights.load(directory: Fixtures.model(name))
        try assertSameCheckpoint(Fixtures.model(name), w, try statsFile(w, samples: 5, seqLength: 24, vocab: 50), recipes, name)
    }

    func testStreamedEqualsWholeModelOnTheBundledModel() throws {
        let dir = Fixtures.packageRoot + "/models/bard-mamba"
        let w = try MambaWeights.load(directory: dir)
        try assertSameCheckpoint(dir, w, try statsFile(w, samples: 3, seqLength: 48, vocab: 256), [QuantizationRecipe(method: .mambaquant)], "bard-mamba")
    }

    /// The hybrids with experts (Granite's stacked in one tensor per module, read entry by entry;
    /// Nemotron-H's grouped sigmoid routing), Jamba's Mamba-1 with weighted norms and Falcon-H1's
    /// parallel mixer through the streamed pipeline, static and GPTQ w4a8. (It found the streamed
    /// second pass embedding its windows without Granite's and Falcon-H1's embedding multiplier.)
    func testStreamedEqualsWholeModelOnTheHybrids() throws {
        let recipes = [QuantizationRecipe(method: .rtn), QuantizationRecipe(method: .smoothquant), QuantizationRecipe(method: .mambaquant),
                       QuantizationRecipe(method: .hadamard, bits: .init(weight: 4, activation: 8), groupSize: 8)]
        for name in ["tiny-granite-4.0-h-moe", "tiny-jamba", "tiny-falcon-h1-hub", "tiny-nemotron-h-moe"] {
            let w = try MambaWeights.load(directory: Fixtures.model(name))
            try assertSameCheckpoint(Fixtures.model(name), w, try statsFile(w, samples: 3, seqLength: 24, vocab: 80), recipes, name)
        }
    }

    /// Each block is handed out once, in layer order, though its writing overlaps the next layer's
    /// transform; an error from a hand-out ends the stream with that error, and no later block
    /// is handed out.
    func testBlocksAreHandedOutInOrderAndAFailedHandOutEndsTheStream() throws {
        struct DiskFull: Error {}
        let name = "tiny-untied-k3"
        let w = try MambaWeights.load(directory: Fixtures.model(name))
        XCTAssertGreaterThanOrEqual(w.config.numLayers, 2)
        let file = try statsFile(w, samples: 2, seqLength: 16, vocab: 50)
        let source = try CheckpointWeights(directory: Fixtures.model(name))
        for failing in [nil, 0, w.config.numLayers - 1] {
            var seen: [Int] = []
            let run = {
                _ = try QuantizedModel.stream(weights: source, stats: file, recipe: QuantizationRecipe(method: .mambaquant), parallelism: Parallelism(threads: 2),
                                              embedding: { _ in }, block: { i, _ in
                                                  seen.append(i)
                                                  if i == failing { throw DiskFull() }
                                              })
            }
            if let failing {
                XCTAssertThrowsError(try run()) { XCTAssertTrue($0 is DiskFull, "\($0)") }
                XCTAssertEqual(seen, Array(0...failing))
            } else {
                try run()
                XCTAssertEqual(seen, Array(0..<w.config.numLayers))
            }
        }
    }

    /// Past the shard limit the checkpoint is sharded with an index and runs the same.
    func testShardedQuantizedCheckpoint() throws {
        let w = try MambaWeights.load(directory: Fixtures.model("tiny-tied"))
        let q = try QuantizedModel.quantize(weights: w, stats: try statsFile(w, samples: 3, seqLength: 16, vocab: 50),
                                            recipe: QuantizationRecipe(method: .mambaquant), parallelism: .serial)
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try q.write(directory: dir + "/q", sourceDirectory: Fixtures.model("tiny-tied"), provenance: .init(sourceSHA256: "s", statsSHA256: "t"),
                    shardBytes: 4096)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/q")
        XCTAssertTrue(files.contains("model.safetensors.index.json"), "\(files)")
        XCTAssertFalse(files.contains("model.safetensors"))
        XCTAssertGreaterThan(files.filter { $0.hasPrefix("model-0") }.count, 2)
        let tokens = (0..<17).map { ($0 * 5 + 1) % 50 }
        XCTAssertEqual(try QuantizedModel.load(directory: dir + "/q").model().logits(tokens).storage, try q.model().logits(tokens).storage)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/.q.tmp-\(ProcessInfo.processInfo.processIdentifier)"))
    }
}
