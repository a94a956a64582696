import ArgumentParser
import Foundation
import MambaEvaluation
import MambaModel
import MambaTensors

extension ModelPreset: ExpressibleByArgument {}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Time prefill and decode of a model (a preset shape with random weights, or a checkpoint).")

    @Option(help: "A model shape with random weights: \(ModelPreset.allCases.map(\.rawValue).joined(separator: ", ")).")
    var preset: ModelPreset?
    @Option(help: "A checkpoint directory instead of a preset.")
    var model: String?
    @Option(help: "Prompt length of the prefill measurement.")
    var tokens = 512
    @Option(help: "Single-token steps of the decode measurement.")
    var decodeSteps = 64
    @Option(help: "Repetitions; medians are reported.")
    var runs = 5
    @Flag(help: "Print JSON.")
    var json = false
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if (preset == nil) == (model == nil) { throw ValidationError("give exactly one of --preset and --model") }
        if tokens < 1 || runs < 1 || decodeSteps < 1 { throw ValidationError("--tokens, --runs and --decode-steps must be at least 1") }
    }

    func run() throws {
        let par = runtime.parallelism
        let lm: MambaLM
        let name: String
        if let preset {
            printError("building random \(preset.rawValue) weights")
            lm = MambaLM(weights: MambaWeights.random(preset.config, seed: 1))
            name = preset.rawValue
        } else {
            lm = try loadAnyModel(directory: model!)
            name = model!
        }
        let r = try measureThroughput(lm, tokens: tokens, decodeSteps: decodeSteps, runs: runs, parallelism: par)
        if json {
            struct Report: Encodable { let model: String; let threads: Int; let blasCore: String; let float32: ThroughputResult }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(Report(model: name, threads: par.threads, blasCore: BLASCore.current, float32: r)), as: UTF8.self))
        } else {
            print("\(name), \(par.threads) threads, OpenBLAS core \(BLASCore.current), medians of \(runs) runs")
            print(String(format: "  float32 prefill %d tokens: %.1f tokens/s", tokens, r.prefillTokensPerSecond))
            print(String(format: "  float32 decode: %.1f tokens/s", r.decodeTokensPerSecond))
        }
    }
}
