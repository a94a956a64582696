import Foundation
import MambaModel
import MambaTensors

// Two zero-shot tasks built deterministically from held-out text, so that a quantized model can be
// compared with its float source on something besides perplexity (the paper's tables use
// LAMBADA, HellaSwag, PIQA, ARC and WinoGrande; none can be downloaded here).

/// Last-word prediction in the style of LAMBADA (Paperno et al. 2016): the context runs up to the
/// last word of a line; the model must produce every token of that word greedily.
public struct LastWordItem: Sendable, Equatable {
    public let context: [Int]
    public let target: [Int]

    public init(context: [Int], target: [Int]) {
        self.context = context
        self.target = target
    }
}

/// A continuation chosen among four (the true one and three of the same length from other places
/// of the same text) by length-normalized log-likelihood, in the style of HellaSwag (Zellers et
/// al. 2019).
public struct ChoiceItem: Sendable, Equatable {
    public let context: [Int]
    public let choices: [[Int]]
    public let answer: Int

    public init(context: [Int], choices: [[Int]], answer: Int) {
        self.context = context; self.choices = choices; self.answer = answer
    }
}

public struct TaskSet: Sendable {
    public var lastWord: [LastWordItem]
    public var choice: [ChoiceItem]

    public init(lastWord: [LastWordItem], choice: [ChoiceItem]) {
        self.lastWord = lastWord
        self.choice = choice
    }

    /// Builds both tasks from one text. Lines whose last word has at least 3 letters give
    /// last-word items (context: the `contextBytes` of text before it, cut at a line start);
    /// choice items take `contextTokens` tokens then `continuationTokens` tokens at evenly spaced
    /// places; distractors and the answer's position are drawn with `seed`.
    public static func build(
        text: String, tokenizer: Tokenizer, items: Int, contextBytes: Int = 160,
        contextTokens: Int = 64, continuationTokens: Int = 16, seed: UInt64
    ) -> TaskSet {
        var rng = SeededRandom(seed: seed)

        // Last word: candidate lines, then a seeded sample of them in text order.
        let bytes = Array(text.utf8)
        var candidates: [(start: Int, wordStart: Int, wordEnd: Int)] = []
        var lineStart = 0
        for i in bytes.indices where bytes[i] == 0x0A {
            var end = i
            while end > lineStart, !isLetter(bytes[end - 1]) { end -= 1 }       // drop trailing punctuation
            var start = end
            while start > lineStart, isLetter(bytes[start - 1]) { start -= 1 }
            if end - start >= 3, start > lineStart, bytes[start - 1] == 0x20, start - 1 - lineStart >= 8 {
                // Context starts at the first line start at least `contextBytes` before the word.
                var c = max(0, start - 1 - contextBytes)
                while c > 0, bytes[c - 1] != 0x0A { c -= 1 }
                candidates.append((c, start, end))
            }
            lineStart = i + 1
        }
        var picked = Array(candidates.indices)
        shuffle(&picked, &rng)
        let lastWord = picked.prefix(items).sorted().compactMap { k -> LastWordItem? in
            let (c, s, e) = candidates[k]
            let context = tokenizer.encode(String(decoding: bytes[c..<(s - 1)], as: UTF8.self))
            let target = tokenizer.encode(String(decoding: bytes[(s - 1)..<e], as: UTF8.self))   // " word"
            return context.isEmpty || target.isEmpty ? nil : LastWordItem(context: context, target: target)
        }

        // Choice: evenly spaced spans over the token stream.
        let tokens = tokenizer.encode(text)
        let span = contextTokens + continuationTokens
        let available = tokens.count / span
        let n = min(items, available)
        var choice: [ChoiceItem] = []
        if n >= 4 {
            let stride = available / n
            let spans = (0..<n).map { k in
                let start = k * stride * span
                return (Array(tokens[start..<(start + contextTokens)]), Array(tokens[(start + contextTokens)..<(start + span)]))
            }
            for k in 0..<n {
                var others = (0..<n).filter { $0 != k }
                shuffle(&others, &rng)
                var choices = others.prefix(3).map { spans[$0].1 }
                let answer = Int(rng.next() % 4)
                choices.insert(spans[k].1, at: answer)
                choice.append(ChoiceItem(context: spans[k].0, choices: choices, answer: answer))
            }
        }
        return TaskSet(lastWord: lastWord, choice: choice)
    }
}

@inline(__always) private func isLetter(_ b: UInt8) -> Bool { (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) }

/// Fisher-Yates with the seeded generator (the standard library's shuffle may change between
/// toolchains; the byte-identical rule needs a fixed one).
func shuffle<T>(_ a: inout [T], _ rng: inout SeededRandom) {
    guard a.count > 1 else { return }
    for i in stride(from: a.count - 1, to: 0, by: -1) {
        let j = Int(rng.next() % UInt64(i + 1))
        a.swapAt(i, j)
    }
}

/// Per-item outcomes of one model on a task set (kept per item for paired comparisons).
public struct TaskOutcomes: Sendable, Equatable {
    public var lastWord: [Bool] = []
    public var choice: [Bool] = []

    public init() {}

    public var lastWordAccuracy: Double { Double(lastWord.filter { $0 }.count) / Double(max(1, lastWord.count)) }
    public var choiceAccuracy: Double { Double(choice.filter { $0 }.count) / Double(max(1, choice.count)) }
}

extension TaskSet {
    /// Runs `model` on every item.
    public func evaluate(_ model: MambaLM, parallelism: Parallelism) throws -> TaskOutcomes {
        var out = TaskOutcomes()
        for item in lastWord {
            let seq = item.context + item.target
            var state = model.makeState()
            let logits = try model.forward(Array(seq.dropLast()), state: &state, logits: .all, parallelism: parallelism)
            let v = logits.cols
            var correct = true
            for (k, t) in item.target.enumerated() {
                let row = item.context.count - 1 + k
                if argmax(logits.storage[(row * v)..<((row + 1) * v)]) != t { correct = false; break }
            }
            out.lastWord.append(correct)
        }
        for item in choice {
            var state = model.makeState()
            let last = try model.forward(item.context, state: &state, logits: .last, parallelism: parallelism)
            var best = (score: -Double.infinity, index: -1)
            for (c, continuation) in item.choices.enumerated() {
                var s = state
                var nll = negativeLogLikelihood(last.storage[...], target: continuation[0])
                if continuation.count > 1 {
                    let logits = try model.forward(Array(continuation.dropLast()), state: &s, logits: .all, parallelism: parallelism)
                    let v = logits.cols
                    for k in 1..<continuation.count {
                        nll += negativeLogLikelihood(logits.storage[((k - 1) * v)..<(k * v)], target: continuation[k])
                    }
                }
                let score = -nll / Double(continuation.count)
                if score > best.score { best = (score, c) }
            }
            out.choice.append(best.index == item.answer)
        }
        return out
    }
}

func argmax(_ row: ArraySlice<Float>) -> Int {
    var best = row.startIndex
    for i in row.indices where row[i] > row[best] { best = i }
    return best - row.startIndex
}
