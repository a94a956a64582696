import MambaTensors

// The Mamba-1 language model's forward, written once over swappable leaf ops (Ops.swift).
// Shapes: D hidden, E inner, N state, R dt rank, K conv kernel, L tokens, V vocab.
// Upstream: transformers models/mamba/modeling_mamba.py (MambaMixer.slow_forward) and
// state-spaces mamba_ssm/modules/mamba_simple.py. Deliberate differences: none numerically; the
// residual stream is float32 as with residual_in_fp32.

public struct MambaMixer: Sendable {
    public var inProj: any LinearOp        // [2E, D]
    public var conv: any ConvOp            // [E, K]
    public var xProj: any LinearOp         // [R + 2N, E]
    public var dtProj: any LinearOp        // [E, R] + bias
    public var scanInput: any ScanInputOp  // x, dt, B, C before the scan
    public var scan: SelectiveScan         // A [E, N], D [E]
    public var gate: any GateOp
    public var outProjRotation: OnlineHadamard?  // R2, applied to g before out_proj (nil: none)
    public var outProj: any LinearOp       // [D, E]

    public init(inProj: any LinearOp, conv: any ConvOp, xProj: any LinearOp, dtProj: any LinearOp, scanInput: any ScanInputOp,
                scan: SelectiveScan, gate: any GateOp, outProjRotation: OnlineHadamard? = nil, outProj: any LinearOp) {
        self.inProj = inProj; self.conv = conv; self.xProj = xProj; self.dtProj = dtProj
        self.scanInput = scanInput; self.scan = scan; self.gate = gate; self.outProjRotation = outProjRotation; self.outProj = outProj
    }

    public var innerSize: Int { scan.channels }
    public var stateSize: Int { scan.stateSize }
    public var timeStepRank: Int { dtProj.inFeatures }

    /// u: normalized block input [L, D] -> mixer output [L, D]; `state` is this layer's decode state.
    public func forward(_ u: Tensor, state: inout LayerState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        let (e, n, r) = (innerSize, stateSize, timeStepRank)
        observer?.observe(u, site: .inProjInput, layer: layer)
        let xz = inProj.forward(u, par)                        // [L, 2E]
        let x = xz.columns(0..<e)                              // [L, E]
        let z = xz.columns(e..<(2 * e))                        // [L, E]
        observer?.observe(x, site: .x, layer: layer)
        observer?.observe(z, site: .z, layer: layer)
        var xc = silu(conv.forward(x, state: &state.conv, par)) // [L, E]
        scanInput.forward(&xc, site: .convOutput)
        observer?.observe(xc, site: .convOutput, layer: layer)
        let xdbl = xProj.forward(xc, par)                      // [L, R + 2N]
        let dtLow = xdbl.columns(0..<r)                        // [L, R]
        var b = xdbl.columns(r..<(r + n))                      // [L, N]
        var c = xdbl.columns((r + n)..<(r + 2 * n))            // [L, N]
        observer?.observe(dtLow, site: .dtLow, layer: layer)
        var dt = dtProj.forward(dtLow, par)                    // [L, E], before softplus
        scanInput.forward(&dt, site: .dt)
        scanInput.forward(&b, site: .B)
        scanInput.forward(&c, site: .C)
        observer?.observe(dt, site: .dt, layer: layer)
        observer?.observe(b, site: .B, layer: layer)
        observer?.observe(c, site: .C, layer: layer)
        let y = scan.forward(x: xc, dtRaw: dt, b: b, c: c, h: &state.ssm, par) // [L, E]
        observer?.observe(y, site: .y, layer: layer)
        var g = gate.forward(y: y, z: z)                       // [L, E]
        if let r = outProjRotation { g = r.rotate(g) }
        observer?.observe(g, site: .outProjInput, layer: layer)
        return outProj.forward(g, par)                         // [L, D]
    }
}

public struct MambaBlock: Sendable {
    public var norm: Tensor?               // [D]; nil once folded into in_proj (all ones)
    public var mixer: MambaMixer

    public init(norm: Tensor?, mixer: MambaMixer) {
        self.norm = norm
        self.mixer = mixer
    }
}

/// Per-layer decode state: the last K-1 conv inputs and the SSM state.
public struct LayerState: Sendable, Equatable {
    public var conv: [Float]               // [K-1, E]
    public var ssm: [Float]                // [E, N]
}

public struct MambaState: Sendable, Equatable {
    public var layers: [LayerState]
    /// Tokens consumed so far.
    public var position: Int = 0
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
    public var lmHead: any LinearOp        // [V, D]

    /// The float model from loaded weights.
    public init(weights w: MambaWeights) {
        config = w.config
        embedding = FloatEmbedding(table: w.embedding)
        blocks = w.layers.map { l in
            let m = l.mixer
            return MambaBlock(norm: l.norm, mixer: MambaMixer(
                inProj: FloatLinear(weight: m.inProj, bias: m.inProjBias),
                conv: FloatConv(weight: m.convWeight, bias: m.convBias),
                xProj: FloatLinear(weight: m.xProj),
                dtProj: FloatLinear(weight: m.dtProj, bias: m.dtProjBias),
                scanInput: IdentityScanInput(),
                scan: SelectiveScan(aLog: m.aLog, dSkip: m.dSkip),
                gate: SiLUGate(),
                outProj: FloatLinear(weight: m.outProj, bias: m.outProjBias)))
        }
        normF = w.normF
        lmHead = FloatLinear(weight: w.lmHead ?? w.embedding)
    }

    public init(config: MambaConfig, embedding: any EmbeddingOp, blocks: [MambaBlock], normF: Tensor?, lmHead: any LinearOp) {
        self.config = config
        self.embedding = embedding
        self.blocks = blocks
        self.normF = normF
        self.lmHead = lmHead
    }

    public static func load(directory: String) throws -> MambaLM {
        MambaLM(weights: try MambaWeights.load(directory: directory))
    }

    public var vocabSize: Int { embedding.vocabSize }

    /// A fresh (all zero) decode state.
    public func makeState() -> MambaState {
        MambaState(layers: blocks.map { b in
            let (e, n, k) = (b.mixer.innerSize, b.mixer.stateSize, b.mixer.conv.kernelSize)
            return LayerState(conv: [Float](repeating: 0, count: (k - 1) * e), ssm: [Float](repeating: 0, count: e * n))
        })
    }

    /// Runs `tokens` from `state` (prefill when the state is fresh; a decode step is one token)
    /// and returns logits [L or 1 or 0, V].
    public func forward(
        _ tokens: [Int], state: inout MambaState, logits positions: LogitPositions = .all,
        parallelism par: Parallelism = .serial, observer: (any ActivationObserver)? = nil
    ) throws -> Tensor {
        let v = vocabSize
        guard !tokens.isEmpty else { throw MambaError(.badInput, "no tokens to run: the prompt is empty") }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= v }) {
            throw MambaError(.badInput, "token id \(bad) is outside the model's vocabulary [0, \(v))")
        }
        let eps = config.layerNormEpsilon
        var u = embedding.forward(tokens)                      // [L, D], the float32 residual stream
        for (i, block) in blocks.enumerated() {
            if let observer { observer.observe(rmsNorm(u, weight: nil, eps: eps), site: .residual, layer: i) }
            let normed = rmsNorm(u, weight: block.norm, eps: eps)   // [L, D]
            let out = block.mixer.forward(normed, state: &state.layers[i], layer: i, par, observer: observer)
            u.storage.withUnsafeMutableBufferPointer { up in
                out.storage.withUnsafeBufferPointer { op in
                    for j in 0..<up.count { up[j] += op[j] }
                }
            }
        }
        state.position += tokens.count
        let rows: Tensor
        switch positions {
        case .none:
            // No logits, but an observer still sees lm_head's input (calibration needs it).
            if let observer { observer.observe(rmsNorm(u, weight: normF, eps: eps), site: .lmHeadInput, layer: nil) }
            return Tensor(zeros: [0, v])
        case .last: rows = u.rows((u.rows - 1)..<u.rows)
        case .all: rows = u
        }
        let h = rmsNorm(rows, weight: normF, eps: eps)         // [L', D]
        observer?.observe(h, site: .lmHeadInput, layer: nil)
        return lmHead.forward(h, par)                          // [L', V]
    }

    /// Logits at every position of `tokens` from a fresh state.
    public func logits(_ tokens: [Int], parallelism: Parallelism = .serial) throws -> Tensor {
        var state = makeState()
        return try forward(tokens, state: &state, logits: .all, parallelism: parallelism)
    }
}
