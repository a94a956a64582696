import Foundation
import MambaModel
import MambaTensors
import Synchronization

/// What one prompt asks of the model: one choice of a completion.
public struct SequenceSpec: Sendable {
    public var prompt: [Int]
    public var maxTokens: Int
    public var temperature: Float = 0
    public var topK: Int?
    public var topP: Float?
    public var seed: UInt64 = 0
    /// Generation stops before the first of these appears in the generated text.
    public var stop: [String] = []
    /// Report the prompt's tokens (and their log-probabilities when `logprobs` is set).
    public var echo = false
    /// nil: no log-probabilities; k: each token's and the k most likely at its position.
    public var logprobs: Int?

    public init(prompt: [Int], maxTokens: Int) {
        self.prompt = prompt
        self.maxTokens = maxTokens
    }
}

/// One token as a client sees it: its id, log-probability under the model (log-softmax of the raw
/// logits, before temperature, as vLLM reports them) and the most likely tokens at its position.
public struct TokenLogprob: Sendable, Equatable {
    public var id: Int
    public var logprob: Double?
    public var top: [Alternative]

    public struct Alternative: Sendable, Equatable {
        public var id: Int
        public var logprob: Double
    }
}

public enum FinishReason: String, Sendable {
    case stop, length
}

/// What a sequence reports, in order: its prompt (once, when echoed), then each generated token with
/// the text it releases, then the end with the text held back until then.
public enum SequenceEvent: Sendable {
    case prompt([TokenLogprob])
    case token(TokenLogprob, text: String)
    case finished(FinishReason, text: String)
    case failed(String)
}

/// One prompt's run on the scheduler's thread: a prefill in chunks, then decode steps, one unit of
/// work per `step` so that the scheduler can interleave sequences (Scheduler.swift).
final class SequenceJob: @unchecked Sendable {
    let spec: SequenceSpec
    private let continuation: AsyncStream<SequenceEvent>.Continuation
    private let cancelled = Atomic<Bool>(false)
    private var state: MambaState?
    private var consumed = 0
    private var lastRow: [Float] = []
    private var promptTokens: [TokenLogprob] = []
    private var generated = 0
    private var sampler: Sampler
    private var utf8 = UTF8Stream()
    /// Generated text not yet released: it may be the start of a stop string.
    private var held = ""
    /// The last event, sent by `end()` once the scheduler has freed the sequence's slot (a client
    /// that sends its next request on this answer finds the slot free).
    private var last: SequenceEvent?

    init(spec: SequenceSpec, continuation: AsyncStream<SequenceEvent>.Continuation) {
        self.spec = spec
        self.continuation = continuation
        sampler = Sampler(temperature: spec.temperature, topK: spec.topK, topP: spec.topP, seed: spec.seed)
    }

    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
    /// Called from any thread (a client that went away); the scheduler drops the job before its next step.
    func cancel() { cancelled.store(true, ordering: .relaxed) }

    /// Ends the stream without a result (cancelled, or the server stopping).
    func abandon() { continuation.finish() }

    /// Sends the last event and ends the stream.
    func end() {
        if let last { continuation.yield(last) }
        continuation.finish()
    }

    /// Runs one unit (a prefill chunk or one decode step); returns true when the sequence is done
    /// (then `end()` sends its last event).
    func step(_ model: MambaLM, _ tokenizer: Tokenizer, prefillChunk: Int, _ par: Parallelism) -> Bool {
        do {
            return try consumed < spec.prompt.count ? prefill(model, chunk: prefillChunk, par) : decode(model, tokenizer, par)
        } catch {
            last = .failed("\(error)")
            return true
        }
    }

    private func prefill(_ model: MambaLM, chunk: Int, _ par: Parallelism) throws -> Bool {
        if state == nil {
            var s = model.makeState()
            s.reserve(context: spec.prompt.count + spec.maxTokens)
            state = s
        }
        let end = min(consumed + chunk, spec.prompt.count)
        let piece = Array(spec.prompt[consumed..<end])
        let scorePrompt = spec.echo && spec.logprobs != nil
        let last = end == spec.prompt.count
        let logits = try model.forward(piece, state: &state!, logits: scorePrompt ? .all : (last ? .last : .none), parallelism: par)
        let v = logits.cols
        if spec.echo {
            for (j, id) in piece.enumerated() {
                let t = consumed + j
                guard scorePrompt, t > 0 else { promptTokens.append(TokenLogprob(id: id, logprob: nil, top: [])); continue }
                // The row before position t predicts token t: the previous chunk's last row at j = 0.
                let entry = j == 0
                    ? lastRow.withUnsafeBufferPointer { tokenLogprob($0, id: id, top: spec.logprobs!) }
                    : logits.storage.withUnsafeBufferPointer { p in
                        tokenLogprob(UnsafeBufferPointer(rebasing: p[((j - 1) * v)..<(j * v)]), id: id, top: spec.logprobs!)
                    }
                promptTokens.append(entry)
            }
        }
        if logits.rows > 0 { lastRow = Array(logits.storage[((logits.rows - 1) * v)..<(logits.rows * v)]) }
        consumed = end
        guard last else { return false }
        if spec.echo { continuation.yield(.prompt(promptTokens)) }
        promptTokens = []
        if spec.maxTokens == 0 { return finish(.length) }
        return false
    }

    private func decode(_ model: MambaLM, _ tokenizer: Tokenizer, _ par: Parallelism) throws -> Bool {
        let next = sampler.next(lastRow[...])
        let entry = spec.logprobs.map { k in lastRow.withUnsafeBufferPointer { tokenLogprob($0, id: next, top: k) } }
            ?? TokenLogprob(id: next, logprob: nil, top: [])
        generated += 1
        held += utf8.append(tokenizer.decodeBytes([next]))
        if next == tokenizer.endOfText {
            held += utf8.flush()
            continuation.yield(.token(entry, text: ""))
            return finish(.stop)
        }
        if let cut = firstStop(in: held) {
            let text = String(held[..<cut])
            held = ""
            utf8 = UTF8Stream()   // bytes after the stop string are dropped with it
            continuation.yield(.token(entry, text: text))
            return finish(.stop)
        }
        if generated == spec.maxTokens {
            continuation.yield(.token(entry, text: ""))
            return finish(.length)
        }
        continuation.yield(.token(entry, text: release()))
        let logits = try model.forward([next], state: &state!, logits: .last, parallelism: par)
        lastRow = logits.storage
        return false
    }

    /// Ends the sequence with the text still held (with no stop string in it).
    private func finish(_ reason: FinishReason) -> Bool {
        var text = held + utf8.flush()
        if let cut = firstStop(in: text) { text = String(text[..<cut]) }
        held = ""
        state = nil
        last = .finished(reason, text: text)
        return true
    }

    private func firstStop(in text: String) -> String.Index? {
        spec.stop.compactMap { text.range(of: $0)?.lowerBound }.min()
    }

    /// Releases the held text but for its longest ending that begins some stop string.
    private func release() -> String {
        var keep = 0
        for s in spec.stop {
            for n in stride(from: min(s.count, held.count), to: keep, by: -1) where held.hasSuffix(s.prefix(n)) {
                keep = n
                break
            }
        }
        let cut = held.index(held.endIndex, offsetBy: -keep)
        let out = String(held[..<cut])
        held = String(held[cut...])
        return out
    }
}

/// log softmax(row)[id] in Double, and the `top` most likely ids with theirs.
func tokenLogprob(_ row: UnsafeBufferPointer<Float>, id: Int, top: Int) -> TokenLogprob {
    var m = -Double.infinity
    for v in row { m = max(m, Double(v)) }
    var s = 0.0
    for v in row { s += exp(Double(v) - m) }
    let lse = m + log(s)
    var best: [TokenLogprob.Alternative] = []
    if top > 0 {
        best.reserveCapacity(top + 1)
        for (i, v) in row.enumerated() where best.count < top || Double(v) - lse > best[best.count - 1].logprob {
            let alt = TokenLogprob.Alternative(id: i, logprob: Double(v) - lse)
            let at = best.firstIndex { $0.logprob < alt.logprob } ?? best.count
            best.insert(alt, at: at)
            if best.count > top { best.removeLast() }
        }
    }
    return TokenLogprob(id: id, logprob: Double(row[id]) - lse, top: best)
}
