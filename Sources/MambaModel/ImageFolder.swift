import CMambaImageIO
import Foundation
import MambaTensors

// Folders of PNG and JPEG files for a Vision Mamba, turned into its input the way Vim evaluates:
// Vim's main.py builds its eval transform with DeiT's datasets.py build_transform (is_train False):
// Resize(int(input_size / eval_crop_ratio), bicubic) of the shorter side, CenterCrop(input_size),
// ToTensor (x / 255), Normalize(mean, std), on Pillow images loaded with convert("RGB").
// Resize here is Pillow's own algorithm (its Resample.c: separable passes, horizontal first, the
// bicubic kernel with a = -0.5 stretched by the scale when shrinking, 22-bit fixed-point weights,
// an 8-bit image between the passes), so a folder gives the floats torchvision gives
// (scripts/reference/image_folder_reference.py writes the fixture that checks it).

/// Vim's eval transform's settings: mean and std per channel (config image_mean, image_std) and
/// the crop ratio (eval_crop_ratio; DeiT's and Vim's default 0.875: shorter side to size / 0.875,
/// then the centre size x size).
public struct ImagePreprocess: Sendable, Equatable {
    public var mean: [Float]?
    public var std: [Float]?
    public var cropRatio: Double

    public init(mean: [Float]?, std: [Float]?, cropRatio: Double) {
        (self.mean, self.std, self.cropRatio) = (mean, std, cropRatio)
    }

    /// timm's IMAGENET_DEFAULT_MEAN and _STD, which Vim normalizes with.
    public static let imageNetMean: [Float] = [0.485, 0.456, 0.406], imageNetStd: [Float] = [0.229, 0.224, 0.225]
    public static let defaultCropRatio = 0.875

    /// Mean and std per channel, one value standing for all channels; refused in one line when
    /// missing or of the wrong length.
    func normalization(channels: Int, source: String) throws -> (mean: [Float], std: [Float]) {
        guard let mean, let std else {
            throw MambaError(.badConfig, "\(source): no image_mean / image_std for its \(channels) channel(s): add them to config.json or give --image-mean and --image-std")
        }
        func perChannel(_ v: [Float], _ name: String) throws -> [Float] {
            if v.count == channels { return v }
            if v.count == 1 { return Array(repeating: v[0], count: channels) }
            throw MambaError(.badConfig, "\(source): \(name) has \(v.count) values for \(channels) channel(s)")
        }
        return (try perChannel(mean, "image_mean"), try perChannel(std, "image_std"))
    }
}

/// One decoded image: 8-bit samples, rows top to bottom, channels interleaved.
public struct Pixels: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var channels: Int
    public var samples: [UInt8]

    public init(width: Int, height: Int, channels: Int, samples: [UInt8]) {
        precondition(samples.count == width * height * channels)
        (self.width, self.height, self.channels, self.samples) = (width, height, channels, samples)
    }

    /// Decodes a PNG or JPEG file; a truncated or unreadable file is refused in one line.
    public static func decode(path: String, maxPixels: Int = 1 << 27) throws -> Pixels {
        var data: UnsafeMutablePointer<UInt8>? = nil
        var (w, h, c): (Int32, Int32, Int32) = (0, 0, 0)
        var message = [CChar](repeating: 0, count: 256)
        let rc = mq_image_decode(path, maxPixels, &data, &w, &h, &c, &message, message.count)
        guard rc == 0, let data else {
            let why = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw MambaError(.badFile, "image \(path): \(why)")
        }
        defer { free(data) }
        let n = Int(w) * Int(h) * Int(c)
        return Pixels(width: Int(w), height: Int(h), channels: Int(c), samples: Array(UnsafeBufferPointer(start: data, count: n)))
    }

    /// As Pillow's convert to "L" (1 channel: ITU-R 601-2 luma in its fixed point) or "RGB"
    /// (3: gray repeated).
    public func converted(toChannels n: Int) -> Pixels {
        if n == channels { return self }
        let count = width * height
        var out = [UInt8](repeating: 0, count: count * n)
        if n == 3 {
            for i in 0..<count { for k in 0..<3 { out[3 * i + k] = samples[i] } }
        } else {
            for i in 0..<count {
                let (r, g, b) = (UInt32(samples[3 * i]), UInt32(samples[3 * i + 1]), UInt32(samples[3 * i + 2]))
                out[i] = UInt8((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
            }
        }
        return Pixels(width: width, height: height, channels: n, samples: out)
    }

    /// Pillow's bicubic resize (Image.resize(size, Image.BICUBIC)), bit for bit.
    public func resizedBicubic(width newWidth: Int, height newHeight: Int) -> Pixels {
        var image = self
        if newWidth != width { image = image.resampled(horizontal: true, to: newWidth) }
        if newHeight != height { image = image.resampled(horizontal: false, to: newHeight) }
        return image
    }

    /// One of Pillow's two passes (ImagingResampleHorizontal_8bpc / Vertical_8bpc).
    private func resampled(horizontal: Bool, to outSize: Int) -> Pixels {
        let inSize = horizontal ? width : height
        let (bounds, weights, taps) = PillowBicubic.coefficients(inSize: inSize, outSize: outSize)
        let (w, h) = horizontal ? (outSize, height) : (width, outSize)
        var out = [UInt8](repeating: 0, count: w * h * channels)
        let c = channels
        // Step between neighbouring input samples along the pass, and between output lines.
        let step = horizontal ? c : width * c
        samples.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for line in 0..<(horizontal ? h : w) {
                    for o in 0..<outSize {
                        let (first, count) = bounds[o]
                        let base = horizontal ? (line * width + first) * c : (first * width + line) * c
                        let outBase = horizontal ? (line * w + o) * c : (o * w + line) * c
                        for k in 0..<c {
                            var sum = Int64(1) << (PillowBicubic.precisionBits - 1)
                            for t in 0..<count { sum += Int64(src[base + t * step + k]) * Int64(weights[o * taps + t]) }
                            dst[outBase + k] = UInt8(clamping: sum >> PillowBicubic.precisionBits)
                        }
                    }
                }
            }
        }
        return Pixels(width: w, height: h, channels: c, samples: out)
    }

    /// torchvision's CenterCrop: the centre `width` x `height` (offsets rounded half to even, as
    /// Python's round), zero padding first where the image is smaller.
    public func centerCropped(width cw: Int, height ch: Int) -> Pixels {
        let c = channels
        // Padding (torchvision pads left/top by (crop - size) / 2 rounded down).
        let padLeft = cw > width ? (cw - width) / 2 : 0, padTop = ch > height ? (ch - height) / 2 : 0
        let paddedWidth = max(width, cw), paddedHeight = max(height, ch)
        func roundHalfEven(_ twice: Int) -> Int { twice % 2 == 0 ? twice / 2 : ((twice / 2) % 2 == 0 ? twice / 2 : twice / 2 + 1) }
        let left = roundHalfEven(paddedWidth - cw), top = roundHalfEven(paddedHeight - ch)
        var out = [UInt8](repeating: 0, count: cw * ch * c)
        for y in 0..<ch {
            let sy = y + top - padTop
            guard sy >= 0, sy < height else { continue }
            for x in 0..<cw {
                let sx = x + left - padLeft
                guard sx >= 0, sx < width else { continue }
                for k in 0..<c { out[(y * cw + x) * c + k] = samples[(sy * width + sx) * c + k] }
            }
        }
        return Pixels(width: cw, height: ch, channels: c, samples: out)
    }
}

/// Pillow's bicubic filter and its fixed-point weights (Resample.c: bicubic_filter with a = -0.5,
/// precompute_coeffs, normalize_coeffs_8bpc).
enum PillowBicubic {
    static let support = 2.0
    static let precisionBits = 32 - 8 - 2

    static func filter(_ x: Double) -> Double {
        let a = -0.5, x = abs(x)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
    }

    /// For each output position, its first input and tap count, and the taps' weights (`taps` per
    /// output position).
    static func coefficients(inSize: Int, outSize: Int) -> (bounds: [(Int, Int)], weights: [Int32], taps: Int) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let reach = support * filterScale
        let taps = Int(reach.rounded(.up)) * 2 + 1
        var bounds = [(Int, Int)](), weights = [Int32](repeating: 0, count: outSize * taps)
        for o in 0..<outSize {
            let center = (Double(o) + 0.5) * scale
            // C's (int) conversion truncates toward zero.
            let first = max(Int((center - reach + 0.5).rounded(.towardZero)), 0)
            let last = min(Int((center + reach + 0.5).rounded(.towardZero)), inSize)
            let count = last - first
            var k = (0..<count).map { filter((Double($0 + first) - center + 0.5) / filterScale) }
            let total = k.reduce(0, +)
            if total != 0 { k = k.map { $0 / total } }
            for (t, v) in k.enumerated() {
                let fixed = v * Double(1 << precisionBits)
                weights[o * taps + t] = Int32((v < 0 ? fixed - 0.5 : fixed + 0.5).rounded(.towardZero))
            }
            bounds.append((first, count))
        }
        return (bounds, weights, taps)
    }
}

/// A folder of PNG and JPEG files: the images listed in its labels.csv (lines "file,label", the
/// label a class index; a first line whose label is not a number is a header), or without one
/// every .png/.jpg/.jpeg file in name order, unlabeled.
public enum ImageFolder {
    public static let labelsFile = "labels.csv"
    static let extensions: Set<String> = ["png", "jpg", "jpeg"]

    /// The files (paths inside `dir`) and their labels.
    public static func listing(_ dir: String) throws -> (files: [String], labels: [Int]?) {
        let csv = (dir as NSString).appendingPathComponent(labelsFile)
        if FileManager.default.fileExists(atPath: csv) {
            guard let text = try? String(contentsOfFile: csv, encoding: .utf8) else { throw MambaError(.badFile, "\(csv) is not readable UTF-8 text") }
            var files = [String](), labels = [Int]()
            for (n, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.isEmpty { continue }
                guard let comma = line.lastIndex(of: ",") else { throw MambaError(.badFile, "\(csv) line \(n + 1): expected \"file,label\", found \"\(line)\"") }
                let file = line[..<comma].trimmingCharacters(in: .whitespaces), label = line[line.index(after: comma)...].trimmingCharacters(in: .whitespaces)
                guard let value = Int(label) else {
                    if files.isEmpty && n == 0 { continue }  // the header
                    throw MambaError(.badFile, "\(csv) line \(n + 1): label \"\(label)\" is not a class index")
                }
                files.append(file)
                labels.append(value)
            }
            guard !files.isEmpty else { throw MambaError(.badFile, "\(csv) lists no images") }
            return (files, labels)
        }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { extensions.contains(($0 as NSString).pathExtension.lowercased()) }.sorted()
        guard !names.isEmpty else {
            throw MambaError(.missingFile, "\(dir) holds no .png, .jpg or .jpeg files (and no \(labelsFile))")
        }
        return (names, nil)
    }

    /// A listed file's path: as given when absolute, else inside the folder.
    static func location(of file: String, in dir: String) -> String {
        file.hasPrefix("/") ? file : (dir as NSString).appendingPathComponent(file)
    }

    /// Every file the images of `path` (a folder or an image file) are read from, for hashing.
    public static func sourceFiles(_ path: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else { return [path] }
        let csv = (path as NSString).appendingPathComponent(labelsFile)
        let files = try listing(path).files.map { location(of: $0, in: path) }
        return (FileManager.default.fileExists(atPath: csv) ? [csv] : []) + files
    }

    /// The first `limit` images of `dir` through Vim's eval transform for a model of settings `v`.
    public static func load(directory dir: String, for v: VisionSettings, preprocess: ImagePreprocess, limit: Int? = nil) throws -> ImageSet {
        guard v.channels == 1 || v.channels == 3 else {
            throw MambaError(.badInput, "image folders are read for 1- or 3-channel models; this one has \(v.channels): give a safetensors image file")
        }
        guard preprocess.cropRatio > 0, preprocess.cropRatio.isFinite else {
            throw MambaError(.badInput, "the crop ratio must be positive, found \(preprocess.cropRatio)")
        }
        let (mean, std) = try preprocess.normalization(channels: v.channels, source: dir)
        var (files, labels) = try listing(dir)
        if let limit, limit < files.count {
            files = Array(files.prefix(limit))
            labels = labels.map { Array($0.prefix(limit)) }
        }
        let need = 4 * Double(files.count * v.imageValues)
        if let available = SystemMemory.available(), need > available {
            throw MambaError(.outOfMemory, "\(dir): \(files.count) images need \(gigabytes(need)) in float32 but \(gigabytes(available)) is available (\(SystemMemory.availableSource())): classify fewer at a time (--limit)")
        }
        // DeiT's Resize(int(input_size / eval_crop_ratio)); a non-square model's larger side.
        let side = Int(Double(max(v.imageHeight, v.imageWidth)) / preprocess.cropRatio)
        var storage = [Float](repeating: 0, count: files.count * v.imageValues)
        let plane = v.imageHeight * v.imageWidth
        for (i, file) in files.enumerated() {
            let path = location(of: file, in: dir)
            guard FileManager.default.fileExists(atPath: path) else { throw MambaError(.missingFile, "\(dir): image \(file) does not exist") }
            let image = try Pixels.decode(path: path).converted(toChannels: v.channels)
            let (w, h) = image.width <= image.height
                ? (side, Int(Double(side) * Double(image.height) / Double(image.width)))
                : (Int(Double(side) * Double(image.width) / Double(image.height)), side)
            let ready = image.resizedBicubic(width: max(w, 1), height: max(h, 1)).centerCropped(width: v.imageWidth, height: v.imageHeight)
            // ToTensor then Normalize, in float32 as torch computes them.
            for k in 0..<v.channels {
                for p in 0..<plane {
                    storage[i * v.imageValues + k * plane + p] = (Float(ready.samples[p * v.channels + k]) / 255 - mean[k]) / std[k]
                }
            }
        }
        let set = ImageSet(images: Tensor(shape: [files.count, v.channels, v.imageHeight, v.imageWidth], storage: storage), labels: labels, source: dir)
        try set.checkLabels(classes: v.classes)
        return set
    }
}
