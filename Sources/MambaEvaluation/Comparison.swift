import Foundation
import MambaModel
import MambaTensors

/// One model's accuracy against the reference (float) model on the same windows, kept per window
/// so that differences get paired confidence intervals.
public struct ModelAccuracy: Sendable, Equatable {
    public var windowNats: [Double] = []      // sum of -log p(token) per window
    public var windowTokens: [Double] = []    // positions scored per window
    public var windowBytes: [Double] = []     // UTF-8 bytes of the tokens scored per window
    public var klNats = 0.0                   // sum over positions of KL(reference || model)
    public var top1Agreements = 0             // positions whose argmax equals the reference's

    public init() {}

    public var score: LikelihoodScore {
        var s = LikelihoodScore()
        s.nats = windowNats.reduce(0, +)
        s.tokens = Int(windowTokens.reduce(0, +))
        s.bytes = Int(windowBytes.reduce(0, +))
        s.windows = windowNats.count
        return s
    }

    public var positions: Int { Int(windowTokens.reduce(0, +)) }
    /// Mean KL divergence of the model's next-token distribution from the reference's, in nats.
    public var meanKL: Double { klNats / Double(max(1, positions)) }
    public var top1Agreement: Double { Double(top1Agreements) / Double(max(1, positions)) }

    mutating func append(_ w: ModelAccuracy) {
        windowNats += w.windowNats; windowTokens += w.windowTokens; windowBytes += w.windowBytes
        klNats += w.klNats; top1Agreements += w.top1Agreements
    }
}

/// log-softmax of one row, in Double.
func logSoftmax(_ row: ArraySlice<Float>, into out: inout [Double]) {
    var m = -Double.infinity
    for v in row { m = max(m, Double(v)) }
    var s = 0.0
    for v in row { s += exp(Double(v) - m) }
    let lse = m + log(s)
    var k = 0
    for v in row { out[k] = Double(v) - lse; k += 1 }
}

/// Scores `reference` and every candidate on the same windows (docs/DESIGN.md section 5's protocol):
/// per window the reference's log-probabilities are computed once and each candidate is measured
/// against them (KL, top-1 agreement) as well as against the text (NLL). Result 0 is the
/// reference (KL 0, agreement 1). Windows run `parallelism.threads` at a time. With `scoreFrom`
/// the logits at positions before it are context only (llama-perplexity scores the second half of
/// each window: `scoreFrom` = half the window, so its KL and ours cover the same positions).
public func compareOnWindows(
    reference: MambaLM, candidates: [MambaLM], windows: [[Int]], tokenBytes: @escaping (Int) -> Int,
    parallelism: Parallelism, scoreFrom: Int = 0, progress: ((Int, Int) -> Void)? = nil
) throws -> [ModelAccuracy] {
    let serial = Parallelism(threads: 1)
    let bytesOf = UncheckedSendable(tokenBytes)
    let perWindow = try parallelism.threads == 1
        ? (0..<windows.count).map { i -> [ModelAccuracy] in
            defer { progress?(i + 1, windows.count) }
            return try compareWindow(reference, candidates, windows[i], scoreFrom, bytesOf.value, parallelism)
        }
        : parallelism.concurrentMap(windows.count, { i in try compareWindow(reference, candidates, windows[i], scoreFrom, bytesOf.value, serial) },
                                    afterBatch: { progress?($0, windows.count) })
    var out = [ModelAccuracy](repeating: ModelAccuracy(), count: candidates.count + 1)
    for w in perWindow { for m in out.indices { out[m].append(w[m]) } }
    return out
}

private func compareWindow(_ reference: MambaLM, _ candidates: [MambaLM], _ window: [Int], _ from: Int, _ tokenBytes: (Int) -> Int,
                           _ par: Parallelism) throws -> [ModelAccuracy] {
    // Logits at positions from..<count-1 predict tokens from+1..<count.
    let positions = min(from, window.count - 1)..<(window.count - 1)
    let scored = positions.count
    let bytes = Double(positions.reduce(0) { $0 + tokenBytes(window[$1 + 1]) })
    let refLogits = try reference.logits(window, parallelism: par)
    let v = refLogits.cols
    var refLogProbs = [[Double]](repeating: [Double](repeating: 0, count: v), count: scored)
    var refArgmax = [Int](repeating: 0, count: scored)
    var ref = ModelAccuracy()
    var nats = 0.0
    for (k, t) in positions.enumerated() {
        let row = refLogits.storage[(t * v)..<((t + 1) * v)]
        logSoftmax(row, into: &refLogProbs[k])
        refArgmax[k] = argmax(row)
        nats -= refLogProbs[k][window[t + 1]]
    }
    ref.windowNats = [nats]; ref.windowTokens = [Double(scored)]; ref.windowBytes = [bytes]
    ref.top1Agreements = scored
    var out = [ref]
    var lp = [Double](repeating: 0, count: v)
    for model in candidates {
        let logits = try model.logits(window, parallelism: par)
        var acc = ModelAccuracy()
        var n = 0.0, kl = 0.0
        for (k, t) in positions.enumerated() {
            let row = logits.storage[(t * v)..<((t + 1) * v)]
            logSoftmax(row, into: &lp)
            n -= lp[window[t + 1]]
            refLogProbs[k].withUnsafeBufferPointer { r in
                for j in 0..<v { kl += exp(r[j]) * (r[j] - lp[j]) }
            }
            if argmax(row) == refArgmax[k] { acc.top1Agreements += 1 }
        }
        acc.windowNats = [n]; acc.windowTokens = [Double(scored)]; acc.windowBytes = [bytes]
        acc.klNats = kl
        out.append(acc)
    }
    return out
}
