import Foundation
import MambaModel
import MambaTensors

/// One model in a comparison.
public struct Contender: Sendable {
    public var name: String
    public var method: String            // "none" for the float reference
    public var bits: String              // "fp32" for the float reference
    public var seed: UInt64?
    public var model: MambaLM
    /// The same transforms without rounding, for per-site SQNR (nil: not measured).
    public var transformedFloat: MambaLM?
    public var weightBytes: Int
    public var runtime: String
    /// The recipe apart from method, bits and seed ("" for the float model): contenders that differ
    /// only by seed share a row; any other difference makes its own row.
    public var recipe: String

    public init(name: String, method: String, bits: String, seed: UInt64?, model: MambaLM, transformedFloat: MambaLM?, weightBytes: Int,
                runtime: String, recipe: String = "") {
        self.name = name; self.method = method; self.bits = bits; self.seed = seed; self.model = model
        self.transformedFloat = transformedFloat; self.weightBytes = weightBytes; self.runtime = runtime; self.recipe = recipe
    }
}

/// An evaluation text, tokenized.
public struct EvaluationFile: Sendable {
    public var name: String
    public var text: String
    public var tokens: [Int]

    public init(name: String, text: String, tokens: [Int]) {
        self.name = name; self.text = text; self.tokens = tokens
    }
}

public struct CompareOptions: Sendable {
    public var seqLen = 512
    public var maxTokens: Int? = nil     // per file
    /// Positions before this in each window are context only (compareOnWindows).
    public var scoreFrom = 0
    public var taskItems = 100           // per task and file
    public var sqnrWindows = 2
    public var speedRuns = 3
    public var decodeSteps = 32
    public var measureSpeed = true
    public var seed: UInt64 = 0
    public init() {}
}

/// Runs every contender on every file (contender 0 is the float reference) and assembles the
/// report. Progress lines go to `note`.
public func runComparison(
    modelName: String, contenders: [Contender], files: [EvaluationFile], tokenizer: Tokenizer,
    options o: CompareOptions, parallelism par: Parallelism, note: (String) -> Void,
    progress: ((String, Int, Int) -> Void)? = nil
) throws -> ComparisonReport {
    precondition(contenders.first?.method == "none", "contender 0 must be the float reference")
    let reference = contenders[0].model
    let candidates = contenders.dropFirst().map(\.model)
    var perFile: [(file: String, accuracy: [ModelAccuracy], tasks: [TaskOutcomes], sizes: ComparisonReport.TaskSizes)] = []
    var windowsTotal = 0
    for f in files {
        let windows = evaluationWindows(f.tokens, seqLength: o.seqLen, maxTokens: o.maxTokens)
        guard !windows.isEmpty else { throw MambaError(.badInput, "\(f.name) has fewer than 2 tokens: nothing to evaluate") }
        windowsTotal += windows.count
        note("\(f.name): \(windows.count) windows x \(contenders.count) models")
        let accuracy = try compareOnWindows(reference: reference, candidates: Array(candidates), windows: windows,
                                            tokenBytes: tokenizer.byteCount, parallelism: par, scoreFrom: o.scoreFrom,
                                            progress: { progress?("score " + (f.name as NSString).lastPathComponent, $0, $1) })
        let taskSet = TaskSet.build(text: f.text, tokenizer: tokenizer, items: o.taskItems, seed: o.seed)
        let serial = Parallelism(threads: 1)
        let tasks = try par.concurrentMap(contenders.count, { try taskSet.evaluate(contenders[$0].model, parallelism: serial) },
                                          afterBatch: { progress?("tasks " + (f.name as NSString).lastPathComponent, $0, contenders.count) })
        perFile.append((f.name, accuracy, tasks, .init(lastWord: taskSet.lastWord.count, choice: taskSet.choice.count)))
    }

    // Speed and memory, one model at a time.
    var speed: [ThroughputResult?] = Array(repeating: nil, count: contenders.count)
    var peak: [Int?] = Array(repeating: nil, count: contenders.count)
    if o.measureSpeed {
        for (i, c) in contenders.enumerated() {
            progress?("speed", i, contenders.count)
            let canReset = ResidentMemory.resetPeak()
            let before = ResidentMemory.current()
            speed[i] = try measureThroughput(c.model, tokens: o.seqLen, decodeSteps: o.decodeSteps, runs: o.speedRuns, parallelism: par)
            // The process holds every model at once; a model's peak is its own weights plus the
            // growth of resident memory while it alone ran.
            if canReset, let before, let high = ResidentMemory.peak() {
                peak[i] = c.weightBytes + max(0, high - before)
            }
        }
        progress?("speed", contenders.count, contenders.count)
    }

    // Per-site SQNR on the first file's first windows.
    var sites: [ComparisonReport.SiteRow] = []
    if let first = files.first {
        let windows = Array(evaluationWindows(first.tokens, seqLength: o.seqLen, maxTokens: o.maxTokens).prefix(o.sqnrWindows))
        for c in contenders where c.transformedFloat != nil && (c.seed ?? 0) == (contenders.compactMap(\.seed).min() ?? 0) {
            for s in try siteSQNR(transformedFloat: c.transformedFloat!, quantized: c.model, windows: windows, parallelism: par) {
                sites.append(.init(layer: s.layer, site: s.site, method: c.method, bits: c.bits, sqnrDb: s.sqnrDB))
            }
        }
    }

    // Rows: one per (method, bits, recipe) and file, seeds averaged; checkpoints that differ in
    // anything but the seed (scale kind, clip, groups, kept-float modules) are never merged.
    let groups = contenders.indices.reduce(into: [[Int]]()) { g, i in
        let (a, b) = (contenders[i], { (j: Int) in contenders[j] })
        if let k = g.firstIndex(where: { b($0[0]).method == a.method && b($0[0]).bits == a.bits && b($0[0]).recipe == a.recipe }) {
            g[k].append(i)
        } else { g.append([i]) }
    }
    var rows: [ComparisonReport.Row] = []
    // The float reference's parameters (its config's count: a tied head once), what bits per weight divides by.
    let floatParameters = contenders.first { $0.method == "none" }?.model.config.parameterCount
    let fileNames = perFile.map(\.file) + (perFile.count > 1 ? ["total"] : [])
    for fileName in fileNames {
        let parts = fileName == "total" ? perFile : perFile.filter { $0.file == fileName }
        func accuracy(_ m: Int) -> ModelAccuracy { parts.reduce(into: ModelAccuracy()) { $0.append($1.accuracy[m]) } }
        func tasks(_ m: Int) -> TaskOutcomes {
            parts.reduce(into: TaskOutcomes()) { $0.lastWord += $1.tasks[m].lastWord; $0.choice += $1.tasks[m].choice }
        }
        let ref = accuracy(0)
        let sizes = ComparisonReport.TaskSizes(lastWord: parts.reduce(0) { $0 + $1.sizes.lastWord }, choice: parts.reduce(0) { $0 + $1.sizes.choice })
        for g in groups {
            let accs = g.map(accuracy), outs = g.map(tasks)
            let scores = accs.map(\.score)
            let c = contenders[g[0]]
            let lead = accs[0], leadTasks = outs[0]
            let bptDelta = c.method == "none" ? nil : pairedBootstrap(lead.windowNats.map { $0 / log(2) }, ref.windowNats.map { $0 / log(2) }, weights: lead.windowTokens, seed: o.seed)
            let bpbDelta = c.method == "none" ? nil : pairedBootstrap(lead.windowNats.map { $0 / log(2) }, ref.windowNats.map { $0 / log(2) }, weights: lead.windowBytes, seed: o.seed)
            let mean = { (xs: [Double]) in xs.reduce(0, +) / Double(xs.count) }
            let seedSpread = g.count > 1
                ? ComparisonReport.SeedSpread(seeds: g.count, bitsPerTokenStd: meanAndSpread(scores.map(\.bitsPerToken)).std, klStd: meanAndSpread(accs.map(\.meanKL)).std)
                : nil
            let lastWordCorrect = leadTasks.lastWord.filter { $0 }.count, choiceCorrect = leadTasks.choice.filter { $0 }.count
            rows.append(.init(
                name: c.name, method: c.method, bits: c.bits, recipe: c.recipe, file: fileName == "total" ? "total" : fileName, runtime: c.runtime,
                tokens: scores[0].tokens, perplexity: mean(scores.map(\.perplexity)), bitsPerToken: mean(scores.map(\.bitsPerToken)),
                bitsPerByte: mean(scores.map(\.bitsPerByte)), kl: mean(accs.map(\.meanKL)), top1Agreement: mean(accs.map(\.top1Agreement)),
                lastWordAccuracy: mean(outs.map(\.lastWordAccuracy)), choiceAccuracy: mean(outs.map(\.choiceAccuracy)), taskSizes: sizes,
                confidenceIntervals: .init(
                    bitsPerTokenDelta: bptDelta, bitsPerByteDelta: bpbDelta,
                    lastWordAccuracy: wilsonInterval(successes: lastWordCorrect, trials: leadTasks.lastWord.count),
                    choiceAccuracy: wilsonInterval(successes: choiceCorrect, trials: leadTasks.choice.count)),
                seedSpread: seedSpread,
                prefillTokensPerS: speed[g[0]]?.prefillTokensPerSecond, decodeTokensPerS: speed[g[0]]?.decodeTokensPerSecond,
                weightBytes: c.weightBytes, bitsPerWeight: floatParameters.map { 8 * Double(c.weightBytes) / Double($0) },
                weightsPlusGrowthBytes: peak[g[0]]))
        }
    }
    let scored = perFile.reduce(0) { $0 + $1.accuracy[0].positions }
    return ComparisonReport(
        model: modelName, data: .init(files: files.map(\.name), tokens: scored, seqLen: o.seqLen, windows: windowsTotal, scoreFrom: o.scoreFrom),
        threads: par.threads, results: rows, sites: sites, notes: [])
}
