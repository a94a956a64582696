import Foundation
import MambaModel
import MambaTensors
import TestSupport
import XCTest

/// Vision Mamba against a plain-torch transcription of Vim's code (scripts/reference/vim_reference.py,
/// whose one-direction mixer is itself checked against transformers' MambaMixer):
/// Tests/Fixtures/models/tiny-vim* are tiny random checkpoints in Vim's state-dict names, one per
/// supported variant (middle cls token with averaged branches; overlapping patches, a head cls token,
/// summed branches on a one-channel non-square image; no cls token with mean pooling and the plain
/// mixer; no cls token with max pooling), with their logits on four random images.
final class VisionMambaTests: XCTestCase {
    static let models = ["tiny-vim", "tiny-vim-headcls", "tiny-vim-mean", "tiny-vim-max"]

    func reference(_ name: String) throws -> (images: Tensor, logits: Tensor, labels: [Int]) {
        let f = try SafeTensorsFile(path: Fixtures.model(name) + "/reference.safetensors")
        return (try f.view("images").tensor(), try f.view("logits").tensor(), try f.view("labels").integers())
    }

    func testLogitsMatchVimTranscription() throws {
        for name in Self.models {
            let model = try VisionMamba.load(directory: Fixtures.model(name))
            let ref = try reference(name)
            let ours = model.logits(ref.images)
            XCTAssertEqual(ours.shape, ref.logits.shape, name)
            XCTAssertLessThanOrEqual(maxAbsDifference(ours.storage, ref.logits.storage), 1e-4 * ref.logits.absMax, name)
        }
    }

    /// Two threads give the one-thread logits.
    func testThreadsAgree() throws {
        let model = try VisionMamba.load(directory: Fixtures.model("tiny-vim"))
        let images = try reference("tiny-vim").images
        XCTAssertLessThanOrEqual(maxAbsDifference(model.logits(images, Parallelism(threads: 2)).storage, model.logits(images).storage), 1e-5)
    }

    func testConfigResolvesVimSettings() throws {
        let c = try MambaConfig.load(directory: Fixtures.model("tiny-vim-headcls"))
        let v = try XCTUnwrap(c.vision)
        XCTAssertEqual([v.imageHeight, v.imageWidth, v.patchSize, v.stride, v.channels, v.classes], [10, 14, 4, 2, 1, 7])
        XCTAssertEqual([v.gridHeight, v.gridWidth, v.tokens], [4, 6, 25])
        XCTAssertEqual(v.classTokenRow, 0)
        XCTAssertEqual([c.timeStepRank, c.convKernel, c.numLayers], [3, 3, 2])
        XCTAssertEqual(c.family, "vim_bimamba_v2")
        XCTAssertEqual((c.mixer(layer: 0) as? BiMambaMixer)?.divideOut, false)
        let t = try MambaConfig.load(directory: Fixtures.model("tiny-vim"))
        XCTAssertEqual(t.vision?.classTokenRow, 8)             // M // 2 of 16 patches
        XCTAssertEqual(try MambaConfig.load(directory: Fixtures.model("tiny-vim-mean")).family, "mamba1")
        XCTAssertEqual(try CheckpointWeights(directory: Fixtures.model("tiny-vim")).parameterCount, t.parameterCount)
        // VisionMamba's defaults: Vim-T at 224 px is 197 tokens.
        let defaults = try MambaConfig.parse(Data(#"{"model_type": "vim"}"#.utf8), source: "c")
        XCTAssertEqual(defaults.vision?.tokens, 197)
        XCTAssertEqual([defaults.hiddenSize, defaults.numLayers, defaults.timeStepRank], [192, 24, 12])
    }

    func testUnsupportedVimFeaturesAreRefusedByName() {
        for (key, value) in [("if_rope", "true"), ("use_double_cls_token", "true"), ("if_bimamba", "true"), ("bimamba_type", "\"v1\""),
                             ("if_bidirectional", "true"), ("rms_norm", "false"), ("final_pool_type", "\"all\""), ("init_layer_scale", "0.1")] {
            let json = #"{"model_type": "vim", "\#(key)": \#(value)}"#
            XCTAssertThrowsError(try MambaConfig.parse(Data(json.utf8), source: "c.json"), key) { error in
                XCTAssertTrue("\(error)".contains(key), "\(error)")
            }
        }
        XCTAssertThrowsError(try MambaConfig.parse(Data(#"{"model_type": "vim", "img_size": 8, "patch_size": 16}"#.utf8), source: "c")) {
            XCTAssertTrue("\($0)".contains("patch_size 16"), "\($0)")
        }
    }

    /// A checkpoint that lacks a tensor of its config or has one of the wrong shape is refused
    /// naming it, and a language-model command refuses a Vim checkpoint.
    func testCheckpointChecks() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Fixtures.model("tiny-vim")
        try FileManager.default.copyItem(atPath: source + "/model.safetensors", toPath: dir + "/model.safetensors")
        var config = try String(contentsOfFile: source + "/config.json", encoding: .utf8)
        try config.replacingOccurrences(of: "\"depth\": 3", with: "\"depth\": 4").write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try VisionMamba.load(directory: dir)) { XCTAssertTrue("\($0)".contains("layers.3.mixer.in_proj.weight"), "\($0)") }
        config = config.replacingOccurrences(of: "\"num_classes\": 10", with: "\"num_classes\": 11")
        try config.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try VisionMamba.load(directory: dir)) { XCTAssertTrue("\($0)".contains("head.weight"), "\($0)") }
        XCTAssertThrowsError(try MambaLM.load(directory: source)) { XCTAssertTrue("\($0)".contains("Vision Mamba"), "\($0)") }
        XCTAssertThrowsError(try VisionMamba.load(directory: Fixtures.model("tiny-tied"))) { XCTAssertTrue("\($0)".contains("not a Vision Mamba"), "\($0)") }
    }

    /// The random weights a preset or test draws for the bidirectional mixer name every tensor of
    /// its description, the backward branch's included.
    func testRandomTensorsCoverTheDescription() throws {
        let c = try MambaConfig.load(directory: Fixtures.model("tiny-vim"))
        var seed: UInt64 = freshSeed()
        let spec = c.mixer(layer: 0)
        let t = spec.randomTensors(c) { seed += 1; return seed }
        for (p, shape) in spec.presentParameters(c) { XCTAssertEqual(t[p.key]?.shape, shape, p.key) }
    }
}
