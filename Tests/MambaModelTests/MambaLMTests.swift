import Foundation
@testable import MambaModel
import MambaTensors
import TestSupport
import XCTest

final class MambaLMTests: XCTestCase {
    let config = MambaConfig(hiddenSize: 24, numLayers: 2, stateSize: 8, expand: 2, convKernel: 4, timeStepRank: 3, vocabSize: 50, useBias: true)

    /// A decode step is the same forward with the state carried: token-by-token logits equal the
    /// whole-sequence logits.
    func testDecodeStepsEqualPrefill() throws {
        for c in [config, MambaConfig(hiddenSize: 16, numLayers: 3, stateSize: 5, convKernel: 2, vocabSize: 31, useConvBias: false)] {
            let lm = MambaLM(weights: randomWeights(c, seed: 77))
            let tokens = (0..<11).map { ($0 * 7 + 3) % c.vocabSize }
            let whole = try lm.logits(tokens)
            var state = lm.makeState()
            var stepwise: [Float] = []
            // A prefix of 3 (shorter than the conv kernel in one case), then single tokens.
            stepwise += try lm.forward(Array(tokens[0..<3]), state: &state).storage
            for t in tokens[3...] { stepwise += try lm.forward([t], state: &state).storage }
            XCTAssertLessThan(maxAbsDifference(stepwise, whole.storage), 1e-4 * whole.absMax)
            XCTAssertEqual(state.position, tokens.count)
        }
    }

    /// A long prompt runs in pieces with the state carried (MambaLM.prefillPiece): every position's
    /// logits, the last one's, none, and the state after, against the prompt run whole, on Mamba-1,
    /// Mamba-2 (pieces across its SSD chunks) and a hybrid with an MLP layer; a model with attention
    /// runs whole whatever the piece.
    func testPromptInPiecesEqualsWhole() throws {
        for name in ["tiny-tied", "tiny-mamba2", "tiny-nemotron-h"] {
            let lm = try MambaLM(checkpoint: try CheckpointWeights(directory: Fixtures.model(name)))
            let tokens = (0..<47).map { ($0 * 13 + 5) % lm.vocabSize }
            var wholeState = lm.makeState()
            let whole = try lm.forward(tokens, state: &wholeState, piece: Int.max)
            for piece in [7, 16, 46] {
                var state = lm.makeState()
                let pieces = try lm.forward(tokens, state: &state, piece: piece)
                XCTAssertEqual(pieces.shape, whole.shape, name)
                XCTAssertLessThanOrEqual(maxAbsDifference(pieces.storage, whole.storage), 1e-5 * whole.absMax, "\(name) piece \(piece)")
                XCTAssertEqual(state.position, tokens.count)
                var lastState = lm.makeState()
                let last = try lm.forward(tokens, state: &lastState, logits: .last, piece: piece)
                XCTAssertLessThanOrEqual(maxAbsDifference(last.storage, Array(whole.storage.suffix(lm.vocabSize))), 1e-5 * whole.absMax, name)
                var noneState = lm.makeState()
                XCTAssertEqual(try lm.forward(tokens, state: &noneState, logits: .none, piece: piece).shape, [0, lm.vocabSize])
                // The state carried on: the next token's logits agree.
                let next = try lm.forward([3], state: &noneState, logits: .last)
                var w = wholeState
                XCTAssertLessThanOrEqual(maxAbsDifference(next.storage, try lm.forward([3], state: &w, logits: .last).storage), 1e-5 * whole.absMax, name)
            }
        }
    }

    func testThreadsDoNotChangeTheResult() throws {
        let lm = MambaLM(weights: randomWeights(config, seed: 5))
        let tokens = (0..<40).map { $0 % 50 }
        let one = try lm.logits(tokens, parallelism: Parallelism(threads: 1))
        let two = try lm.logits(tokens, parallelism: Parallelism(threads: 2))
        XCTAssertLessThan(maxAbsDifference(one.storage, two.storage), 1e-5 * one.absMax)
    }

    func testBadTokensAndEmptyPromptAreRefused() throws {
        let lm = MambaLM(weights: randomWeights(config, seed: 5))
        var state = lm.makeState()
        XCTAssertThrowsError(try lm.forward([1, 50], state: &state)) { XCTAssertTrue("\($0)".contains("token id 50"), "\($0)") }
        XCTAssertThrowsError(try lm.forward([], state: &state)) { XCTAssertTrue("\($0)".contains("empty"), "\($0)") }
        XCTAssertThrowsError(try lm.forward([-1], state: &state))
    }

    func testLastPositionLogitsAreTheLastRow() throws {
        let lm = MambaLM(weights: randomWeights(config, seed: 8))
        let tokens = [4, 8, 15, 16, 23, 42]
        var s1 = lm.makeState(), s2 = lm.makeState()
        let all = try lm.forward(tokens, state: &s1, logits: .all)
        let last = try lm.forward(tokens, state: &s2, logits: .last)
        XCTAssertEqual(last.shape, [1, 50])
        // One row goes through sgemv rather than sgemm: equal up to summation order.
        XCTAssertLessThan(maxAbsDifference(last.storage, Array(all[row: tokens.count - 1])), 1e-5 * all.absMax)
        XCTAssertEqual(s1, s2)
    }

    func testSaveAndLoadRoundTrip() throws {
        let dir = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let untied = MambaConfig(hiddenSize: 16, numLayers: 2, stateSize: 4, vocabSize: 40, tieWordEmbeddings: false)
        let w = randomWeights(untied, seed: 3)
        try w.save(directory: dir)
        let loaded = try MambaWeights.load(directory: dir)
        XCTAssertEqual(loaded.namedTensors().map(\.0), w.namedTensors().map(\.0))
        for ((_, a), (_, b)) in zip(loaded.namedTensors(), w.namedTensors()) { XCTAssertEqual(a, b) }
        XCTAssertEqual(loaded.config.tieWordEmbeddings, false)
        XCTAssertEqual(try MambaLM(weights: loaded).logits([1, 2, 3]), try MambaLM(weights: w).logits([1, 2, 3]))
    }
}
