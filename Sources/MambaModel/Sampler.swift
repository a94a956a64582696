import Foundation
import MambaTensors

/// Picks the next token from one row of logits: greedy (temperature 0, the default), or sampling
/// with temperature, then top-k, then top-p (nucleus), from a seeded generator.
public struct Sampler: Sendable {
    public var temperature: Float
    public var topK: Int?
    public var topP: Float?
    private var random: SeededRandom

    public init(temperature: Float = 0, topK: Int? = nil, topP: Float? = nil, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        random = SeededRandom(seed: seed)
    }

    public mutating func next(_ logits: ArraySlice<Float>) -> Int {
        let base = logits.startIndex
        guard temperature > 0 else {
            var best = base
            for i in logits.indices where logits[i] > logits[best] { best = i }
            return best - base
        }
        var order = Array(0..<logits.count).sorted { logits[base + $0] > logits[base + $1] }
        if let k = topK, k > 0, k < order.count { order.removeLast(order.count - k) }
        let top = Double(logits[base + order[0]])
        var probs = order.map { Foundation.exp((Double(logits[base + $0]) - top) / Double(temperature)) }
        let total = probs.reduce(0, +)
        probs = probs.map { $0 / total }
        if let p = topP, p > 0, p < 1 {
            var cumulative = 0.0, keep = 0
            while keep < probs.count { cumulative += probs[keep]; keep += 1; if cumulative >= Double(p) { break } }
            order.removeLast(order.count - keep)
            probs.removeLast(probs.count - keep)
            let s = probs.reduce(0, +)
            probs = probs.map { $0 / s }
        }
        var u = random.nextUnit()
        for (i, p) in probs.enumerated() {
            u -= p
            if u < 0 { return order[i] }
        }
        return order[order.count - 1]
    }
}

/// Turns a stream of UTF-8 bytes into text without ever splitting a character: bytes of an
/// unfinished character wait for the next token.
public struct UTF8Stream: Sendable {
    private var pending: [UInt8] = []
    public init() {}

    public mutating func append(_ bytes: [UInt8]) -> String {
        pending.append(contentsOf: bytes)
        var cut = pending.count
        // Look back over at most 3 bytes for the lead byte of an unfinished sequence.
        var k = pending.count - 1
        while k >= 0 && k >= pending.count - 4 {
            let b = pending[k]
            if b & 0xC0 != 0x80 {
                let need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                if pending.count - k < need { cut = k }
                break
            }
            k -= 1
        }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Whatever is left (an unfinished character becomes U+FFFD).
    public mutating func flush() -> String {
        defer { pending = [] }
        return String(decoding: pending, as: UTF8.self)
    }
}
