import ArgumentParser
import Foundation
import MambaModel
import MambaQuantization
import MambaServe
import MambaTensors

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a checkpoint (float or quantized) over an OpenAI-compatible HTTP API (completions with logprobs, streaming).")

    @Option(help: "Checkpoint directory (config.json, model.safetensors, tokenizer.json).")
    var model: String
    @Option(help: "Address to bind; 127.0.0.1 keeps the server local (0.0.0.0 exposes it).")
    var host = "127.0.0.1"
    @Option(help: "Port (0: any free port, printed at start).")
    var port = 8080
    @Option(help: "Require `Authorization: Bearer KEY` on every request (or set MAMBAQUANT_API_KEY, which keeps the key out of the process list).")
    var apiKey: String?
    @Option(help: "Name clients give as `model` (default: the checkpoint directory's name).")
    var servedModelName: String?
    @Option(help: "Sequences running at once; the others wait their turn.")
    var maxConcurrency = 4
    @Option(help: "Sequences that may wait beyond those running; more are refused at once with 429.")
    var maxQueue = 64
    @Option(help: "Longest prompt in tokens.")
    var maxPromptTokens = 8192
    @Option(help: "Largest max_tokens a request may ask for.")
    var maxNewTokens = 4096
    @Option(help: "Largest request body in bytes.")
    var maxBodyBytes = 8 << 20
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var kernelOptions: KernelOptions

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be in [0, 65535]") }
        if maxConcurrency < 1 { throw ValidationError("--max-concurrency must be at least 1") }
        if maxQueue < 0 { throw ValidationError("--max-queue must be 0 or more") }
        if maxPromptTokens < 1 || maxNewTokens < 0 || maxBodyBytes < 1024 {
            throw ValidationError("--max-prompt-tokens must be at least 1, --max-new-tokens 0 or more, --max-body-bytes at least 1024")
        }
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key is empty") }
    }

    func run() throws {
        let par = runtime.parallelism
        guard let tokenizer = try loadTokenizer(modelDirectory: model) else {
            throw MambaError(.missingFile, "\(model) has no tokenizer.json: the server takes and returns text")
        }
        let lm = try QuantizedModel.loadAny(directory: model, runtime: kernelOptions.kernels)
        SystemMemory.keepFreedMemoryForReuse()   // once loaded: a prompt's temporaries reuse the heap
        let metrics = ServerMetrics()
        let scheduler = Scheduler(
            model: lm, tokenizer: tokenizer, parallelism: par,
            limits: .init(maxConcurrency: maxConcurrency, maxQueue: maxQueue),
            onLoad: { metrics.load(waiting: $0, active: $1) })
        var limits = RequestLimits()
        limits.maxPromptTokens = maxPromptTokens
        limits.maxNewTokens = maxNewTokens
        limits.maxBodyBytes = maxBodyBytes
        let name = servedModelName ?? URL(fileURLWithPath: model).standardizedFileURL.lastPathComponent
        let service = CompletionService(scheduler: scheduler, modelName: name, limits: limits, metrics: metrics)
        var options = ServerOptions()
        options.host = host
        options.port = port
        options.apiKey = apiKey ?? ProcessInfo.processInfo.environment["MAMBAQUANT_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        let (host, threads, keyed) = (host, par.threads, options.apiKey != nil)
        if !keyed && !["127.0.0.1", "localhost", "::1"].contains(host) {
            printError("warning: serving on \(host) without --api-key: anyone who can reach this address can use the model")
        }
        // The server runs on Swift's concurrency pool and NIO's threads; this thread waits for it.
        let finished = DispatchSemaphore(value: 0)
        let failure = UncheckedSendable(ErrorBox())
        Task {
            do {
                try await runServer(service: service, options: options) { port in
                    printError("serving \(name) on http://\(host):\(port)/v1 (\(threads) threads\(keyed ? ", API key required" : ""))")
                }
            } catch {
                failure.value.error = error
            }
            finished.signal()
        }
        finished.wait()
        if let error = failure.value.error { throw MambaError(.badInput, "the server stopped: \(error)") }
    }
}

private final class ErrorBox: @unchecked Sendable { var error: (any Error)? }
