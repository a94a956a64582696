import ArgumentParser
import Foundation
import MambaModel
import MambaQuantization
import MambaTensors

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Run a checkpoint on a prompt: stream the continuation, or dump the prompt's logits.")

    @Option(help: "Checkpoint directory (config.json, model.safetensors, tokenizer.json).")
    var model: String
    @Option(help: "Prompt text (needs the checkpoint's tokenizer.json).")
    var prompt: String?
    @Option(help: "Prompt as comma-separated token ids, e.g. 1,2,3.")
    var tokens: String?
    @Option(help: "Tokens to generate after the prompt (0: only run the prompt).")
    var maxNewTokens = 100
    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0
    @Option(help: "Sample among the K most likely tokens.")
    var topK: Int?
    @Option(help: "Sample within the smallest set of tokens whose probability reaches P.")
    var topP: Float?
    @Option(help: "Seed of the sampler.")
    var seed: UInt64 = 0
    @Option(help: "Write the logits at the prompt's positions to this safetensors file (tensor `logits`, F32 [L, V]).")
    var logitsOut: String?
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var kernelOptions: KernelOptions

    func validate() throws {
        if (prompt == nil) == (tokens == nil) { throw ValidationError("give exactly one of --prompt and --tokens") }
        if maxNewTokens < 0 { throw ValidationError("--max-new-tokens must be 0 or more") }
        if temperature < 0 { throw ValidationError("--temperature must be 0 or more") }
        if let topK, topK < 1 { throw ValidationError("--top-k must be at least 1") }
        if let topP, !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
    }

    func run() throws {
        let par = runtime.parallelism
        let tokenizer = try loadTokenizer(modelDirectory: model)
        let ids: [Int]
        if let prompt {
            guard let tokenizer else {
                throw MambaError(.missingFile, "\(model) has no tokenizer.json: give the prompt as --tokens")
            }
            // With the post-processor's special tokens (a BOS where the model expects one), as
            // transformers' tokenizer(prompt) gives them.
            ids = tokenizer.encode(prompt, addSpecialTokens: true)
        } else {
            ids = try parseTokenList(tokens!)
        }
        guard !ids.isEmpty else { throw MambaError(.badInput, "the prompt is empty: nothing to run") }
        if let logitsOut {
            try refuseOverwritingInput(logitsOut, inputs: [model])
            let dir = URL(fileURLWithPath: logitsOut).deletingLastPathComponent().path
            guard FileManager.default.fileExists(atPath: dir) else {
                throw MambaError(.missingFile, "cannot write \(logitsOut): directory \(dir) does not exist")
            }
        }
        let lm = try QuantizedModel.loadAny(directory: model, runtime: kernelOptions.kernels)
        SystemMemory.keepFreedMemoryForReuse()   // once loaded: a prompt's temporaries reuse the heap
        if let bad = ids.first(where: { $0 < 0 || $0 >= lm.vocabSize }) {
            throw MambaError(.badInput, "token id \(bad) is outside the model's vocabulary [0, \(lm.vocabSize))")
        }

        var stream = UTF8Stream()
        let out = FileHandle.standardOutput
        if let tokenizer, prompt != nil { out.write(Data(stream.append(tokenizer.decodeBytes(ids)).utf8)) }
        var sampler = Sampler(temperature: temperature, topK: topK, topP: topP, seed: seed)
        var generated: [Int] = []
        let start = DispatchTime.now()
        let logits = try Generation(model: lm, parallelism: par).run(
            prompt: ids, maxNewTokens: maxNewTokens, sampler: &sampler, stop: tokenizer?.endOfText,
            promptLogits: logitsOut != nil
        ) { id in
            generated.append(id)
            if let tokenizer {
                out.write(Data(stream.append(tokenizer.decodeBytes([id])).utf8))
            } else {
                out.write(Data("\(generated.count == 1 ? "" : ",")\(id)".utf8))
            }
        }
        out.write(Data((stream.flush() + "\n").utf8))
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        if let logitsOut {
            var writer = SafeTensorsWriter(metadata: ["model": model, "tokens": ids.map(String.init).joined(separator: ",")])
            writer.add("logits", logits)
            try writer.write(to: logitsOut)
        }
        printError(String(format: "[%d prompt tokens, %d generated, %.2f s, %d threads]", ids.count, generated.count, seconds, par.threads))
    }
}
