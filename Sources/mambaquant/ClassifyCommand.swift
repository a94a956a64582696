import ArgumentParser
import Foundation
import MambaModel
import MambaQuantization
import MambaTensors

struct ClassifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "classify", abstract: "Run a Vision Mamba on images: predictions, and top-1 (top-5) accuracy where the images carry labels.")

    @Option(help: "Vision Mamba checkpoint directory, float (config.json with model_type vim, model.safetensors) or quantized.")
    var model: String
    @Option(help: "Safetensors file with images [n, C, H, W] (normalized) and optional labels [n], or a folder of PNG/JPEG files (labels.csv: file,label lines).")
    var images: String
    @OptionGroup var imageOptions: ImageOptions
    @Option(help: "Classify only the first N images.")
    var limit: Int?
    @Option(help: "Print the predictions of the first N images (all: -1).")
    var show = 10
    @Option(help: "Write the logits to this safetensors file (tensor `logits`, F32 [n, classes]; `labels` beside them when given).")
    var logitsOut: String?
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var kernelOptions: KernelOptions

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() throws {
        let par = runtime.parallelism
        if let logitsOut { try checkWritable(logitsOut, inputs: [model, images]) }
        let vim = try QuantizedVisionMamba.loadAny(directory: model, runtime: kernelOptions.kernels)
        SystemMemory.keepFreedMemoryForReuse()   // once loaded: a prompt's temporaries reuse the heap
        let set = try ImageSet.load(path: images, for: vim.vision, preprocess: imageOptions.preprocess(over: vim.vision.preprocess), limit: limit)
        let start = DispatchTime.now()
        let logits = vim.logits(set.images, par)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        let classes = vim.classes
        let k = min(5, classes)
        for i in 0..<(show < 0 ? set.count : min(show, set.count)) {
            let row = Array(logits.storage[(i * classes)..<((i + 1) * classes)])
            let top = topClasses(row, k)
            let label = set.labels.map { "  label \($0[i])\($0[i] == top[0] ? "" : " (wrong)")" } ?? ""
            print("image \(i): class \(top[0])\(label)  top-\(k) \(top.map(String.init).joined(separator: " "))")
        }
        if let labels = set.labels {
            var score = ClassificationScore(k: k)
            score.add(logits: logits, labels: labels)
            print(String(format: "top-1 accuracy %.2f%% (%d of %d)", 100 * score.top1Accuracy, score.top1, score.images)
                  + (classes > 5 ? String(format: ", top-5 %.2f%%", 100 * score.topKAccuracy) : ""))
        }
        if let logitsOut {
            var writer = SafeTensorsWriter(metadata: ["model": model, "images": images])
            writer.add("logits", logits)
            if let labels = set.labels { writer.add(ImageSet.labelsKey, shape: [labels.count], int64s: labels.map(Int64.init)) }
            try writer.write(to: logitsOut)
        }
        printError(String(format: "[%d images of %@, %.2f s, %.1f images/s, %d threads]", set.count, vim.vision.shapeDescription, seconds,
                          Double(set.count) / max(seconds, 1e-9), par.threads))
    }
}

/// Refuses an output that would overwrite an input or whose directory is missing.
func checkWritable(_ output: String, inputs: [String]) throws {
    try refuseOverwritingInput(output, inputs: inputs)
    let dir = URL(fileURLWithPath: output).deletingLastPathComponent().path
    guard FileManager.default.fileExists(atPath: dir) else {
        throw MambaError(.missingFile, "cannot write \(output): directory \(dir) does not exist")
    }
}
