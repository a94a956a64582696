import MambaTensors

/// Greedy or sampled generation: one prefill over the prompt, then decode steps that carry the
/// conv and SSM state (a step is the same forward on one token).
public struct Generation {
    public var model: MambaLM
    public var parallelism: Parallelism

    public init(model: MambaLM, parallelism: Parallelism) {
        self.model = model
        self.parallelism = parallelism
    }

    /// Runs the prompt, then up to `maxNewTokens` tokens, calling `onToken` with each new id. Stops
    /// after `stop` is produced. Returns the prompt's logits [L, V] when asked for, else [0, V].
    @discardableResult
    public func run(
        prompt: [Int], maxNewTokens: Int, sampler: inout Sampler, stop: Int?, promptLogits: Bool = false,
        onToken: (Int) throws -> Void
    ) throws -> Tensor {
        // The attention layers' KV caches for the whole context, refused up front when they cannot fit.
        let context = min(prompt.count, Int.max / 4) + min(maxNewTokens, Int.max / 4)
        let cache = model.config.kvCacheBytes(context: context)
        if cache > 0, let available = SystemMemory.available(), cache > available {
            throw MambaError(.outOfMemory, "the KV caches of \(context) tokens (prompt and new tokens) need \(gigabytes(cache)) but \(gigabytes(available)) is available (\(SystemMemory.availableSource())): ask for fewer new tokens or a shorter prompt")
        }
        var state = model.makeState()
        state.reserve(context: context)
        let logits = try model.forward(prompt, state: &state, logits: promptLogits ? .all : .last, parallelism: parallelism)
        var last = logits.rows((logits.rows - 1)..<logits.rows)
        // Decode steps on every thread of the budget through spinning workers (SpinWorkers.swift).
        try parallelism.withSpinningWorkers { par in
            for _ in 0..<maxNewTokens {
                let next = sampler.next(last.storage[...])
                try onToken(next)
                if next == stop { break }
                last = try model.forward([next], state: &state, logits: .last, parallelism: par)
            }
        }
        return promptLogits ? logits : Tensor(zeros: [0, model.vocabSize])
    }
}
