import ArgumentParser
import Foundation
import MambaTensors

@main
struct MambaQuantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mambaquant",
        abstract: "Post-training W8A8 quantization of Mamba language models (MambaQuant), with a real int8 CPU runtime.",
        subcommands: [CalibrateCommand.self, QuantizeCommand.self, EvaluateCommand.self, CompareCommand.self, GenerateCommand.self, ClassifyCommand.self, ServeCommand.self, TokenizeCommand.self, InspectCommand.self, BenchCommand.self])

    static func main() {
        BLASCore.reexecWithBLASEnvironmentIfNeeded()
        do {
            var command = try parseAsRoot(nil)
            try command.run()
        } catch {
            // --help and --version print as ArgumentParser prints them. Every refusal is one line
            // (docs/DESIGN.md section 5): ArgumentParser's usage errors add a help line and the
            // usage; the message alone is kept, with its exit code.
            let code = exitCode(for: error)
            if code.isSuccess { exit(withError: error) }
            let first = message(for: error).split(separator: "\n").first.map(String.init) ?? String(describing: error)
            FileHandle.standardError.write(Data(("Error: " + first + "\n").utf8))
            Foundation.exit(code.rawValue)
        }
    }
}
