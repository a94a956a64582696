import Foundation

/// A report as JSON: snake_case keys, sorted, indented (compare's and bench's reports).
public func snakeCaseJSON(_ value: some Encodable) throws -> String {
    let e = JSONEncoder()
    e.keyEncodingStrategy = .convertToSnakeCase
    e.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try e.encode(value), as: UTF8.self)
}

/// The `compare` report (schema version 1): what a user reads to decide whether to ship a
/// quantized model. Keys are snake_case in JSON.
public struct ComparisonReport: Sendable, Codable {
    /// 2: rows carry `recipe`; `peak_memory_bytes` became `weights_plus_growth_bytes`.
    public static let schemaVersion = 2

    public struct DataInfo: Sendable, Codable {
        public var files: [String]
        public var tokens: Int               // positions scored, all files
        public var seqLen: Int
        public var windows: Int
        /// The first scored position of each window (nil or 0: all but the first token's).
        public var scoreFrom: Int?
    }

    public struct TaskSizes: Sendable, Codable, Equatable {
        public var lastWord: Int
        public var choice: Int
    }

    public struct Intervals: Sendable, Codable, Equatable {
        /// Paired bootstrap over windows of (model - float) bits per token / per byte.
        public var bitsPerTokenDelta: Interval?
        public var bitsPerByteDelta: Interval?
        /// Wilson intervals of the task accuracies.
        public var lastWordAccuracy: Interval
        public var choiceAccuracy: Interval
    }

    /// Mean and standard deviation over rotation seeds (`--seeds N`, N > 1).
    public struct SeedSpread: Sendable, Codable, Equatable {
        public var seeds: Int
        public var bitsPerTokenStd: Double
        public var klStd: Double
    }

    public struct Row: Sendable, Codable {
        public var name: String
        public var method: String            // "none" for the float model
        public var bits: String              // "fp32" for the float model
        /// The quantization settings apart from method, bits and seed ("" for the float model).
        public var recipe: String
        public var file: String              // an evaluation file, or "total"
        public var runtime: String
        public var tokens: Int
        public var perplexity: Double
        public var bitsPerToken: Double
        public var bitsPerByte: Double
        public var kl: Double
        public var top1Agreement: Double
        public var lastWordAccuracy: Double
        public var choiceAccuracy: Double
        public var taskSizes: TaskSizes
        public var confidenceIntervals: Intervals
        public var seedSpread: SeedSpread?
        public var prefillTokensPerS: Double?
        public var decodeTokensPerS: Double?
        public var weightBytes: Int
        /// 8 x weightBytes / the float model's parameters (weights as this comparison holds them:
        /// int8 with its scales, 16-bit or float32 as loaded, kept-float modules included).
        public var bitsPerWeight: Double?
        /// The model's weights plus the growth of resident memory while it alone ran (all models
        /// share one process, so a true per-model peak is not observable here).
        public var weightsPlusGrowthBytes: Int?
    }

    public struct SiteRow: Sendable, Codable {
        public var layer: Int?
        public var site: String
        public var method: String
        public var bits: String
        public var sqnrDb: Double
    }

    public var schemaVersion = ComparisonReport.schemaVersion
    public var model: String
    public var data: DataInfo
    public var threads: Int
    public var results: [Row]
    public var sites: [SiteRow]
    public var notes: [String]

    public func json() throws -> String { try snakeCaseJSON(self) }

    /// One Markdown table per evaluation file and one for the total, then speed and memory, then
    /// the SQNR summary.
    public func markdown() -> String {
        var out = "# mambaquant compare: \(model)\n\n"
        out += "Text: \(data.files.joined(separator: ", ")); \(data.tokens) positions scored in \(data.windows) windows of \(data.seqLen) tokens (fresh state each\((data.scoreFrom ?? 0) > 0 ? "; positions from \(data.scoreFrom!) on, the rest context" : "")).\n"
        out += "Δ is the paired difference from float with its 95% bootstrap interval over windows; task accuracies carry Wilson 95% intervals.\n"
        let files = results.map(\.file).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        for file in files {
            let rows = results.filter { $0.file == file }
            out += "\n## \(file == "total" ? "All text" : file)\n\n"
            // Task columns only where the text gave the task items.
            let (lastWordItems, choiceItems) = (rows.first?.taskSizes.lastWord ?? 0, rows.first?.taskSizes.choice ?? 0)
            out += "| model | bits | ppl | bits/token | Δ bits/token [95% CI] | bits/byte | KL (nats) | top-1 agree |"
                + (lastWordItems > 0 ? " last word (n=\(lastWordItems)) |" : "") + (choiceItems > 0 ? " choice of 4 (n=\(choiceItems)) |" : "") + "\n"
            out += "|---|---|---:|---:|---|---:|---:|---:|" + (lastWordItems > 0 ? "---|" : "") + (choiceItems > 0 ? "---|" : "") + "\n"
            for r in rows {
                let floatBPT = rows.first { $0.method == "none" }?.bitsPerToken ?? r.bitsPerToken
                let delta = r.confidenceIntervals.bitsPerTokenDelta.map {
                    String(format: "%+.4f [%+.4f, %+.4f]", r.bitsPerToken - floatBPT, $0.low, $0.high)
                } ?? "-"
                let spread = r.seedSpread.map { String(format: " ±%.4f", $0.bitsPerTokenStd) } ?? ""
                out += "| \(r.name) | \(r.bits) | " + String(format: "%.4f | %.4f%@ | %@ | %.4f | %.5f | %.2f%% |",
                    r.perplexity, r.bitsPerToken, spread, delta, r.bitsPerByte, r.kl, 100 * r.top1Agreement)
                    + (lastWordItems > 0 ? " \(percent(r.lastWordAccuracy, r.confidenceIntervals.lastWordAccuracy)) |" : "")
                    + (choiceItems > 0 ? " \(percent(r.choiceAccuracy, r.confidenceIntervals.choiceAccuracy)) |" : "") + "\n"
            }
        }
        let totals = results.filter { $0.file == files.last }
        out += "\n## Speed and memory (\(threads) threads)\n\n| model | bits | runtime | prefill tok/s | decode tok/s | weights MB | bits per weight | weights + run growth MB |\n|---|---|---|---:|---:|---:|---:|---:|\n"
        for r in totals {
            out += "| \(r.name) | \(r.bits) | \(r.runtime) | " + String(format: "%@ | %@ | %.2f | %@ | %@ |\n",
                opt(r.prefillTokensPerS, "%.0f"), opt(r.decodeTokensPerS, "%.1f"), Double(r.weightBytes) / 1e6,
                opt(r.bitsPerWeight, "%.2f"), opt(r.weightsPlusGrowthBytes.map { Double($0) / 1e6 }, "%.1f"))
        }
        if !sites.isEmpty {
            out += "\n## SQNR (dB) against the transformed float model, lowest site per layer\n\n"
            let models = sites.map { "\($0.method) \($0.bits)" }.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            let layers = Set(sites.compactMap(\.layer)).sorted()
            out += "| model | " + layers.map { "layer \($0)" }.joined(separator: " | ") + " | lm_head input |\n"
            out += "|---|" + String(repeating: "---|", count: layers.count + 1) + "\n"
            for m in models {
                let rows = sites.filter { "\($0.method) \($0.bits)" == m }
                let cells = layers.map { l -> String in
                    guard let worst = rows.filter({ $0.layer == l }).min(by: { $0.sqnrDb < $1.sqnrDb }) else { return "-" }
                    return String(format: "%.1f (%@)", worst.sqnrDb, worst.site)
                }
                let head = rows.first { $0.layer == nil }.map { String(format: "%.1f", $0.sqnrDb) } ?? "-"
                out += "| \(m) | " + cells.joined(separator: " | ") + " | \(head) |\n"
            }
        }
        if !notes.isEmpty { out += "\n" + notes.map { "- " + $0 }.joined(separator: "\n") + "\n" }
        return out
    }
}

private func percent(_ p: Double, _ ci: Interval) -> String {
    String(format: "%.1f%% [%.1f, %.1f]", 100 * p, 100 * ci.low, 100 * ci.high)
}

private func opt(_ v: Double?, _ format: String) -> String { v.map { String(format: format, $0) } ?? "-" }
