import Foundation
import MambaCalibration
import MambaModel
import MambaQuantization
import MambaTensors

// `compare` on a Vision Mamba: the float model and each recipe quantized in memory from the
// calibration images, run on the test images; top-1 (and top-5) accuracy with Wilson intervals, the
// paired bootstrap interval of each model's top-1 difference from float over images, KL from float
// and top-1 agreement with it, images per second and weight bytes. The MambaQuant paper's Vim table
// (arXiv 2501.13484, Table 3) reports the same top-1 per method and bit width.

public struct VisionComparisonSetup: Sendable {
    public var modelDirectory: String
    public var methods: [QuantizationMethod] = QuantizationMethod.allCases
    public var bits: [BitWidths] = [BitWidths(weight: 8, activation: 8), BitWidths(weight: 4, activation: 8)]
    public var weightRounding: WeightRounding?
    /// Named recipes run instead of methods x bits (the error budget's variants, ErrorBudget.swift);
    /// their rows carry no per-site SQNR.
    public var recipes: [(name: String, recipe: QuantizationRecipe)]?
    public var calibrationImages: String
    public var calibrationLimit = 256
    public var testImages: String
    public var testLimit: Int?
    /// How image folders become input (nil: the model's config).
    public var preprocess: ImagePreprocess?
    /// Test images the per-site SQNR runs over (the first ones).
    public var sqnrImages = 32
    public var runtime: QuantizedRuntime = .int8

    public init(modelDirectory: String, calibrationImages: String, testImages: String) {
        (self.modelDirectory, self.calibrationImages, self.testImages) = (modelDirectory, calibrationImages, testImages)
    }
}

public struct VisionComparisonReport: Sendable, Codable {
    public struct Row: Sendable, Codable {
        public var name: String
        public var method: String            // "none" for the float model
        public var bits: String
        public var runtime: String
        /// Top-1 and top-5 accuracy on the labelled test images (nil without labels; top-5 only with
        /// more than 5 classes), with Wilson 95% intervals.
        public var accuracy: Double?
        public var accuracyInterval: Interval?
        public var top5Accuracy: Double?
        /// Paired bootstrap (over images) of this model's top-1 minus float's.
        public var accuracyDeltaInterval: Interval?
        /// Mean KL(float || model) over images, nats; top-1 agreement with float.
        public var kl: Double
        public var top1Agreement: Double
        public var imagesPerS: Double
        public var weightBytes: Int
        public var bitsPerWeight: Double
        /// The model's weights plus the growth of resident memory while it alone ran on the test
        /// images (all models share one process; nil where the peak cannot be reset).
        public var weightsPlusGrowthBytes: Int?
    }

    public var model: String
    public var calibration: String
    public var calibrationImages: Int
    public var test: String
    public var testImages: Int
    public var classes: Int
    public var threads: Int
    public var rows: [Row]
    /// Per-site SQNR of each quantized model against its transformed float model (SQNR.swift), over
    /// the first `sqnrImages` test images.
    public var sites: [ComparisonReport.SiteRow]
    public var sqnrImages: Int
    public var notes: [String]

    public func json() throws -> String { try snakeCaseJSON(self) }

    public func markdown() -> String {
        var out = "# mambaquant compare: \(model)\n\n"
        out += "Images: \(testImages) of \(test); calibration: \(calibrationImages) of \(calibration); \(classes) classes, \(threads) threads.\n"
        out += "Top-1 carries its Wilson 95% interval; Δ is the paired difference from float with its 95% bootstrap interval over images.\n\n"
        let top5 = rows.contains { $0.top5Accuracy != nil }
        out += "| model | bits | top-1 | Δ top-1 [95% CI] |" + (top5 ? " top-5 |" : "") +  " KL (nats) | top-1 agree | images/s | weights MB | bits per weight | weights + run growth MB |\n"
        out += "|---|---|---|---|" + (top5 ? "---:|" : "") + "---:|---:|---:|---:|---:|---:|\n"
        let float = rows.first { $0.method == "none" }?.accuracy
        for r in rows {
            let acc = r.accuracy.map { a in r.accuracyInterval.map { String(format: "%.2f%% [%.2f, %.2f]", 100 * a, 100 * $0.low, 100 * $0.high) } ?? String(format: "%.2f%%", 100 * a) } ?? "-"
            var delta = "-"
            if let a = r.accuracy, let f = float, let ci = r.accuracyDeltaInterval {
                delta = String(format: "%+.2f [%+.2f, %+.2f]", 100 * (a - f), 100 * ci.low, 100 * ci.high)
            }
            out += "| \(r.name) | \(r.bits) | \(acc) | \(delta) |" + (top5 ? (r.top5Accuracy.map { String(format: " %.2f%% |", 100 * $0) } ?? " - |") : "")
                + String(format: " %.5f | %.2f%% | %.1f | %.3f | %.2f | ", r.kl, 100 * r.top1Agreement, r.imagesPerS, Double(r.weightBytes) / 1e6, r.bitsPerWeight)
                + (r.weightsPlusGrowthBytes.map { String(format: "%.1f", Double($0) / 1e6) } ?? "-") + " |\n"
        }
        out += sqnrMarkdown()
        if !notes.isEmpty { out += "\n" + notes.map { "- " + $0 }.joined(separator: "\n") + "\n" }
        return out
    }

    /// One row per site (forward order), one column per quantized model: the mean over layers of
    /// the site's SQNR in dB, exact layers left out (the head's input is one site outside the layers).
    func sqnrMarkdown() -> String {
        guard !sites.isEmpty else { return "" }
        let models = sites.reduce(into: [String]()) { if !$0.contains("\($1.method) \($1.bits)") { $0.append("\($1.method) \($1.bits)") } }
        let order = sites.reduce(into: [String]()) { if !$0.contains($1.site) { $0.append($1.site) } }
        var out = "\n## Per-site SQNR (dB, mean over layers; first \(sqnrImages) test images)\n\n| site | " + models.joined(separator: " | ") + " |\n|---|"
            + String(repeating: "---:|", count: models.count) + "\n"
        for site in order {
            out += "| \(site) |" + models.map { m in
                // 999 marks an exact site (layer 0's input: the patch embedding is float), left out of the mean.
                let all = sites.filter { $0.site == site && "\($0.method) \($0.bits)" == m }.map(\.sqnrDb)
                let v = all.filter { $0 < 999 }
                return all.isEmpty ? " - |" : v.isEmpty ? " exact |" : String(format: " %.1f |", v.reduce(0, +) / Double(v.count))
            }.joined() + "\n"
        }
        return out
    }
}

/// Runs the comparison: calibrate the float model on the calibration images once, quantize each
/// recipe, run every model on the test images.
public func runVisionComparison(_ setup: VisionComparisonSetup, parallelism par: Parallelism, log: (String) -> Void) throws -> VisionComparisonReport {
    let weights = try CheckpointWeights(directory: setup.modelDirectory)
    let float = try VisionMamba(checkpoint: weights)
    let calibration = try ImageSet.load(path: setup.calibrationImages, for: float.vision, preprocess: setup.preprocess, limit: setup.calibrationLimit)
    let test = try ImageSet.load(path: setup.testImages, for: float.vision, preprocess: setup.preprocess, limit: setup.testLimit)
    log("calibrating on \(calibration.count) images")
    // GPTQ's Hessians come from quantize's second pass, not from these statistics.
    let stats = try VisionCalibrator.run(model: float, images: calibration.images, parallelism: par)
    let parameters = Double(float.config.parameterCount)
    let classes = float.classes
    let k = min(5, classes)

    func measure(_ model: VisionMamba) -> (logits: Tensor, seconds: Double, growth: Int?) {
        var logits = Tensor(zeros: [0])
        let canReset = ResidentMemory.resetPeak()
        let before = ResidentMemory.current()
        let seconds = measureSeconds { logits = model.logits(test.images, par) }
        let growth = canReset ? before.flatMap { b in ResidentMemory.peak().map { max(0, $0 - b) } } : nil
        return (logits, seconds, growth)
    }
    let reference = measure(float)
    let floatCorrect = correctness(reference.logits, test.labels)
    func row(name: String, method: String, bits: String, runtime: String, weightBytes: Int, run: (logits: Tensor, seconds: Double, growth: Int?)) -> VisionComparisonReport.Row {
        let correct = correctness(run.logits, test.labels)
        var score = ClassificationScore(k: k)
        if let labels = test.labels { score.add(logits: run.logits, labels: labels) }
        let (kl, agree) = divergence(reference.logits, run.logits, classes: classes)
        return .init(name: name, method: method, bits: bits, runtime: runtime,
                     accuracy: test.labels == nil ? nil : score.top1Accuracy,
                     accuracyInterval: test.labels == nil ? nil : wilsonInterval(successes: score.top1, trials: score.images),
                     top5Accuracy: test.labels == nil || classes <= 5 ? nil : score.topKAccuracy,
                     accuracyDeltaInterval: correct.flatMap { c in floatCorrect.map { pairedBootstrap(c, $0, weights: [Double](repeating: 1, count: c.count)) } },
                     kl: kl, top1Agreement: agree, imagesPerS: Double(test.count) / max(run.seconds, 1e-9), weightBytes: weightBytes,
                     bitsPerWeight: 8 * Double(weightBytes) / parameters, weightsPlusGrowthBytes: run.growth.map { weightBytes + $0 })
    }
    var rows = [row(name: "float", method: "none", bits: "fp32", runtime: "float32 (OpenBLAS \(BLASCore.current))",
                    weightBytes: 4 * float.config.parameterCount, run: reference)]
    var sites: [ComparisonReport.SiteRow] = []
    let sqnrSet = test.subset(0..<min(setup.sqnrImages, test.count))
    let plan: [(name: String, recipe: QuantizationRecipe, sqnr: Bool)] = setup.recipes?.map { ($0.name, $0.recipe, false) }
        ?? setup.bits.flatMap { bits in
            setup.methods.map { method in
                var recipe = QuantizationRecipe(method: method, bits: bits)
                if let r = setup.weightRounding { recipe.weightRounding = r } else if bits.weight <= 4 { recipe.weightRounding = .gptq }
                return (method.rawValue, recipe, setup.sqnrImages > 0)
            }
        }
    for (i, entry) in plan.enumerated() {
        let (method, bits) = (entry.recipe.method.rawValue, entry.recipe.bits.description)
        log("quantizing \(entry.name)\(entry.name == method ? " " + bits : "") (\(i + 1) of \(plan.count))")
        let (q, transformed) = try QuantizedVisionMamba.quantize(weights: weights, stats: stats, images: calibration.images, recipe: entry.recipe,
                                                                 parallelism: par, keepTransformed: entry.sqnr)
        let model = q.model(runtime: setup.runtime)
        rows.append(row(name: entry.name, method: method, bits: bits, runtime: setup.runtime.description, weightBytes: q.weightBytes, run: measure(model)))
        if let transformed {
            sites += try siteSQNR(transformedFloat: transformed, quantized: model, images: sqnrSet.images, parallelism: par).map {
                ComparisonReport.SiteRow(layer: $0.layer, site: $0.site, method: method, bits: bits, sqnrDb: $0.sqnrDB)
            }
        }
    }
    return VisionComparisonReport(
        model: setup.modelDirectory, calibration: setup.calibrationImages, calibrationImages: calibration.count, test: setup.testImages,
        testImages: test.count, classes: classes, threads: par.threads, rows: rows, sites: sites, sqnrImages: sqnrSet.count,
        notes: ["The patch embedding, cls token and position embedding stay float32 (the patch embedding reads the pixels); the head is quantized.",
                "Weights rounded to nearest at 8 bits and by GPTQ at 4, unless --weight-rounding says otherwise; static per-tensor activation scales (p99.99 clip).",
                "images/s is one pass over the test images, not a median: use bench for speed."])
}

/// 1 where the model's top class is the label, else 0 (nil without labels).
func correctness(_ logits: Tensor, _ labels: [Int]?) -> [Double]? {
    guard let labels else { return nil }
    let classes = logits.cols
    return labels.enumerated().map { i, label in
        topClasses(Array(logits.storage[(i * classes)..<((i + 1) * classes)]), 1)[0] == label ? 1 : 0
    }
}

/// Mean KL(p || q) of the softmaxes of each row (nats) and the share of rows whose top class agrees.
func divergence(_ p: Tensor, _ q: Tensor, classes: Int) -> (kl: Double, agreement: Double) {
    let n = p.count / classes
    var kl = 0.0, agree = 0
    var la = [Double](repeating: 0, count: classes), lb = la
    for i in 0..<n {
        let (a, b) = (p.storage[(i * classes)..<((i + 1) * classes)], q.storage[(i * classes)..<((i + 1) * classes)])
        logSoftmax(a, into: &la)
        logSoftmax(b, into: &lb)
        kl += zip(la, lb).reduce(0) { $0 + exp($1.0) * ($1.0 - $1.1) }
        if topClasses(Array(a), 1) == topClasses(Array(b), 1) { agree += 1 }
    }
    return (kl / Double(max(n, 1)), Double(agree) / Double(max(n, 1)))
}
