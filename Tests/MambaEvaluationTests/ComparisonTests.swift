import Foundation
import MambaEvaluation
import TestSupport
import XCTest

/// compareOnWindows against brute force, and the zero-shot tasks' construction and scoring.
final class ComparisonTests: XCTestCase {
    let config = MambaConfig(hiddenSize: 16, numLayers: 2, stateSize: 4, convKernel: 3, timeStepRank: 2, vocabSize: 30)

    func windows(seed: UInt64) -> [[Int]] {
        var rng = SeededRandom(seed: seed)
        return [13, 7, 2, 11].map { n in (0..<n).map { _ in Int(rng.next() % 30) } }
    }

    /// Every position, and (`scoreFrom`, llama-perplexity's second half) only the later ones: a
    /// window shorter than that scores nothing but still counts as a window.
    func testAgainstBruteForce() throws {
        let a = MambaLM(weights: randomWeights(config, seed: 1)), b = MambaLM(weights: randomWeights(config, seed: 2))
        let ws = windows(seed: freshSeed(in: 0...1_000_000))
        for from in [0, 5] {
            let r = try compareOnWindows(reference: a, candidates: [a, b], windows: ws, tokenBytes: { _ in 2 }, parallelism: .serial, scoreFrom: from)
            XCTAssertEqual(r.count, 3)
            XCTAssertEqual(r[1].meanKL, 0, accuracy: 1e-12)
            XCTAssertEqual(r[1].top1Agreement, 1)
            XCTAssertEqual(r[1].score.nats, r[0].score.nats, accuracy: 1e-9)

            var kl = 0.0, agree = 0, nats = 0.0, positions = 0
            for w in ws {
                let (la, lb) = (try a.logits(w), try b.logits(w))
                let v = la.cols
                for t in 0..<(w.count - 1) where t >= from {
                    let pa = softmax(Array(la.storage[(t * v)..<((t + 1) * v)])), pb = softmax(Array(lb.storage[(t * v)..<((t + 1) * v)]))
                    for j in 0..<v { kl += pa[j] * log(pa[j] / pb[j]) }
                    if pa.firstIndex(of: pa.max()!) == pb.firstIndex(of: pb.max()!) { agree += 1 }
                    nats -= log(pb[w[t + 1]])
                    positions += 1
                }
            }
            XCTAssertEqual(positions, from == 0 ? 29 : 7 + 1 + 0 + 5, "windows of 13, 7, 2 and 11 tokens")
            XCTAssertEqual(r[2].positions, positions, "from \(from)")
            XCTAssertEqual(r[2].meanKL, kl / Double(positions), accuracy: 1e-9)
            XCTAssertEqual(r[2].top1Agreements, agree)
            XCTAssertEqual(r[2].score.nats, nats, accuracy: 1e-6)
            XCTAssertEqual(r[2].score.bytes, 2 * positions)
            XCTAssertEqual(r[2].score.windows, 4)
            // Two threads: the same numbers.
            let two = try compareOnWindows(reference: a, candidates: [a, b], windows: ws, tokenBytes: { _ in 2 }, parallelism: Parallelism(threads: 2),
                                           scoreFrom: from)
            XCTAssertEqual(two, r)
        }
    }

    func softmax(_ x: [Float]) -> [Double] {
        let m = Double(x.max()!)
        let e = x.map { exp(Double($0) - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    func testTasksAreBuiltDeterministicallyFromTheText() throws {
        let tokenizer = try Tokenizer(contentsOf: Fixtures.packageRoot + "/models/bard-mamba/tokenizer.json")
        let text = try String(contentsOfFile: Fixtures.packageRoot + "/calibration/shakespeare-test.txt", encoding: .utf8)
        let sample = String(text.prefix(20000))
        let t = TaskSet.build(text: sample, tokenizer: tokenizer, items: 12, contextTokens: 40, continuationTokens: 10, seed: 5)
        XCTAssertEqual(t.lastWord.count, 12)
        XCTAssertEqual(t.choice.count, 12)
        for item in t.lastWord {
            let word = tokenizer.decode(item.target)
            XCTAssertTrue(word.hasPrefix(" ") && word.dropFirst().allSatisfy(\.isLetter) && word.count >= 4, "\"\(word)\"")
            XCTAssertTrue(sample.contains(tokenizer.decode(item.context) + word), "the item is a piece of the text")
        }
        for item in t.choice {
            XCTAssertEqual(item.context.count, 40)
            XCTAssertEqual(item.choices.count, 4)
            XCTAssertTrue(item.choices.allSatisfy { $0.count == 10 })
            XCTAssertTrue(sample.contains(tokenizer.decode(item.context + item.choices[item.answer])))
        }
        XCTAssertEqual(Set(t.choice.map(\.answer)).count > 1, true, "the answer's position is drawn")
        let again = TaskSet.build(text: sample, tokenizer: tokenizer, items: 12, contextTokens: 40, continuationTokens: 10, seed: 5)
        XCTAssertEqual(again.lastWord, t.lastWord)
        XCTAssertEqual(again.choice, t.choice)
    }

    /// Scoring from the context's state equals scoring the whole sequence from scratch.
    func testChoiceScoringMatchesFullSequences() throws {
        let m = MambaLM(weights: randomWeights(config, seed: 4))
        var rng = SeededRandom(seed: freshSeed(in: 0...1_000_000))
        var expected: [Bool] = []
        var items: [ChoiceItem] = []
        for _ in 0..<6 {
            let context = (0..<9).map { _ in Int(rng.next() % 30) }
            let choices = (0..<4).map { _ in (0..<5).map { _ in Int(rng.next() % 30) } }
            let scores = try choices.map { c -> Double in
                let logits = try m.logits(context + c)
                return -(0..<c.count).reduce(0.0) { s, k in
                    s + negativeLogLikelihood(logits.storage[((context.count - 1 + k) * 30)..<((context.count + k) * 30)], target: c[k])
                } / Double(c.count)
            }
            let answer = Int(rng.next() % 4)
            items.append(ChoiceItem(context: context, choices: choices, answer: answer))
            expected.append(scores.firstIndex(of: scores.max()!) == answer)
        }
        let outcomes = try TaskSet(lastWord: [], choice: items).evaluate(m, parallelism: .serial)
        XCTAssertEqual(outcomes.choice, expected)
    }
}
