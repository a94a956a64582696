import ArgumentParser
import Foundation
import MambaEvaluation
import MambaModel
import MambaQuantization
import MambaTensors

struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Perplexity and bits per byte of one checkpoint (float or quantized) on text files.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var dataOptions: DataOptions   // default: the test split
    @Option(help: "Tokens per window (non-overlapping windows, fresh state each).")
    var seqLen = 512
    @Option(help: "Score at most this many tokens per file.")
    var maxTokens: Int?
    @OptionGroup var output: OutputOptions
    @Flag(help: "No progress bar.")
    var quiet = false
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var kernelOptions: KernelOptions

    func validate() throws {
        if seqLen < 2 { throw ValidationError("--seq-len must be at least 2, got \(seqLen)") }
    }

    func run() throws {
        let par = runtime.parallelism
        let modelDir = try modelOptions.directory()
        let files = try dataOptions.files(splits: ["test"])
        let lm = try QuantizedModel.loadAny(directory: modelDir, runtime: kernelOptions.kernels)
        SystemMemory.keepFreedMemoryForReuse()   // once loaded: a prompt's temporaries reuse the heap
        guard let tokenizer = try loadTokenizer(modelDirectory: modelDir) else {
            throw MambaError(.missingFile, "\(modelDir) has no tokenizer.json: evaluation text cannot be tokenized")
        }
        let tokens = try files.map { tokenizer.encode(try readText($0)) }
        let bar = ProgressBar("evaluate", unit: "win", unitsPerStep: 1.0, quiet: quiet)
        var score = LikelihoodScore()
        let seconds = try measureSeconds {
            score = try evaluateLikelihood(lm, files: tokens, seqLength: seqLen, tokenBytes: tokenizer.byteCount, parallelism: par,
                                           maxTokens: maxTokens, progress: bar.update)
        }
        if output.json {
            struct Report: Encodable {
                let model: String; let files: [String]; let seqLen: Int; let tokens: Int; let bytes: Int; let windows: Int
                let perplexity: Double; let bitsPerToken: Double; let bitsPerByte: Double; let seconds: Double
            }
            let r = Report(model: modelDir, files: files, seqLen: seqLen, tokens: score.tokens, bytes: score.bytes, windows: score.windows,
                           perplexity: score.perplexity, bitsPerToken: score.bitsPerToken, bitsPerByte: score.bitsPerByte, seconds: seconds)
            try output.printJSON(r)
        } else {
            print(String(format: "%@: %d tokens (%d bytes) in %d windows of %d: perplexity %.4f, %.5f bits/token, %.5f bits/byte (%.1f s)",
                         modelDir, score.tokens, score.bytes, score.windows, seqLen, score.perplexity, score.bitsPerToken, score.bitsPerByte, seconds))
        }
    }
}
