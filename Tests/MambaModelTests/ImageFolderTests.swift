import Foundation
@testable import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// Image folders against Pillow: Tests/Fixtures/images holds PNG and JPEG files (gray, RGB, RGBA,
/// palette, 16-bit; shrunk, enlarged, padded) and what Vim's eval transform makes of them, computed
/// with Pillow by scripts/reference/image_folder_reference.py.
final class ImageFolderTests: XCTestCase {
    static let folder = Fixtures.root + "/images"
    static let files = ["gray.png", "rgb.png", "rgba.png", "palette.png", "gray16.png", "wide.png", "photo.jpg", "gray.jpg", "tiny.png"]

    /// A Vim's settings with another image shape (the fixture model's, edited).
    func settings(channels: Int, height: Int, width: Int, classes: Int = 10) throws -> VisionSettings {
        var v = try XCTUnwrap(MambaConfig.load(directory: Fixtures.model("tiny-vim")).vision)
        (v.channels, v.imageHeight, v.imageWidth, v.classes) = (channels, height, width, classes)
        return v
    }

    func expected(_ name: String) throws -> Tensor { try SafeTensorsFile(path: Self.folder + "/expected.safetensors").view(name).tensor() }

    func testTransformEqualsPillow() throws {
        let cases: [(String, Int, Int, Int, ImagePreprocess)] = [
            ("rgb_16x16", 3, 16, 16, ImagePreprocess(mean: ImagePreprocess.imageNetMean, std: ImagePreprocess.imageNetStd, cropRatio: 0.875)),
            ("gray_12x10", 1, 12, 10, ImagePreprocess(mean: [0.5], std: [0.25], cropRatio: 1.0)),
            ("rgb_8x8_pad", 3, 8, 8, ImagePreprocess(mean: [0.5, 0.4, 0.3], std: [0.2, 0.3, 0.4], cropRatio: 1.5)),
        ]
        for (name, channels, height, width, preprocess) in cases {
            let set = try ImageSet.load(path: Self.folder, for: settings(channels: channels, height: height, width: width), preprocess: preprocess)
            let want = try expected(name)
            XCTAssertEqual(set.images.shape, want.shape, name)
            // Pillow's fixed-point resize reproduced bit for bit: only float32 rounding may differ.
            let per = want.count / want.shape[0]
            for i in 0..<want.shape[0] {
                let d = maxAbsDifference(Array(set.images.storage[(i * per)..<((i + 1) * per)]), Array(want.storage[(i * per)..<((i + 1) * per)]))
                XCTAssertLessThanOrEqual(d, 1e-6, "\(name): \(Self.files[i])")
            }
            XCTAssertEqual(set.labels, try SafeTensorsFile(path: Self.folder + "/expected.safetensors").view("labels").integers())
        }
    }

    func testLimitAndListing() throws {
        let v = try settings(channels: 3, height: 16, width: 16)
        let set = try ImageSet.load(path: Self.folder, for: v, limit: 3)
        XCTAssertEqual(set.count, 3)
        XCTAssertEqual(set.labels, [3, 1, 0])
        XCTAssertEqual(try ImageFolder.listing(Self.folder).files, Self.files)
        // Without labels.csv: every image file in name order, unlabeled.
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for f in ["rgb.png", "photo.jpg", "gray.png"] { try FileManager.default.copyItem(atPath: Self.folder + "/" + f, toPath: dir + "/" + f) }
        try "not an image".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        let unlabeled = try ImageSet.load(path: dir, for: v)
        XCTAssertNil(unlabeled.labels)
        XCTAssertEqual(try ImageFolder.listing(dir).files, ["gray.png", "photo.jpg", "rgb.png"])
        XCTAssertEqual(try ImageFolder.sourceFiles(dir).count, 3)
    }

    func testResizeIdentityAndWeights() throws {
        let p = try Pixels.decode(path: Self.folder + "/rgb.png")
        XCTAssertEqual([p.width, p.height, p.channels], [23, 31, 3])
        XCTAssertEqual(p.resizedBicubic(width: 23, height: 31), p)
        // Each output position's fixed-point weights sum to one within a unit per tap.
        for (inSize, outSize) in [(23, 7), (5, 22), (31, 31), (100, 3)] {
            let (bounds, weights, taps) = PillowBicubic.coefficients(inSize: inSize, outSize: outSize)
            for (o, b) in bounds.enumerated() {
                let sum = (0..<b.1).reduce(0) { $0 + Int(weights[o * taps + $1]) }
                XCTAssertLessThanOrEqual(abs(sum - (1 << 22)), b.1, "\(inSize)->\(outSize) at \(o)")
            }
        }
    }

    func testRefusals() throws {
        let v = try settings(channels: 3, height: 16, width: 16)
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func refusal(_ body: () throws -> Void) -> String {
            do { try body() } catch { return "\(error)" }
            return "no error"
        }
        // Truncated PNG and JPEG files, and a file that is neither.
        for (name, keep) in [("rgb.png", 300), ("photo.jpg", 700)] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: Self.folder + "/" + name))
            try bytes.prefix(keep).write(to: URL(fileURLWithPath: dir + "/" + name))
            let message = refusal { _ = try Pixels.decode(path: dir + "/" + name) }
            XCTAssertTrue(message.contains(name), message)
            XCTAssertFalse(message.contains("\n"), message)
            try FileManager.default.removeItem(atPath: dir + "/" + name)
        }
        try "hello".write(toFile: dir + "/fake.png", atomically: true, encoding: .utf8)
        XCTAssertTrue(refusal { _ = try ImageSet.load(path: dir, for: v) }.contains("neither a PNG nor a JPEG"))
        try FileManager.default.removeItem(atPath: dir + "/fake.png")
        XCTAssertTrue(refusal { _ = try ImageSet.load(path: dir, for: v) }.contains("holds no .png"))
        // labels.csv: a missing file, a label that is not a number, one outside the classes.
        try FileManager.default.copyItem(atPath: Self.folder + "/gray.png", toPath: dir + "/gray.png")
        for (csv, expect) in [("file,label\ngray.png,1\nmissing.png,2\n", "missing.png does not exist"),
                              ("gray.png,1\ngray.png,cat\n", "line 2: label \"cat\""),
                              ("gray.png,12\n", "label 12 of image 0 is outside the model's 10 classes"),
                              ("file,label\n", "lists no images")] {
            try csv.write(toFile: dir + "/labels.csv", atomically: true, encoding: .utf8)
            let message = refusal { _ = try ImageSet.load(path: dir, for: v) }
            XCTAssertTrue(message.contains(expect), "\(message) (expected \(expect))")
        }
        // A one-channel model without a mean and std; a two-channel model.
        try "gray.png,1\n".write(toFile: dir + "/labels.csv", atomically: true, encoding: .utf8)
        let gray = try settings(channels: 1, height: 8, width: 8)
        XCTAssertTrue(refusal { _ = try ImageSet.load(path: dir, for: gray, preprocess: ImagePreprocess(mean: nil, std: nil, cropRatio: 1)) }.contains("image_mean"))
        XCTAssertTrue(refusal { _ = try ImageSet.load(path: dir, for: settings(channels: 2, height: 8, width: 8)) }.contains("1- or 3-channel"))
        XCTAssertTrue(refusal { _ = try ImageSet.load(path: dir, for: v, preprocess: ImagePreprocess(mean: [0.1, 0.2], std: [1, 1], cropRatio: 1)) }
            .contains("image_mean has 2 values for 3 channel(s)"))
    }

    func testConfigPreprocess() throws {
        // The fixture configs carry no mean/std: ImageNet's for 3 channels, none for 1.
        let rgb = try XCTUnwrap(MambaConfig.load(directory: Fixtures.model("tiny-vim")).vision)
        XCTAssertEqual(rgb.preprocess, ImagePreprocess(mean: ImagePreprocess.imageNetMean, std: ImagePreprocess.imageNetStd, cropRatio: 0.875))
        let bundled = try XCTUnwrap(MambaConfig.load(directory: Fixtures.packageRoot + "/models/mnist-vim").vision)
        XCTAssertEqual(bundled.preprocess, ImagePreprocess(mean: [0.1307], std: [0.3081], cropRatio: 1))
    }
}
