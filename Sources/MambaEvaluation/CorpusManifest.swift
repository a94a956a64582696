import Foundation
import MambaTensors

/// calibration/manifest.json (docs/DESIGN.md section 5): the corpus splits and the default model,
/// resolved from the current directory so that commands run without arguments on the bundled
/// model and text.
public struct CorpusManifest: Sendable {
    public static let defaultPath = "calibration/manifest.json"

    public let path: String
    public let splits: [String: [String]]
    public let defaultModel: String
    /// Image files by split (a Vision Mamba's calibration and test images), beside the text.
    public let imageSplits: [String: [String]]

    public init(path: String = CorpusManifest.defaultPath) throws {
        guard let data = try contentsOfRegularFile(atPath: path) else {
            throw MambaError(.missingFile, "no \(path) in \(FileManager.default.currentDirectoryPath): give the model and data explicitly, or run from the mambaquant checkout")
        }
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let splits = obj["splits"] as? [String: [String]], let model = obj["default_model"] as? String else {
            throw MambaError(.badFile, "\(path) is not a corpus manifest (needs \"splits\" and \"default_model\")")
        }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        self.path = path
        self.splits = splits.mapValues { $0.map { base.appendingPathComponent($0).path } }
        self.imageSplits = ((obj["image_splits"] as? [String: [String]]) ?? [:]).mapValues { $0.map { base.appendingPathComponent($0).path } }
        // The model path is relative to the checkout (the manifest's parent's parent).
        self.defaultModel = model.hasPrefix("/") ? model : base.deletingLastPathComponent().appendingPathComponent(model).path
    }

    /// The image files of a split, or an error naming the split.
    public func imageFiles(_ split: String) throws -> [String] {
        guard let files = imageSplits[split], !files.isEmpty else {
            throw MambaError(.badConfig, "\(path) has no image split \"\(split)\"")
        }
        return files
    }

    /// The files of a split, or an error naming the split.
    public func files(_ split: String) throws -> [String] {
        guard let files = splits[split], !files.isEmpty else {
            throw MambaError(.badConfig, "\(path) has no split \"\(split)\"")
        }
        return files
    }
}
