import ArgumentParser
import Foundation
import MambaModel
import MambaQuantization
import MambaTensors

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Describe a checkpoint: model type, dims, tensors, tokenizer, quantization recipe.")

    @Argument(help: "Checkpoint directory.")
    var directory: String
    @OptionGroup var output: OutputOptions
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        let s = try CheckpointSummary.describe(directory: directory)
        let machine = MachineRuntime()
        if output.json {
            try output.printJSON(InspectReport(summary: s, runtime: machine))
            return
        }
        print("\(s.directory): \(s.modelType) (\(s.family) mixers)")
        for note in s.notes { print("  note: \(note)") }
        if let vision = s.vision {
            print("  D \(s.hiddenSize), layers \(s.numLayers), E \(s.innerSize), N \(s.stateSize), K \(s.convKernel), \(s.mixerSettings)")
            print("  \(vision)")
        } else {
            print("  D \(s.hiddenSize), layers \(s.numLayers), E \(s.innerSize), N \(s.stateSize), K \(s.convKernel), V \(s.vocabSize), \(s.mixerSettings), head \(s.tiedHead ? "tied" : "untied")")
        }
        print("  \(s.parameters) parameters, \(s.bytesOnDisk) bytes on disk")
        print(String(format: "  %.3f bits per weight (8 x the safetensors bytes / the float model's %d parameters)", s.bitsPerWeight, s.modelParameters))
        if let t = s.tokenizer { print("  tokenizer \(t) (\(s.tokenizerVocabSize ?? 0) ids)") } else if s.vision == nil { print("  no tokenizer.json (runs from token ids)") }
        if let q = s.quantization { print("  quantization \(q)") }
        print("  runs here on OpenBLAS core \(machine.blasCore) (float32) and \(machine.int8Kernels)")
        print("  tensors:")
        for t in s.tensors {
            print("    \(t.name)  \(t.dtype) \(shapeString(t.shape))  \(t.bytes) bytes")
        }
    }
}

/// What would run a checkpoint on this machine: the float32 BLAS core and the int8 kernel path.
struct MachineRuntime: Encodable {
    let blasCore = BLASCore.current
    let int8Kernels = QuantizedRuntime.int8.description

    enum CodingKeys: String, CodingKey {
        case blasCore = "blas_core", int8Kernels = "int8_kernels"
    }
}

/// The summary's keys plus "runtime".
struct InspectReport: Encodable {
    let summary: CheckpointSummary
    let runtime: MachineRuntime

    enum CodingKeys: String, CodingKey { case runtime }

    func encode(to encoder: Encoder) throws {
        try summary.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(runtime, forKey: .runtime)
    }
}
