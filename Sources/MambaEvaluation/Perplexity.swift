import Foundation
import MambaModel
import MambaTensors

/// Negative log-likelihood of text under a model, by the evaluation protocol of docs/DESIGN.md section 5:
/// non-overlapping windows of `seqLength` tokens, each from a fresh state, every position but the
/// window's first scored; a file's last, shorter window counts when it has at least 2 tokens;
/// windows never cross files.
public struct LikelihoodScore: Sendable, Equatable, Codable {
    public var nats: Double = 0          // sum of -log p(token)
    public var tokens: Int = 0           // tokens scored
    public var bytes: Int = 0            // UTF-8 bytes of the tokens scored
    public var windows: Int = 0

    public init() {}

    public var bitsPerToken: Double { nats / Double(max(tokens, 1)) / log(2) }
    public var bitsPerByte: Double { nats / Double(max(bytes, 1)) / log(2) }
    public var perplexity: Double { exp(nats / Double(max(tokens, 1))) }

    public mutating func add(_ o: LikelihoodScore) {
        nats += o.nats; tokens += o.tokens; bytes += o.bytes; windows += o.windows
    }
}

/// The windows of one tokenized file: non-overlapping, the last one shorter, none under 2 tokens.
public func evaluationWindows(_ tokens: [Int], seqLength: Int, maxTokens: Int? = nil) -> [[Int]] {
    var out: [[Int]] = []
    var start = 0
    let end = min(tokens.count, maxTokens ?? tokens.count)
    while end - start >= 2 {
        let stop = min(end, start + seqLength)
        out.append(Array(tokens[start..<stop]))
        start = stop
    }
    return out
}

/// -log softmax(logits)[target] in Double.
public func negativeLogLikelihood(_ logits: ArraySlice<Float>, target: Int) -> Double {
    var m = -Double.infinity
    for v in logits { m = max(m, Double(v)) }
    var s = 0.0
    for v in logits { s += exp(Double(v) - m) }
    return (m + log(s)) - Double(logits[logits.startIndex + target])
}

/// Scores one window: the logits at positions 0..<n-1 predict tokens 1..<n.
public func scoreWindow(_ model: MambaLM, _ window: [Int], tokenBytes: (Int) -> Int, parallelism: Parallelism) throws -> (LikelihoodScore, Tensor) {
    let logits = try model.logits(window, parallelism: parallelism)
    var score = LikelihoodScore()
    let v = logits.cols
    for t in 0..<(window.count - 1) {
        score.nats += negativeLogLikelihood(logits.storage[(t * v)..<((t + 1) * v)], target: window[t + 1])
        score.bytes += tokenBytes(window[t + 1])
    }
    // A score of NaN or Inf (weights that overflow float32 on the way) is refused, never printed.
    guard score.nats.isFinite else {
        throw MambaError(.badInput, "the model's logits are not finite on a window of \(window.count) tokens: its weights or activations overflow float32")
    }
    score.tokens = window.count - 1
    score.windows = 1
    return (score, logits)
}

/// Scores every window of every file.
public func evaluateLikelihood(
    _ model: MambaLM, files: [[Int]], seqLength: Int, tokenBytes: (Int) -> Int, parallelism: Parallelism,
    maxTokens: Int? = nil, progress: ((Int, Int) -> Void)? = nil
) throws -> LikelihoodScore {
    let windows = files.flatMap { evaluationWindows($0, seqLength: seqLength, maxTokens: maxTokens) }
    var total = LikelihoodScore()
    for (i, w) in windows.enumerated() {
        total.add(try scoreWindow(model, w, tokenBytes: tokenBytes, parallelism: parallelism).0)
        progress?(i + 1, windows.count)
    }
    return total
}

extension Tokenizer {
    /// UTF-8 bytes of one token (for bits per byte).
    public func byteCount(_ id: Int) -> Int { decodeBytes([id], skipSpecial: false).count }
}
