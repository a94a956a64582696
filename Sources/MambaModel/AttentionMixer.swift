import Foundation
import MambaTensors

// The layers beside Mamba in the hybrids (docs/DESIGN.md section 1, "Hybrids"): grouped-query
// attention and the MLPs. Upstream: transformers models/nemotron_h/modeling_nemotron_h.py
// (NemotronHAttention: q, k, v, o projections, no positional encoding, causal softmax attention with
// scale 1 / sqrt(head_dim), key/value heads shared by H / KV query heads; NemotronHMLP:
// down_proj(act(up_proj(x))), act relu2 = relu(x)^2), models/bamba/modeling_bamba.py (BambaAttention:
// RoPE on the first partial_rotary_factor of each head, apply_rotary_pos_emb's rotate_half; BambaMLP:
// down_proj(silu(gate_proj x) * up_proj x)), models/granitemoehybrid/modeling_granitemoehybrid.py
// (GraniteMoeHybridAttention: scale attention_multiplier, RoPE only when position_embedding_type is
// "rope"; GraniteMoeHybridMLP: input_linear's rows are [gate | up], output_linear). Shapes: D hidden,
// H query heads, KV key/value heads, P head size, I the MLP's width, L tokens, T tokens seen so far.

/// Rotary position embedding on the first `dims` features of every query and key head
/// (rotate_half's layout: feature i pairs with i + dims/2), the angle of position t and pair i
/// t / theta^(2i / dims), computed in float32 as transformers' default RoPE computes it.
public struct RotaryEmbedding: Sendable, Equatable {
    public let theta: Double
    public let dims: Int

    public init(theta: Double, dims: Int) {
        precondition(theta > 0 && dims > 0 && dims % 2 == 0)
        (self.theta, self.dims) = (theta, dims)
    }

    /// inv_freq = 1 / theta^(arange(0, dims, 2) / dims) in float32.
    var inverseFrequencies: [Float] {
        (0..<(dims / 2)).map { i in 1 / Float(pow(Double(Float(theta)), Double(Float(2 * i) / Float(dims)))) }
    }

    /// The cosines and sines of `rows` positions from `start` ([rows, dims / 2] each), shared by
    /// the queries and the keys of one call.
    func angles(start: Int, rows: Int, inverseFrequencies inv: [Float]) -> (cos: [Float], sin: [Float]) {
        let half = dims / 2
        var (cosines, sines) = ([Float](repeating: 0, count: rows * half), [Float](repeating: 0, count: rows * half))
        for t in 0..<rows {
            let position = Float(start + t)
            for i in 0..<half {
                let angle = position * inv[i]
                (cosines[t * half + i], sines[t * half + i]) = (cos(angle), sin(angle))
            }
        }
        return (cosines, sines)
    }

    /// Rotates every row of x ([rows, heads x P]) in place by its row of `angles`.
    func apply(_ x: inout Tensor, heads: Int, headDim p: Int, angles: (cos: [Float], sin: [Float])) {
        let half = dims / 2
        let width = heads * p
        x.storage.withUnsafeMutableBufferPointer { xb in
            for t in 0..<(xb.count / width) {
                for h in 0..<heads {
                    let row = t * width + h * p
                    for i in 0..<half {
                        let (a, b) = (xb[row + i], xb[row + i + half])
                        let (c, s) = (angles.cos[t * half + i], angles.sin[t * half + i])
                        xb[row + i] = a * c - b * s
                        xb[row + i + half] = b * c + a * s
                    }
                }
            }
        }
    }
}

/// Grouped-query attention, as a layer kind: without positional encoding (Nemotron-H's,
/// Granite-4.0-H's) or with RoPE on part or all of each head (Bamba's).
public struct AttentionMixer: MixerDescription {
    public let heads: Int
    public let kvHeads: Int
    public let headDim: Int
    /// Biases on q, k, v and o (`attention_bias`).
    public let bias: Bool
    /// nil: no positional encoding.
    public let rope: RotaryEmbedding?
    /// The scores' scale (nil: 1 / sqrt(P); Granite's attention_multiplier).
    public let scale: Float?
    /// Falcon-H1's μP scalars: on the input (attention_in_multiplier), on the keys after k_proj
    /// (key_multiplier) and on o_proj's output (attention_out_multiplier); 1 elsewhere.
    public let multipliers: (input: Float, key: Float, output: Float)

    public init(heads: Int, kvHeads: Int, headDim: Int, bias: Bool = false, rope: RotaryEmbedding? = nil, scale: Float? = nil,
                multipliers: (input: Float, key: Float, output: Float) = (1, 1, 1)) {
        precondition(heads > 0 && kvHeads > 0 && heads % kvHeads == 0 && headDim > 0 && (rope?.dims ?? 0) <= headDim)
        (self.heads, self.kvHeads, self.headDim, self.bias, self.rope, self.scale) = (heads, kvHeads, headDim, bias, rope, scale)
        self.multipliers = multipliers
    }

    /// The normalized block input (the q, k and v projections' input) and o_proj's input.
    public static let input = Site("attn_input"), outputInput = Site("o_proj_input")

    public var name: String { "attention" }

    public var parameters: [ParameterSpec] {
        let (q, kv, b) = (heads * headDim, kvHeads * headDim, bias)
        return [
            ParameterSpec("q_proj.weight", .weight(module: "q_proj")) { c in [q, c.hiddenSize] },
            ParameterSpec("q_proj.bias", .bias(module: "q_proj")) { _ in b ? [q] : nil },
            ParameterSpec("k_proj.weight", .weight(module: "k_proj")) { c in [kv, c.hiddenSize] },
            ParameterSpec("k_proj.bias", .bias(module: "k_proj")) { _ in b ? [kv] : nil },
            ParameterSpec("v_proj.weight", .weight(module: "v_proj")) { c in [kv, c.hiddenSize] },
            ParameterSpec("v_proj.bias", .bias(module: "v_proj")) { _ in b ? [kv] : nil },
            ParameterSpec("o_proj.weight", .weight(module: "o_proj")) { c in [c.hiddenSize, q] },
            ParameterSpec("o_proj.bias", .bias(module: "o_proj")) { c in b ? [c.hiddenSize] : nil },
        ]
    }

    public var modules: [ModuleSpec] {
        [ModuleSpec("q_proj", .linear, input: Self.input), ModuleSpec("k_proj", .linear, input: Self.input),
         ModuleSpec("v_proj", .linear, input: Self.input), ModuleSpec("o_proj", .linear, input: Self.outputInput)]
    }

    public var sites: [Site] { [Self.input, Self.outputInput] }
    public var scanInputs: [(site: Site, scaleKey: String)] { [] }
    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? { nil }
    public var residualReaders: [String] { ["q_proj", "k_proj", "v_proj"] }
    public var residualWriters: [String] { ["o_proj"] }
    /// The heads' concatenated outputs rotated before o_proj (QuaRot's online Hadamard there).
    public var onlineRotated: [String] { ["o_proj"] }

    public var modelType: String { "nemotron_h" }
    public var architecture: String { "NemotronHForCausalLM" }
    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] { [:] }
    public func settings(_ c: MambaConfig) -> String {
        let position = rope.map { "RoPE on \($0.dims) of \(headDim), theta \($0.theta)" } ?? "no positional encoding"
        let m = multipliers == (1, 1, 1) ? "" : ", multipliers in \(multipliers.input) key \(multipliers.key) out \(multipliers.output)"
        return "attention \(heads) heads (\(kvHeads) kv) of \(headDim), \(position)" + (scale.map { ", scale \($0)" } ?? "") + m
    }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp { makeForward(ops) }

    func makeForward(_ ops: any MixerOpSource) -> AttentionForward {
        AttentionForward(qProj: ops.linear("q_proj"), kProj: ops.linear("k_proj"), vProj: ops.linear("v_proj"),
                         rotation: ops.onlineRotation(before: "o_proj"), oProj: ops.linear("o_proj"),
                         heads: heads, kvHeads: kvHeads, headDim: headDim, rope: rope, scale: scale ?? 1 / Float(headDim).squareRoot(),
                         multipliers: multipliers)
    }

    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        let (d, q, kv) = (c.hiddenSize, heads * headDim, kvHeads * headDim)
        var t: [String: Tensor] = [
            "q_proj.weight": randomTensor([q, d], seed: next(), scale: 1 / Double(d).squareRoot()),
            "k_proj.weight": randomTensor([kv, d], seed: next(), scale: 1 / Double(d).squareRoot()),
            "v_proj.weight": randomTensor([kv, d], seed: next(), scale: 1 / Double(d).squareRoot()),
            "o_proj.weight": randomTensor([d, q], seed: next(), scale: 1 / Double(q).squareRoot()),
        ]
        if bias {
            for (m, n) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv), ("o_proj", d)] { t[m + ".bias"] = randomTensor([n], seed: next(), scale: 0.1) }
        }
        return t
    }
}

/// An attention layer's decode state: every key and value seen so far ([T, KV P] each), growing by
/// the tokens of each call (a generation reserves its whole context up front: `MambaState.reserve`).
public struct KVCache: LayerState, Equatable {
    public var keys: [Float] = []
    public var values: [Float] = []
    public var count = 0
    /// Tokens to make room for at the first append (not part of the state's value).
    public var reservedTokens = 0

    public static func == (a: KVCache, b: KVCache) -> Bool { a.count == b.count && a.keys == b.keys && a.values == b.values }
}

extension MambaConfig {
    /// The float32 bytes every attention layer's KV cache holds at `context` tokens.
    public func kvCacheBytes(context: Int) -> Double {
        layerKinds.reduce(0.0) { total, kind in
            guard let a = kind.spec as? AttentionMixer ?? (kind.spec as? ParallelMixer)?.attention else { return total }
            return total + 2 * 4 * Double(context) * Double(a.kvHeads * a.headDim)
        }
    }
}

extension MambaState {
    /// Room for `context` tokens in every KV cache, so that decode never reallocates (a growing
    /// array's copy would briefly need its size twice).
    public mutating func reserve(context: Int) {
        for i in layers.indices {
            if var kv = layers[i] as? KVCache {
                layers[i] = StatelessState()
                kv.reservedTokens = max(kv.reservedTokens, context)
                layers[i] = kv
            } else if var p = layers[i] as? ParallelState {
                layers[i] = StatelessState()
                p.attention.reservedTokens = max(p.attention.reservedTokens, context)
                layers[i] = p
            }
        }
    }
}

/// The attention forward over swappable leaf ops.
public struct AttentionForward: MixerOp {
    public var qProj: any LinearOp, kProj: any LinearOp, vProj: any LinearOp
    public var rotation: OnlineHadamard?
    public var oProj: any LinearOp
    public let heads: Int, kvHeads: Int, headDim: Int
    public let rope: RotaryEmbedding?
    public let scale: Float
    public let multipliers: (input: Float, key: Float, output: Float)
    let inverseFrequencies: [Float]

    public init(qProj: any LinearOp, kProj: any LinearOp, vProj: any LinearOp, rotation: OnlineHadamard?, oProj: any LinearOp,
                heads: Int, kvHeads: Int, headDim: Int, rope: RotaryEmbedding?, scale: Float,
                multipliers: (input: Float, key: Float, output: Float) = (1, 1, 1)) {
        (self.qProj, self.kProj, self.vProj, self.rotation, self.oProj) = (qProj, kProj, vProj, rotation, oProj)
        (self.heads, self.kvHeads, self.headDim, self.rope, self.scale) = (heads, kvHeads, headDim, rope, scale)
        self.multipliers = multipliers
        inverseFrequencies = rope?.inverseFrequencies ?? []
    }

    public func makeState() -> KVCache { KVCache() }

    public func forward(_ input: Tensor, state: inout KVCache, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        // The site is the scaled input: what the projections read (and an int8 model quantizes).
        let u = scaled(input, multipliers.input)
        observer?.observe(u, site: AttentionMixer.input, layer: layer)
        var q = profiled("q_proj") { qProj.forward(u, par) }            // [L, H P]
        var k = profiled("k_proj") { scaled(kProj.forward(u, par), multipliers.key) } // [L, KV P]
        let v = profiled("v_proj") { vProj.forward(u, par) }
        if let rope {
            profiled("rope") {
                let angles = rope.angles(start: state.count, rows: u.rows, inverseFrequencies: inverseFrequencies)
                rope.apply(&q, heads: heads, headDim: headDim, angles: angles)
                rope.apply(&k, heads: kvHeads, headDim: headDim, angles: angles)
            }
        }
        if state.keys.capacity < (state.count + u.rows) * k.cols {
            let tokens = max(state.reservedTokens, state.count + u.rows)
            state.keys.reserveCapacity(tokens * k.cols)
            state.values.reserveCapacity(tokens * v.cols)
        }
        state.keys += k.storage
        state.values += v.storage
        let start = state.count
        state.count += u.rows
        let o = profiled("attention") { attend(q, keys: state.keys, values: state.values, start: start, par) } // [L, H P]
        return profiled("o_proj") {                                     // [L, D]
            scaled(oProj.forward(o, rotatedBy: rotation, par, observer: observer, site: AttentionMixer.outputInput, layer: layer), multipliers.output)
        }
    }

    /// softmax(scale q kᵀ over keys 0...start+t) v for every query row t and head, query head h
    /// reading key/value head h / (H / KV): sgemm for a prefill's rows, the plain loop for a few
    /// (decode, split over heads).
    func attend(_ q: Tensor, keys: [Float], values: [Float], start: Int, _ par: Parallelism) -> Tensor {
        let shape = AttentionShape(heads: heads, kvHeads: kvHeads, headDim: headDim, scale: scale)
        return q.rows >= 8 ? attentionBLAS(q, keys: keys, values: values, start: start, shape)
                           : attentionReference(q, keys: keys, values: values, start: start, shape, par)
    }
}
