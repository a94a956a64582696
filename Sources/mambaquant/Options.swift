import ArgumentParser
import Foundation
import MambaModel
import MambaQuantization
import MambaTensors

extension QuantizedRuntime: ExpressibleByArgument {}

/// `--threads`, on every command (docs/DESIGN.md section 5).
struct RuntimeOptions: ParsableArguments {
    @Option(help: "Threads for OpenBLAS and mambaquant's own loops (default: all cores).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    var parallelism: Parallelism { Parallelism(threads: threads) }
}

/// `--kernels`, on the commands that run a quantized model.
struct KernelOptions: ParsableArguments {
    @Option(help: "Kernels of quantized models: int8 (int8 GEMMs) or reference (quantize-dequantize in float32).")
    var kernels: QuantizedRuntime = .int8
}

/// Reads the whole of a text file, or says which file is missing.
/// Prints to stderr (progress and summaries; stdout is for results).
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Comma-separated token ids.
func parseTokenList(_ text: String) throws -> [Int] {
    try text.split(separator: ",").map { part in
        guard let id = Int(part.trimmingCharacters(in: .whitespaces)) else {
            throw MambaError(.badInput, "--tokens must be comma-separated integers, found \"\(part)\"")
        }
        return id
    }
}

/// The tool never overwrites its input (docs/DESIGN.md section 5).
func refuseOverwritingInput(_ output: String, inputs: [String]) throws {
    let out = URL(fileURLWithPath: output).standardizedFileURL.resolvingSymlinksInPath().path
    for input in inputs {
        let inPath = URL(fileURLWithPath: input).standardizedFileURL.resolvingSymlinksInPath().path
        let insideAndExisting = out.hasPrefix(inPath + "/") && FileManager.default.fileExists(atPath: out)
        if out == inPath || insideAndExisting {
            throw MambaError(.badInput, "refusing to write \(output): it would overwrite the input \(input)")
        }
    }
}
