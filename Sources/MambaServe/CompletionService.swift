import Foundation
import MambaModel
import MambaTensors

/// Per-request limits: what one request may ask for (docs/DESIGN.md, "Serving").
public struct RequestLimits: Sendable {
    public var maxPromptTokens = 8192
    public var maxNewTokens = 4096
    public var maxBodyBytes = 8 << 20
    public var maxPrompts = 64
    public var maxLogprobs = 20
    public var maxStops = 16
    public init() {}
}

/// Turns completion requests into sequences on the scheduler and their events into OpenAI
/// responses: one JSON body, or server-sent events when streaming.
public final class CompletionService: Sendable {
    public let scheduler: Scheduler
    public let modelName: String
    public let limits: RequestLimits
    public let metrics: ServerMetrics
    public let created = Int(Date().timeIntervalSince1970)

    public init(scheduler: Scheduler, modelName: String, limits: RequestLimits, metrics: ServerMetrics) {
        self.scheduler = scheduler
        self.modelName = modelName
        self.limits = limits
        self.metrics = metrics
    }

    var tokenizer: Tokenizer { scheduler.tokenizer }

    /// One choice's prompt: its ids and the text echo returns.
    struct Prompt {
        var ids: [Int]
        var text: String
    }

    /// Checks a request against the model and the limits; the sequences it asks for.
    func plan(_ r: CompletionRequest) throws(APIError) -> (prompts: [Prompt], specs: [SequenceSpec]) {
        if let m = r.model, m != modelName {
            throw APIError(status: 404, "The model `\(m)` does not exist: this server serves `\(modelName)`", param: "model", code: "model_not_found")
        }
        if let n = r.n, n != 1 { throw .invalid("n must be 1: each prompt gets one choice", param: "n") }
        guard r.prompt.count > 0 else { throw .invalid("prompt is an empty list", param: "prompt") }
        guard r.prompt.count <= limits.maxPrompts else {
            throw .invalid("\(r.prompt.count) prompts in one request; at most \(limits.maxPrompts)", param: "prompt")
        }
        let maxTokens = r.maxTokens ?? 16
        guard maxTokens >= 0 && maxTokens <= limits.maxNewTokens else {
            throw .invalid("max_tokens must be in [0, \(limits.maxNewTokens)], got \(maxTokens)", param: "max_tokens")
        }
        let temperature = r.temperature ?? 1
        guard temperature >= 0 && temperature <= 2 else { throw .invalid("temperature must be in [0, 2], got \(temperature)", param: "temperature") }
        if let p = r.topP, !(p > 0 && p <= 1) { throw .invalid("top_p must be in (0, 1], got \(p)", param: "top_p") }
        // -1 and 0 mean no top-k, as vLLM reads them.
        if let k = r.topK, k < -1 { throw .invalid("top_k must be -1, 0 or positive, got \(k)", param: "top_k") }
        if let k = r.logprobs, k < 0 || k > limits.maxLogprobs {
            throw .invalid("logprobs must be in [0, \(limits.maxLogprobs)], got \(k)", param: "logprobs")
        }
        let stop = r.stop ?? []
        guard stop.count <= limits.maxStops, stop.allSatisfy({ !$0.isEmpty }) else {
            throw .invalid("stop takes at most \(limits.maxStops) non-empty strings", param: "stop")
        }
        let prompts: [Prompt]
        switch r.prompt {
        case .texts(let texts):
            // With the tokenizer's special tokens around it (a BOS where the model expects one), as
            // `generate` and transformers' tokenizer(prompt) give them.
            prompts = texts.map { Prompt(ids: tokenizer.encode($0, addSpecialTokens: true), text: $0) }
        case .tokens(let lists):
            prompts = lists.map { Prompt(ids: $0, text: tokenizer.decode($0)) }
        }
        let vocab = scheduler.model.vocabSize
        for (i, p) in prompts.enumerated() {
            guard !p.ids.isEmpty else { throw .invalid("prompt \(i) has no tokens", param: "prompt") }
            guard p.ids.count <= limits.maxPromptTokens else {
                throw .invalid("prompt \(i) has \(p.ids.count) tokens; this server takes at most \(limits.maxPromptTokens)", param: "prompt")
            }
            if let bad = p.ids.first(where: { $0 < 0 || $0 >= vocab }) {
                throw .invalid("token id \(bad) in prompt \(i) is outside the vocabulary [0, \(vocab))", param: "prompt")
            }
        }
        // The attention layers' KV caches for the whole context, refused up front when they cannot fit.
        let cache = prompts.reduce(0) { $0 + scheduler.model.config.kvCacheBytes(context: $1.ids.count + maxTokens) }
        if cache > 0, let available = SystemMemory.available(), cache > available {
            throw APIError(status: 503, "the KV caches of this request need \(Int(cache) >> 20) MiB but \(Int(available) >> 20) MiB is available")
        }
        let seed = r.seed ?? UInt64.random(in: 0...UInt64.max)
        let specs = prompts.map { p in
            var s = SequenceSpec(prompt: p.ids, maxTokens: maxTokens)
            s.temperature = Float(temperature)
            s.topK = r.topK.flatMap { $0 > 0 ? $0 : nil }
            s.topP = r.topP.map(Float.init)
            s.seed = seed
            s.stop = stop
            s.echo = r.echo ?? false
            s.logprobs = r.logprobs
            return s
        }
        return (prompts, specs)
    }

    func submit(_ specs: [SequenceSpec]) throws(APIError) -> [AsyncStream<SequenceEvent>] {
        do {
            return try scheduler.submit(specs)
        } catch {
            metrics.rejected.increment()
            switch error {
            case .queueFull(let waiting, let limit):
                throw APIError(status: 429, "the server is busy: \(waiting) sequences wait (limit \(limit)); retry later", code: "queue_full")
            case .shuttingDown:
                throw APIError(status: 503, "the server is shutting down", code: "shutting_down")
            }
        }
    }

    /// Runs a request to its end and returns the response body.
    public func complete(_ r: CompletionRequest) async throws(APIError) -> CompletionResponse {
        let (prompts, specs) = try plan(r)
        let streams = try submit(specs)
        let start = ContinuousClock.now
        var choices: [CompletionChoice] = []
        var generated = 0
        var first = true
        for (i, stream) in streams.enumerated() {
            var choice = ChoiceBuilder(index: i, prompt: prompts[i], echo: specs[i].echo, logprobs: specs[i].logprobs, tokenizer: tokenizer)
            for await event in stream {
                if case .failed(let message) = event { throw APIError(status: 500, message) }
                if case .token = event, first {
                    metrics.firstToken.record(ContinuousClock.now - start)
                    first = false
                }
                choice.add(event)
            }
            // A stream that ends without finishing was cancelled (the client went away).
            guard choice.finishReason != nil else { throw APIError(status: 499, "the request was cancelled") }
            generated += choice.generated
            choices.append(choice.choice)
        }
        return CompletionResponse(
            id: "cmpl-\(UUID().uuidString.lowercased())", created: Int(Date().timeIntervalSince1970), model: modelName, choices: choices,
            usage: metrics.count(prompts, generated: generated))
    }

    /// Runs a request as server-sent events: one `data: {chunk}` per token (and the echoed prompt),
    /// each with one choice; `data: [DONE]` after the last. Cancelling the iteration (a client that
    /// went away) cancels the sequences.
    public func stream(_ r: CompletionRequest) throws(APIError) -> AsyncStream<String> {
        let (prompts, specs) = try plan(r)
        let streams = try submit(specs)
        let id = "cmpl-\(UUID().uuidString.lowercased())"
        let (out, continuation) = AsyncStream<String>.makeStream()
        let encoder = JSONEncoder()
        let metrics = metrics, modelName = modelName, tokenizer = tokenizer
        let task = Task {
            let start = ContinuousClock.now
            await withTaskGroup(of: Int.self) { group in
                for (i, stream) in streams.enumerated() {
                    let prompt = prompts[i], spec = specs[i]
                    group.addTask {
                        var choice = ChoiceBuilder(index: i, prompt: prompt, echo: spec.echo, logprobs: spec.logprobs, tokenizer: tokenizer)
                        for await event in stream {
                            if case .failed(let message) = event {
                                continuation.yield("data: \(String(decoding: APIError(status: 500, message).json, as: UTF8.self))\n\n")
                                break
                            }
                            if case .token = event, choice.generated == 0, i == 0 { metrics.firstToken.record(ContinuousClock.now - start) }
                            let delta = choice.add(event)
                            // A token whose text waits (a possible stop string, an unfinished character) sends nothing.
                            if delta.text.isEmpty && delta.finishReason == nil && (delta.logprobs?.tokens.isEmpty ?? true) { continue }
                            let chunk = CompletionResponse(id: id, created: Int(Date().timeIntervalSince1970), model: modelName, choices: [delta], usage: nil)
                            if let data = try? encoder.encode(chunk) { continuation.yield("data: \(String(decoding: data, as: UTF8.self))\n\n") }
                        }
                        return choice.generated
                    }
                }
                var generated = 0
                for await g in group { generated += g }
                let usage = metrics.count(prompts, generated: generated)
                if r.streamUsage {
                    let last = CompletionResponse(id: id, created: Int(Date().timeIntervalSince1970), model: modelName, choices: [], usage: usage)
                    if let data = try? encoder.encode(last) { continuation.yield("data: \(String(decoding: data, as: UTF8.self))\n\n") }
                }
            }
            continuation.yield("data: [DONE]\n\n")
            continuation.finish()
        }
        continuation.onTermination = { reason in
            if case .cancelled = reason { task.cancel() }
        }
        return out
    }
}

extension ServerMetrics {
    /// Counts a finished request's tokens; its usage.
    func count(_ prompts: [CompletionService.Prompt], generated: Int) -> CompletionResponse.Usage {
        let usage = CompletionResponse.Usage(promptTokens: prompts.reduce(0) { $0 + $1.ids.count }, completionTokens: generated)
        promptTokens.increment(by: Int64(usage.promptTokens))
        generatedTokens.increment(by: Int64(generated))
        return usage
    }
}

/// Builds one choice from its sequence's events: the whole choice, and each event as a delta.
struct ChoiceBuilder {
    let index: Int
    let prompt: CompletionService.Prompt
    let echo: Bool
    let logprobs: Int?
    let tokenizer: Tokenizer
    var choice: CompletionChoice
    var finishReason: FinishReason?
    var generated = 0
    /// Characters of the text so far (OpenAI's text_offset counts from the prompt's start).
    private var offset: Int

    init(index: Int, prompt: CompletionService.Prompt, echo: Bool, logprobs: Int?, tokenizer: Tokenizer) {
        self.index = index
        self.prompt = prompt
        self.echo = echo
        self.logprobs = logprobs
        self.tokenizer = tokenizer
        choice = CompletionChoice(text: "", index: index, logprobs: logprobs == nil ? nil : Logprobs(), finishReason: nil)
        offset = echo ? 0 : prompt.text.count
    }

    /// Adds an event; returns it as a streamed choice (its text and logprobs only).
    @discardableResult
    mutating func add(_ event: SequenceEvent) -> CompletionChoice {
        var delta = CompletionChoice(text: "", index: index, logprobs: logprobs == nil ? nil : Logprobs(), finishReason: nil)
        switch event {
        case .prompt(let tokens):
            delta.text = prompt.text
            for t in tokens { append(t, to: &delta) }
        case .token(let t, let text):
            generated += 1
            delta.text = text
            append(t, to: &delta)
        case .finished(let reason, let text):
            delta.text = text
            delta.finishReason = reason.rawValue
            finishReason = reason
            choice.finishReason = reason.rawValue
        case .failed:
            break
        }
        choice.text += delta.text
        if let d = delta.logprobs {
            choice.logprobs?.tokens += d.tokens
            choice.logprobs?.tokenLogprobs += d.tokenLogprobs
            choice.logprobs?.topLogprobs += d.topLogprobs
            choice.logprobs?.textOffset += d.textOffset
        }
        return delta
    }

    private mutating func append(_ t: TokenLogprob, to delta: inout CompletionChoice) {
        guard logprobs != nil else { return }
        let text = tokenText(t.id)
        delta.logprobs!.tokens.append(text)
        delta.logprobs!.tokenLogprobs.append(t.logprob)
        if let lp = t.logprob {
            // The k most likely and, as OpenAI does, the chosen token (up to k + 1 entries).
            var top: [String: Double] = [:]
            for a in t.top {
                let key = tokenText(a.id)
                top[key] = max(top[key] ?? -.infinity, a.logprob)
            }
            top[text] = max(top[text] ?? -.infinity, lp)
            delta.logprobs!.topLogprobs.append(top)
        } else {
            delta.logprobs!.topLogprobs.append(nil)
        }
        delta.logprobs!.textOffset.append(offset)
        offset += text.count
    }

    /// A token's own text (special tokens included), invalid UTF-8 as U+FFFD.
    private func tokenText(_ id: Int) -> String {
        String(decoding: tokenizer.decodeBytes([id], skipSpecial: false), as: UTF8.self)
    }
}
