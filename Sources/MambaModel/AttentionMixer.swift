import Foundation
import MambaTensors

// The layers beside Mamba in the hybrids (docs/DESIGN.md section 1, "Hybrids"): grouped-query
// attention and the MLP. Upstream: transformers models/nemotron_h/modeling_nemotron_h.py
// (NemotronHAttention: q, k, v, o projections, no positional encoding, causal softmax attention with
// scale 1 / sqrt(head_dim), key/value heads shared by H / KV query heads; NemotronHMLP:
// down_proj(act(up_proj(x))), act relu2 = relu(x)^2). Shapes: D hidden, H query heads, KV key/value
// heads, P head size, I the MLP's width, L tokens, T tokens seen so far (the cache).

/// Grouped-query attention without positional encoding (Nemotron-H's), as a layer kind.
public struct AttentionMixer: MixerDescription {
    public let heads: Int
    public let kvHeads: Int
    public let headDim: Int
    /// Biases on q, k, v and o (`attention_bias`).
    public let bias: Bool

    public init(heads: Int, kvHeads: Int, headDim: Int, bias: Bool = false) {
        precondition(heads > 0 && kvHeads > 0 && heads % kvHeads == 0 && headDim > 0)
        (self.heads, self.kvHeads, self.headDim, self.bias) = (heads, kvHeads, headDim, bias)
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
    public func settings(_ c: MambaConfig) -> String { "attention \(heads) heads (\(kvHeads) kv) of \(headDim)" }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        AttentionForward(qProj: ops.linear("q_proj"), kProj: ops.linear("k_proj"), vProj: ops.linear("v_proj"),
                         rotation: ops.onlineRotation(before: "o_proj"), oProj: ops.linear("o_proj"),
                         heads: heads, kvHeads: kvHeads, headDim: headDim)
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
/// the tokens of each call.
public struct KVCache: LayerState, Equatable {
    public var keys: [Float] = []
    public var values: [Float] = []
    public var count = 0
}

/// The attention forward over swappable leaf ops.
public struct AttentionForward: MixerOp {
    public var qProj: any LinearOp, kProj: any LinearOp, vProj: any LinearOp
    public var rotation: OnlineHadamard?
    public var oProj: any LinearOp
    public let heads: Int, kvHeads: Int, headDim: Int

    public func makeState() -> KVCache { KVCache() }

    public func forward(_ u: Tensor, state: inout KVCache, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        observer?.observe(u, site: AttentionMixer.input, layer: layer)
        let q = profiled("q_proj") { qProj.forward(u, par) }            // [L, H P]
        let k = profiled("k_proj") { kProj.forward(u, par) }            // [L, KV P]
        let v = profiled("v_proj") { vProj.forward(u, par) }
        state.keys += k.storage
        state.values += v.storage
        let start = state.count
        state.count += u.rows
        var o = profiled("attention") { attend(q, keys: state.keys, values: state.values, start: start, par) } // [L, H P]
        if let rotation { o = profiled("hadamard") { rotation.rotate(o, par) } }
        observer?.observe(o, site: AttentionMixer.outputInput, layer: layer)
        return profiled("o_proj") { oProj.forward(o, par) }              // [L, D]
    }

    /// softmax(q kᵀ / sqrt(P) over keys 0...start+t) v for every query row t and head, query head h
    /// reading key/value head h / (H / KV); float32 throughout, the softmax's sum in Double.
    func attend(_ q: Tensor, keys: [Float], values: [Float], start: Int, _ par: Parallelism) -> Tensor {
        let (l, p, group) = (q.rows, headDim, heads / kvHeads)
        let (qw, kvw) = (heads * p, kvHeads * p)
        let scale = 1 / Float(p).squareRoot()
        return Tensor(shape: [l, qw]) { out in
            q.storage.withUnsafeBufferPointer { qb in
                keys.withUnsafeBufferPointer { kb in
                    values.withUnsafeBufferPointer { vb in
                        let (qp, kp, vp, op) = (UncheckedSendable(qb.baseAddress!), UncheckedSendable(kb.baseAddress!),
                                                UncheckedSendable(vb.baseAddress!), UncheckedSendable(out.baseAddress!))
                        par.forEachChunk(l * heads) { range in
                            var scores = [Float](repeating: 0, count: start + l)
                            for job in range {
                                let (t, h) = (job / heads, job % heads)
                                let (qrow, kvOffset, n) = (qp.value + t * qw + h * p, (h / group) * p, start + t + 1)
                                var m = -Float.infinity
                                for j in 0..<n {
                                    let krow = kp.value + j * kvw + kvOffset
                                    var s: Float = 0
                                    for i in 0..<p { s += qrow[i] * krow[i] }
                                    scores[j] = s * scale
                                    m = max(m, scores[j])
                                }
                                var sum = 0.0
                                for j in 0..<n { scores[j] = exp(scores[j] - m); sum += Double(scores[j]) }
                                let inv = Float(1 / sum)
                                let orow = op.value + t * qw + h * p
                                for i in 0..<p { orow[i] = 0 }
                                for j in 0..<n {
                                    let (w, vrow) = (scores[j] * inv, vp.value + j * kvw + kvOffset)
                                    for i in 0..<p { orow[i] += w * vrow[i] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The MLP's activation.
public enum MLPActivation: String, Sendable {
    /// relu(x)^2 (Nemotron-H's relu2).
    case relu2
}

/// An MLP layer without a gate (Nemotron-H's): down_proj(act(up_proj(x))).
public struct MLPMixer: MixerDescription {
    public let width: Int
    public let activation: MLPActivation
    /// Biases on up and down (`mlp_bias`).
    public let bias: Bool

    public init(width: Int, activation: MLPActivation, bias: Bool = false) {
        precondition(width > 0)
        (self.width, self.activation, self.bias) = (width, activation, bias)
    }

    public static let input = Site("mlp_input"), downInput = Site("down_proj_input")

    public var name: String { "mlp" }

    public var parameters: [ParameterSpec] {
        let (w, b) = (width, bias)
        return [
            ParameterSpec("up_proj.weight", .weight(module: "up_proj")) { c in [w, c.hiddenSize] },
            ParameterSpec("up_proj.bias", .bias(module: "up_proj")) { _ in b ? [w] : nil },
            ParameterSpec("down_proj.weight", .weight(module: "down_proj")) { c in [c.hiddenSize, w] },
            ParameterSpec("down_proj.bias", .bias(module: "down_proj")) { c in b ? [c.hiddenSize] : nil },
        ]
    }

    public var modules: [ModuleSpec] {
        [ModuleSpec("up_proj", .linear, input: Self.input), ModuleSpec("down_proj", .linear, input: Self.downInput)]
    }

    public var sites: [Site] { [Self.input, Self.downInput] }
    public var scanInputs: [(site: Site, scaleKey: String)] { [] }
    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? { nil }
    public var residualReaders: [String] { ["up_proj"] }
    public var residualWriters: [String] { ["down_proj"] }
    /// QuaRot's online Hadamard on the down projection's input (arXiv 2404.00456).
    public var onlineRotated: [String] { ["down_proj"] }

    public var modelType: String { "nemotron_h" }
    public var architecture: String { "NemotronHForCausalLM" }
    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] { [:] }
    public func settings(_ c: MambaConfig) -> String { "MLP \(width) \(activation.rawValue)" }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        MLPForward(upProj: ops.linear("up_proj"), activation: activation, rotation: ops.onlineRotation(before: "down_proj"),
                   downProj: ops.linear("down_proj"))
    }

    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        let d = c.hiddenSize
        var t: [String: Tensor] = [
            "up_proj.weight": randomTensor([width, d], seed: next(), scale: 1 / Double(d).squareRoot()),
            "down_proj.weight": randomTensor([d, width], seed: next(), scale: 1 / Double(width).squareRoot()),
        ]
        if bias {
            t["up_proj.bias"] = randomTensor([width], seed: next(), scale: 0.1)
            t["down_proj.bias"] = randomTensor([d], seed: next(), scale: 0.1)
        }
        return t
    }
}

public struct MLPForward: MixerOp {
    public var upProj: any LinearOp
    public let activation: MLPActivation
    public var rotation: OnlineHadamard?
    public var downProj: any LinearOp

    public func makeState() -> StatelessState { StatelessState() }

    public func forward(_ u: Tensor, state: inout StatelessState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        observer?.observe(u, site: MLPMixer.input, layer: layer)
        var h = profiled("up_proj") { upProj.forward(u, par) }          // [L, I]
        profiled("activation") {
            h.storage.withUnsafeMutableBufferPointer { p in
                switch activation {
                case .relu2: for i in p.indices { let r = max(p[i], 0); p[i] = r * r }
                }
            }
        }
        if let rotation { h = profiled("hadamard") { rotation.rotate(h, par) } }
        observer?.observe(h, site: MLPMixer.downInput, layer: layer)
        return profiled("down_proj") { downProj.forward(h, par) }       // [L, D]
    }
}
