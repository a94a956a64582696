import Foundation
import MambaTensors

/// Images for a Vision Mamba: a safetensors file with an "images" tensor [n, C, H, W] (float,
/// already normalized as the model's eval transform does) and an optional "labels" tensor [n] of
/// class indices, or a folder of PNG and JPEG files (ImageFolder). Checked against the model up
/// front, each problem one line naming it.
public struct ImageSet: Sendable {
    public static let imagesKey = "images", labelsKey = "labels"

    public let images: Tensor              // [n, C, H, W]
    public let labels: [Int]?              // [n]
    public let source: String

    public var count: Int { images.shape[0] }

    public init(images: Tensor, labels: [Int]?, source: String) {
        (self.images, self.labels, self.source) = (images, labels, source)
    }

    /// Reads the first `limit` images of `path`, a safetensors file or a folder, for a model of
    /// settings `v` (a folder through `preprocess`, the model's own when nil).
    public static func load(path: String, for v: VisionSettings, preprocess: ImagePreprocess? = nil, limit: Int? = nil) throws -> ImageSet {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw MambaError(.missingFile, "image file \(path) does not exist") }
        if isDirectory.boolValue { return try ImageFolder.load(directory: path, for: v, preprocess: preprocess ?? v.preprocess, limit: limit) }
        let set = try loadFile(path: path, for: v)
        return limit.map { $0 < set.count ? set.subset(0..<$0) : set } ?? set
    }

    private static func loadFile(path: String, for v: VisionSettings) throws -> ImageSet {
        let file = try SafeTensorsFile(path: path)
        guard file.contains(imagesKey) else {
            throw MambaError(.missingTensor, "\(path) has no \"\(imagesKey)\" tensor (found: \(file.names.prefix(5).joined(separator: ", "))); an image file holds images [n, C, H, W] and optional labels [n]")
        }
        let view = try file.view(imagesKey)
        let expected = [v.channels, v.imageHeight, v.imageWidth]
        guard view.shape.count == 4, Array(view.shape.dropFirst()) == expected, view.shape[0] > 0 else {
            throw MambaError(.shapeMismatch, "\(path): images have shape \(shapeString(view.shape)), the model reads [n, \(expected.map(String.init).joined(separator: ", "))] (n > 0)")
        }
        guard view.dtype.isFloatingPoint else {
            throw MambaError(.dtypeMismatch, "\(path): images have dtype \(view.dtype.rawValue); they must be F32, F16 or BF16 (normalized values, not bytes)")
        }
        // Widened to float32 whole: refused up front when that cannot fit, never a failed allocation.
        let need = 4 * Double(view.count)
        if let available = SystemMemory.available(), need > available {
            throw MambaError(.outOfMemory, "\(path): \(view.shape[0]) images need \(gigabytes(need)) in float32 but \(gigabytes(available)) is available (\(SystemMemory.availableSource())): split the file")
        }
        let images = try view.tensor()
        if let bad = images.storage.firstIndex(where: { !$0.isFinite }) {
            throw MambaError(.badFile, "\(path): image \(bad / v.imageValues) holds \(images.storage[bad]); images must be finite")
        }
        var labels: [Int]? = nil
        if file.contains(labelsKey) {
            let l = try file.view(labelsKey)
            guard l.shape == [view.shape[0]], !l.dtype.isFloatingPoint else {
                throw MambaError(.shapeMismatch, "\(path): labels have shape \(shapeString(l.shape)) and dtype \(l.dtype.rawValue), expected integers [\(view.shape[0])] (one per image)")
            }
            labels = try l.integers()
        }
        let set = ImageSet(images: images, labels: labels, source: path)
        try set.checkLabels(classes: v.classes)
        return set
    }

    func checkLabels(classes: Int) throws {
        if let labels, let i = labels.firstIndex(where: { $0 < 0 || $0 >= classes }) {
            throw MambaError(.mismatchedInputs, "\(source): label \(labels[i]) of image \(i) is outside the model's \(classes) classes")
        }
    }

    /// Images `range` (a batch, or the first n).
    public func subset(_ range: Range<Int>) -> ImageSet {
        ImageSet(images: images.rows(range), labels: labels.map { Array($0[range]) }, source: source)
    }
}

/// Classification against labels: top-1 and top-k hits.
public struct ClassificationScore: Sendable, Equatable {
    public var images = 0
    public var top1 = 0
    public var topK = 0
    public let k: Int

    public init(k: Int) { self.k = k }

    /// Scores logits [n, classes] against `labels`.
    public mutating func add(logits: Tensor, labels: [Int]) {
        let classes = logits.cols
        for (i, label) in labels.enumerated() {
            let row = Array(logits.storage[(i * classes)..<((i + 1) * classes)])
            let ranked = topClasses(row, k)
            images += 1
            if ranked.first == label { top1 += 1 }
            if ranked.contains(label) { topK += 1 }
        }
    }

    public var top1Accuracy: Double { Double(top1) / Double(max(images, 1)) }
    public var topKAccuracy: Double { Double(topK) / Double(max(images, 1)) }
}

/// The indices of the k largest values, largest first (ties: the lower index first).
public func topClasses(_ row: [Float], _ k: Int) -> [Int] {
    Array(row.indices.sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }.prefix(k))
}
