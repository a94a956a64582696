import MambaTensors

// The language model around the mixers: embedding, pre-norm residual blocks, norm_f, head.
// Each block holds its mixer behind MixerOp (MixerDescription.swift), so a model can mix layer
// types. Shapes: D hidden, L tokens, V vocab. Upstream: transformers
// models/mamba/modeling_mamba.py (MambaModel); the residual stream is float32 as with
// residual_in_fp32.

public struct MambaBlock: Sendable {
    public var norm: Tensor?               // [D]; nil once folded into in_proj (all ones)
    public var mixer: any MixerOp

    public init(norm: Tensor?, mixer: any MixerOp) {
        self.norm = norm
        self.mixer = mixer
    }

    /// The float block of one layer's weights: its description builds the forward from float ops.
    public init(float w: BlockWeights, config: MambaConfig, layer: Int) {
        self.init(norm: w.norm, mixer: w.mixer.spec.makeMixer(LayerOpSource(float: w.mixer), config, layer: layer))
    }

    /// The block on the residual stream u [L, D]: u += mixer(norm(u)) (pre-norm, float32 residual
    /// as transformers' MambaBlock with residual_in_fp32), the mixer's output times the config's
    /// residual multiplier first where it has one (Granite). The observer sees u / rms(u) at
    /// .residual first (the R1 site). The one block step of the forward and of calibration.
    public func step(_ u: inout Tensor, state: inout any LayerState, layer: Int, config c: MambaConfig, _ par: Parallelism,
                     observer: (any ActivationObserver)?) {
        let eps = c.layerNormEpsilon
        if let observer { observer.observe(rmsNorm(u, weight: nil, eps: eps), site: .residual, layer: layer) }
        let normed = profiled("norm") { rmsNorm(u, weight: norm, eps: eps) } // [L, D]
        let out = mixer.forward(normed, layerState: &state, layer: layer, par, observer: observer)
        profiled("residual") { add(out, to: &u, times: c.residualMultiplier) }
    }
}

public struct MambaState: Sendable, Equatable {
    /// Each layer's own decode state (its mixer's State).
    public var layers: [any LayerState]
    /// Tokens consumed so far.
    public var position: Int = 0

    public static func == (a: MambaState, b: MambaState) -> Bool {
        a.position == b.position && a.layers.count == b.layers.count && zip(a.layers, b.layers).allSatisfy { $0.isEqual(to: $1) }
    }
}

/// Which positions' logits a forward returns.
public enum LogitPositions: Sendable {
    case all, last, none
}

public struct MambaLM: Sendable {
    public var config: MambaConfig
    public var embedding: any EmbeddingOp  // [V, D]
    public var blocks: [MambaBlock]
    public var normF: Tensor?              // [D]; nil once folded into lm_head
    /// A [D, D] linear between norm_f and lm_head (nil: none): a tied head keeps norm_f's weight
    /// here as R1ᵀ diag(w) R1 so that the rotated embedding table is also the head
    /// (docs/DESIGN.md section 2, "One table").
    public var headInput: (any LinearOp)?
    public var lmHead: any LinearOp        // [V, D]

    /// The float model from loaded weights: each layer's description builds its forward from
    /// float ops over the checkpoint's tensors.
    public init(weights w: MambaWeights) {
        config = w.config
        embedding = FloatEmbedding(table: w.embedding)
        blocks = w.layers.enumerated().map { i, l in MambaBlock(float: l, config: w.config, layer: i) }
        normF = w.normF
        lmHead = FloatLinear(weight: w.lmHead ?? w.embedding)
    }

    public init(config: MambaConfig, embedding: any EmbeddingOp, blocks: [MambaBlock], normF: Tensor?, headInput: (any LinearOp)? = nil,
                lmHead: any LinearOp) {
        self.config = config
        self.embedding = embedding
        self.blocks = blocks
        self.normF = normF
        self.headInput = headInput
        self.lmHead = lmHead
    }

    /// lm_head's input from the last residual rows: norm_f, then the head-input linear if any.
    public func headInput(_ u: Tensor, _ par: Parallelism = .serial) -> Tensor {
        let h = rmsNorm(u, weight: normF, eps: config.layerNormEpsilon)
        guard let headInput else { return h }
        return profiled("head_input") { headInput.forward(h, par) }
    }

    /// The float model of a checkpoint as stored (see `init(checkpoint:)`).
    public static func load(directory: String) throws -> MambaLM {
        try MambaLM(checkpoint: try CheckpointWeights(directory: directory))
    }

    /// The float model over a checkpoint's weights as stored: an F32 checkpoint in float32, a BF16
    /// or F16 one with its matrices kept in 16 bits (HalfOps.swift), so the model takes about the
    /// file's size; vectors and the conv are widened. Refused up front when that cannot fit in
    /// MemAvailable.
    public init(checkpoint w: CheckpointWeights, available: Double? = SystemMemory.available()) throws {
        let need = Double(w.runtimeBytes)
        if let available, need > available {
            throw MambaError(.outOfMemory, "the float model of \(w.store.directory) needs \(gigabytes(need)) (\(w.runtimeWeightType) weights) but \(gigabytes(available)) is available (\(SystemMemory.availableSource())): quantize it, which works a layer at a time, and run the int8 model")
        }
        let c = w.config
        let table = try w.readStoredEmbedding()
        var blocks: [MambaBlock] = []
        for i in 0..<c.numLayers { blocks.append(MambaBlock(float: try w.readStoredLayer(i), config: c, layer: i)) }
        self.init(config: c, embedding: table.embedding(), blocks: blocks, normF: try w.readNormF(),
                  lmHead: (try w.readStoredLMHead() ?? table).linear(bias: nil))
    }

    public var vocabSize: Int { embedding.vocabSize }

    /// A fresh (all zero) decode state.
    public func makeState() -> MambaState {
        MambaState(layers: blocks.map { $0.mixer.makeState() })
    }

    /// Prompts longer than this run in pieces of this many tokens, the state carried between
    /// them (models whose every layer carries a recurrent or no state): the same floats up to the
    /// scans' rounding at the seams, while each layer's activations stay in cache. A prompt run
    /// whole streams [L, 2E] tensors through memory at every step: 8,192 tokens prefilled at 0.40x
    /// the tokens/s of 512 on the mamba-130m shape (int8); in pieces of 1,024 at 0.53x, of 512 at
    /// 1.03x (docs/PERFORMANCE.md, "Long prompts").
    public static let prefillPiece = 512

    /// Runs `tokens` from `state` (prefill when the state is fresh; a decode step is one token)
    /// and returns logits [L or 1 or 0, V]; `piece` is the prompt piece (tests vary it).
    public func forward(
        _ tokens: [Int], state: inout MambaState, logits positions: LogitPositions = .all,
        parallelism par: Parallelism = .serial, observer: (any ActivationObserver)? = nil, piece: Int = MambaLM.prefillPiece
    ) throws -> Tensor {
        let v = vocabSize
        guard !tokens.isEmpty else { throw MambaError(.badInput, "no tokens to run: the prompt is empty") }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= v }) {
            throw MambaError(.badInput, "token id \(bad) is outside the model's vocabulary [0, \(v))")
        }
        // An observer sees whole windows (calibration statistics per call); attention's KV cache
        // is filled by one call.
        guard tokens.count > piece, observer == nil, state.layers.allSatisfy({ $0 is RecurrentState || $0 is StatelessState }) else {
            return try forwardWhole(tokens, state: &state, logits: positions, parallelism: par, observer: observer)
        }
        // All positions' logits go straight into one [L, V] tensor, each piece's dropped once copied.
        var all = positions == .all ? Tensor(zeros: [tokens.count, v]) : nil
        var result = Tensor(zeros: [0, v])
        for start in stride(from: 0, to: tokens.count, by: piece) {
            let end = min(start + piece, tokens.count)
            let wanted: LogitPositions = positions == .all ? .all : (end == tokens.count ? positions : .none)
            let logits = try forwardWhole(Array(tokens[start..<end]), state: &state, logits: wanted, parallelism: par, observer: nil)
            if all != nil {
                all!.storage.withUnsafeMutableBufferPointer { o in
                    logits.storage.withUnsafeBufferPointer { (o.baseAddress! + start * v).update(from: $0.baseAddress!, count: $0.count) }
                }
            } else if end == tokens.count {
                result = logits
            }
        }
        return all ?? result
    }

    private func forwardWhole(
        _ tokens: [Int], state: inout MambaState, logits positions: LogitPositions, parallelism par: Parallelism,
        observer: (any ActivationObserver)?
    ) throws -> Tensor {
        let v = vocabSize
        var u = profiled("embedding") { embedding.embed(tokens, config) } // [L, D], the float32 residual stream
        for (i, block) in blocks.enumerated() {
            block.step(&u, state: &state.layers[i], layer: i, config: config, par, observer: observer)
        }
        state.position += tokens.count
        let rows: Tensor
        switch positions {
        case .none:
            // No logits, but an observer still sees lm_head's input (calibration needs it).
            if let observer { observer.observe(headInput(u, par), site: .lmHeadInput, layer: nil) }
            return Tensor(zeros: [0, v])
        case .last: rows = u.rows((u.rows - 1)..<u.rows)
        case .all: rows = u
        }
        let h = profiled("norm") { headInput(rows, par) } // [L', D]
        observer?.observe(h, site: .lmHeadInput, layer: nil)
        var logits = profiled("lm_head") { lmHead.forward(h, par) }  // [L', V]
        if config.logitsScaling != 1 {
            let s = config.logitsScaling
            logits.storage.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] /= s } }
        }
        return logits
    }

    /// Logits at every position of `tokens` from a fresh state.
    public func logits(_ tokens: [Int], parallelism: Parallelism = .serial) throws -> Tensor {
        var state = makeState()
        return try forward(tokens, state: &state, logits: .all, parallelism: parallelism)
    }
}

extension EmbeddingOp {
    /// The rows of `tokens` as the residual stream starts: times the config's embedding multiplier
    /// where it has one (Granite), as GraniteMoeHybridModel scales inputs_embeds.
    public func embed(_ tokens: [Int], _ c: MambaConfig) -> Tensor {
        scaled(forward(tokens), c.embeddingMultiplier)
    }
}
