import ArgumentParser
import MambaTensors

@main
struct MambaQuantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mambaquant",
        abstract: "Post-training W8A8 quantization of Mamba language models (MambaQuant), with a real int8 CPU runtime.",
        subcommands: [CalibrateCommand.self, QuantizeCommand.self, EvaluateCommand.self, CompareCommand.self, GenerateCommand.self, TokenizeCommand.self, InspectCommand.self, BenchCommand.self])

    static func main() {
        BLASCore.reexecWithBLASEnvironmentIfNeeded()
        main(nil)
    }
}
