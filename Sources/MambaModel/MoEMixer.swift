import Foundation
import MambaTensors

// The mixture-of-experts layers of the hybrids (docs/DESIGN.md section 1, "Hybrids"): a linear
// router scores E experts per token, the top k SwiGLU experts run on that token and their outputs
// are summed, weighted by the router's softmax; Granite adds a shared SwiGLU MLP over every token.
// Upstream: transformers models/granitemoehybrid/modeling_granitemoehybrid.py
// (GraniteMoeHybridTopKRouter: softmax over the top-k logits, so the k weights sum to 1;
// GraniteMoeHybridExperts: gate and up fused, [E, 2I, D] and [E, D, I] stacked in one tensor each;
// GraniteMoeHybridDecoderLayer: moe(x) + shared_mlp(x)) and models/jamba/modeling_jamba.py
// (JambaTopKRouter: the top k of the softmax over all E logits, left unnormalized; JambaExperts:
// one gate_proj, up_proj, down_proj per expert). Every expert is its own set of modules here, so
// loading, 16-bit storage, the transforms and the int8 path treat each as they treat an MLP.

/// A mixture-of-experts layer's description.
public struct MoEMixer: MixerDescription {
    /// How the file spells the layer.
    public enum Spelling: String, Sendable {
        /// router.layer.weight, and the experts stacked in block_sparse_moe.input_linear /
        /// output_linear (gate and up fused); a shared MLP beside them.
        case granite
        /// router.weight, experts.e.gate_proj / up_proj / down_proj.
        case jamba
    }

    public let experts: Int
    public let topK: Int
    /// Each expert's MLP width.
    public let width: Int
    /// The k weights are a softmax over the k chosen logits (sum 1), or the chosen entries of a
    /// softmax over all E (Jamba).
    public let normalizeTopK: Bool
    public let spelling: Spelling
    /// The shared MLP's width (Granite's shared_mlp; nil: none).
    public let sharedWidth: Int?

    public init(experts: Int, topK: Int, width: Int, normalizeTopK: Bool, spelling: Spelling, sharedWidth: Int? = nil) {
        precondition(experts > 0 && (1...experts).contains(topK) && width > 0)
        (self.experts, self.topK, self.width, self.normalizeTopK, self.spelling, self.sharedWidth) =
            (experts, topK, width, normalizeTopK, spelling, sharedWidth)
    }

    public static let input = GatedMLPMixer.input
    public static func expertDownInput(_ e: Int) -> Site { Site("experts.\(e).down_proj_input") }
    public static let sharedDownInput = Site("shared_mlp.down_proj_input")

    public var name: String { "moe" }

    /// One expert as an MLP: gate and up fused in Granite's spelling.
    var expert: GatedMLPMixer { GatedMLPMixer(width: width, fused: spelling == .granite) }
    var shared: GatedMLPMixer? { sharedWidth.map { GatedMLPMixer(width: $0, fused: true) } }
    static func expertPrefix(_ e: Int) -> String { "experts.\(e)." }
    static let sharedPrefix = "shared_mlp."

    public var parameters: [ParameterSpec] {
        let (n, granite) = (experts, spelling == .granite)
        var specs = [ParameterSpec("router.weight", .weight(module: "router"), file: granite ? FileSource("block_sparse_moe.router.layer.weight") : nil) { c in
            [n, c.hiddenSize]
        }]
        for e in 0..<n {
            for p in expert.parameters {
                // Granite stacks expert e's input_linear / output_linear as entry e of one tensor.
                let file = granite ? FileSource("block_sparse_moe." + p.key, stacked: (e, n)) : nil
                specs.append(ParameterSpec(Self.expertPrefix(e) + p.key, p.role.prefixed(Self.expertPrefix(e)), file: file, p.diskShape))
            }
        }
        if let shared {
            specs += shared.parameters.map { p in ParameterSpec(Self.sharedPrefix + p.key, p.role.prefixed(Self.sharedPrefix), p.diskShape) }
        }
        return specs
    }

    public var modules: [ModuleSpec] {
        var specs = [ModuleSpec("router", .linear, input: Self.input)]
        for e in 0..<experts {
            specs += expert.inputModules.map { ModuleSpec(Self.expertPrefix(e) + $0, .linear, input: Self.input) }
            specs.append(ModuleSpec(Self.expertPrefix(e) + expert.outputModule, .linear, input: Self.expertDownInput(e)))
        }
        if let shared {
            specs += shared.inputModules.map { ModuleSpec(Self.sharedPrefix + $0, .linear, input: Self.input) }
            specs.append(ModuleSpec(Self.sharedPrefix + shared.outputModule, .linear, input: Self.sharedDownInput))
        }
        return specs
    }

    public var sites: [Site] { [Self.input] + (0..<experts).map(Self.expertDownInput) + (shared == nil ? [] : [Self.sharedDownInput]) }
    public var scanInputs: [(site: Site, scaleKey: String)] { [] }
    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? { nil }

    public var residualReaders: [String] {
        ["router"] + (0..<experts).flatMap { e in expert.inputModules.map { Self.expertPrefix(e) + $0 } }
            + (shared?.inputModules.map { Self.sharedPrefix + $0 } ?? [])
    }
    public var residualWriters: [String] {
        (0..<experts).map { Self.expertPrefix($0) + expert.outputModule } + (shared.map { [Self.sharedPrefix + $0.outputModule] } ?? [])
    }
    /// QuaRot's online Hadamard on every down projection's input (arXiv 2404.00456).
    public var onlineRotated: [String] { residualWriters }

    public var modelType: String { spelling == .granite ? "granitemoehybrid" : "jamba" }
    public var architecture: String { spelling == .granite ? "GraniteMoeHybridForCausalLM" : "JambaForCausalLM" }
    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] { [:] }
    public func settings(_ c: MambaConfig) -> String {
        "MoE \(experts) experts, top \(topK)\(normalizeTopK ? " renormalized" : ""), SwiGLU \(width)" + (sharedWidth.map { ", shared MLP \($0)" } ?? "")
    }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        MoEForward(router: ops.linear("router"),
                   experts: (0..<experts).map { e in expert.makeForward(ops, prefix: Self.expertPrefix(e), input: nil, downInput: Self.expertDownInput(e)) },
                   shared: shared?.makeForward(ops, prefix: Self.sharedPrefix, input: nil, downInput: Self.sharedDownInput),
                   topK: topK, normalizeTopK: normalizeTopK)
    }

    /// The router's rows scaled up so that tokens pick clearly different experts.
    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        var t = ["router.weight": randomTensor([experts, c.hiddenSize], seed: next(), scale: 2 / Double(c.hiddenSize).squareRoot())]
        for e in 0..<experts {
            for (k, v) in expert.randomTensors(c, next: next) { t[Self.expertPrefix(e) + k] = v }
        }
        if let shared {
            for (k, v) in shared.randomTensors(c, next: next) { t[Self.sharedPrefix + k] = v }
        }
        return t
    }
}

extension ParameterRole {
    /// The same role for a module named `prefix` + its name.
    func prefixed(_ prefix: String) -> ParameterRole {
        switch self {
        case .weight(let m): .weight(module: prefix + m)
        case .bias(let m): .bias(module: prefix + m)
        case .vector: .vector
        }
    }
}

/// The mixture's forward: route, run each chosen expert on its tokens (the tokens grouped by
/// expert, so prefill runs one GEMM per expert), sum weighted; add the shared MLP.
public struct MoEForward: MixerOp {
    public var router: any LinearOp                 // [E, D]
    public var experts: [GatedMLPForward]
    public var shared: GatedMLPForward?
    public let topK: Int
    public let normalizeTopK: Bool

    public func makeState() -> StatelessState { StatelessState() }

    /// Each expert's tokens and their weights, in token order.
    func route(_ logits: Tensor) -> [[(token: Int, weight: Float)]] {
        let (l, n) = (logits.rows, logits.cols)
        var assigned = [[(token: Int, weight: Float)]](repeating: [], count: n)
        var chosen = [Int](repeating: 0, count: topK)
        logits.storage.withUnsafeBufferPointer { p in
            for t in 0..<l {
                let row = UnsafeBufferPointer(rebasing: p[(t * n)..<((t + 1) * n)])
                // The k largest, ties to the lower index.
                for j in 0..<topK {
                    var best = -1
                    for e in 0..<n where !chosen[0..<j].contains(e) && (best < 0 || row[e] > row[best]) { best = e }
                    chosen[j] = best
                }
                // Softmax over the chosen logits, or over all of them (the chosen entries kept).
                let top = row[chosen[0]]
                let over = normalizeTopK ? chosen.map { row[$0] } : Array(row)
                let total = over.reduce(Float(0)) { $0 + exp($1 - top) }
                for e in chosen { assigned[e].append((t, exp(row[e] - top) / total)) }
            }
        }
        return assigned
    }

    public func forward(_ u: Tensor, state: inout StatelessState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        observer?.observe(u, site: MoEMixer.input, layer: layer)
        let (l, d) = (u.rows, u.cols)
        let assigned = profiled("router") { route(router.forward(u, par)) }
        var out = Tensor(zeros: [l, d])
        for (e, tokens) in assigned.enumerated() where !tokens.isEmpty {
            let x = profiled("gather") {
                Tensor(shape: [tokens.count, d]) { dst in
                    u.storage.withUnsafeBufferPointer { src in
                        for (i, t) in tokens.enumerated() {
                            _ = UnsafeMutableBufferPointer(rebasing: dst[(i * d)..<((i + 1) * d)]).update(fromContentsOf: src[(t.token * d)..<((t.token + 1) * d)])
                        }
                    }
                }
            }
            let y = experts[e].forward(x, layer: layer, par, observer: observer)   // [n_e, D]
            profiled("scatter") {
                out.storage.withUnsafeMutableBufferPointer { o in
                    y.storage.withUnsafeBufferPointer { yp in
                        for (i, t) in tokens.enumerated() {
                            for j in 0..<d { o[t.token * d + j] += t.weight * yp[i * d + j] }
                        }
                    }
                }
            }
        }
        if let shared {
            let s = shared.forward(u, layer: layer, par, observer: observer)
            out.storage.withUnsafeMutableBufferPointer { o in
                s.storage.withUnsafeBufferPointer { sp in for i in o.indices { o[i] += sp[i] } }
            }
        }
        return out
    }
}
