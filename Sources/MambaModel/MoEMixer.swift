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
// one gate_proj, up_proj, down_proj per expert) and models/nemotron_h/modeling_nemotron_h.py
// (NemotronHTopkRouter: DeepSeek-V3's routing, sigmoid scores chosen with a correction bias among the
// best groups of experts; NemotronHExperts: relu2 MLPs without a gate; shared_experts). Every expert
// is its own set of modules here, so loading, 16-bit storage, the transforms and the int8 path treat
// each as they treat an MLP.

/// A mixture-of-experts layer's description.
public struct MoEMixer: MixerDescription {
    /// How the file spells the layer.
    public enum Spelling: String, Sendable {
        /// router.layer.weight, and the experts stacked in block_sparse_moe.input_linear /
        /// output_linear (gate and up fused); a shared MLP beside them.
        case granite
        /// router.weight, experts.e.gate_proj / up_proj / down_proj.
        case jamba
        /// gate.weight, gate.e_score_correction_bias, experts.e.up_proj / down_proj (relu2, no
        /// gate), shared_experts.up_proj / down_proj.
        case nemotron
    }

    /// How the router's logits choose experts and weigh them.
    public enum Routing: Sendable, Equatable {
        /// A softmax: over the k chosen logits (`normalizeTopK`, the weights sum to 1: Granite) or
        /// over all E, the chosen entries kept (Jamba).
        case softmax(normalizeTopK: Bool)
        /// DeepSeek-V3's (Nemotron-H): scores sigmoid(logit); experts chosen by score + correction
        /// bias among the `topKGroups` best of `groups` equal groups (a group's worth: its two best),
        /// weighted by their scores, renormalized to sum 1 if `normalize`, times `scaling`.
        case sigmoid(groups: Int, topKGroups: Int, normalize: Bool, scaling: Float)
    }

    public let experts: Int
    public let topK: Int
    /// Each expert's MLP width.
    public let width: Int
    public let routing: Routing
    public let spelling: Spelling
    /// The shared MLP's width (Granite's shared_mlp, Nemotron-H's shared_experts; nil: none).
    public let sharedWidth: Int?

    public init(experts: Int, topK: Int, width: Int, routing: Routing, spelling: Spelling, sharedWidth: Int? = nil) {
        precondition(experts > 0 && (1...experts).contains(topK) && width > 0)
        if case .sigmoid(let g, let kg, _, _) = routing {
            precondition(g > 0 && experts % g == 0 && experts / g >= 2 && (1...g).contains(kg) && topK <= kg * (experts / g))
        }
        (self.experts, self.topK, self.width, self.routing, self.spelling, self.sharedWidth) =
            (experts, topK, width, routing, spelling, sharedWidth)
    }

    public static let input = GatedMLPMixer.input
    public static func expertDownInput(_ e: Int) -> Site { Site("experts.\(e).down_proj_input") }
    public static let sharedDownInput = Site("shared_mlp.down_proj_input")

    public var name: String { "moe" }

    /// One expert as an MLP: SwiGLU (gate and up fused in Granite's spelling) or Nemotron-H's relu2.
    var expert: any ExpertDescription { mlp(width: width, fused: spelling == .granite) }
    var shared: (any ExpertDescription)? { sharedWidth.map { mlp(width: $0, fused: true) } }
    func mlp(width: Int, fused: Bool) -> any ExpertDescription {
        if spelling == .nemotron { return MLPMixer(width: width, activation: .relu2) }
        return GatedMLPMixer(width: width, fused: fused)
    }
    static func expertPrefix(_ e: Int) -> String { "experts.\(e)." }

    /// A module's name with its expert index as "*" ("experts.3.down_proj" -> "experts.*.down_proj"):
    /// one name for a module of every expert (`--keep-float`, the error budget's rows); other names
    /// unchanged.
    public static func group(of module: String) -> String {
        let parts = module.split(separator: ".", omittingEmptySubsequences: false)
        guard let i = parts.firstIndex(of: "experts"), i + 1 < parts.count, Int(parts[i + 1]) != nil else { return module }
        return (parts[..<(i + 1)] + ["*"] + parts[(i + 2)...]).joined(separator: ".")
    }
    var sharedPrefix: String { spelling == .nemotron ? "shared_experts." : "shared_mlp." }
    static let correctionBias = "router.correction_bias"

    public var parameters: [ParameterSpec] {
        let (n, granite) = (experts, spelling == .granite)
        let routerFile = granite ? "block_sparse_moe.router.layer.weight" : spelling == .nemotron ? "gate.weight" : nil
        var specs = [ParameterSpec("router.weight", .weight(module: "router"), file: routerFile.map { FileSource($0) }) { c in [n, c.hiddenSize] }]
        if case .sigmoid = routing {
            specs.append(ParameterSpec(Self.correctionBias, .vector, file: FileSource("gate.e_score_correction_bias")) { _ in [n] })
        }
        for e in 0..<n {
            for p in expert.parameters {
                // Granite stacks expert e's input_linear / output_linear as entry e of one tensor.
                let file = granite ? FileSource("block_sparse_moe." + p.key, stacked: (e, n)) : nil
                specs.append(ParameterSpec(Self.expertPrefix(e) + p.key, p.role.prefixed(Self.expertPrefix(e)), file: file, p.diskShape))
            }
        }
        if let shared {
            specs += shared.parameters.map { p in ParameterSpec(sharedPrefix + p.key, p.role.prefixed(sharedPrefix), p.diskShape) }
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
            specs += shared.inputModules.map { ModuleSpec(sharedPrefix + $0, .linear, input: Self.input) }
            specs.append(ModuleSpec(sharedPrefix + shared.outputModule, .linear, input: Self.sharedDownInput))
        }
        return specs
    }

    public var sites: [Site] { [Self.input] + (0..<experts).map(Self.expertDownInput) + (shared == nil ? [] : [Self.sharedDownInput]) }
    public var scanInputs: [(site: Site, scaleKey: String)] { [] }
    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? { nil }

    public var residualReaders: [String] {
        ["router"] + (0..<experts).flatMap { e in expert.inputModules.map { Self.expertPrefix(e) + $0 } }
            + (shared?.inputModules.map { sharedPrefix + $0 } ?? [])
    }
    public var residualWriters: [String] {
        (0..<experts).map { Self.expertPrefix($0) + expert.outputModule } + (shared.map { [sharedPrefix + $0.outputModule] } ?? [])
    }
    /// QuaRot's online Hadamard on every down projection's input (arXiv 2404.00456).
    public var onlineRotated: [String] { residualWriters }

    public var modelType: String { switch spelling { case .granite: "granitemoehybrid"; case .jamba: "jamba"; case .nemotron: "nemotron_h" } }
    public var architecture: String {
        switch spelling { case .granite: "GraniteMoeHybridForCausalLM"; case .jamba: "JambaForCausalLM"; case .nemotron: "NemotronHForCausalLM" }
    }
    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] { [:] }
    public func settings(_ c: MambaConfig) -> String {
        let route = switch routing {
        case .softmax(let normalize): "softmax top \(topK)" + (normalize ? " renormalized" : "")
        case .sigmoid(let g, let kg, let normalize, let scaling): "sigmoid top \(topK) in \(kg) of \(g) groups" + (normalize ? " renormalized" : "") + (scaling == 1 ? "" : " x \(scaling)")
        }
        return "MoE \(experts) experts, \(route), \(spelling == .nemotron ? "relu2" : "SwiGLU") \(width)" + (sharedWidth.map { ", shared MLP \($0)" } ?? "")
    }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        let bias: Tensor? = if case .sigmoid = routing { ops.tensor(Self.correctionBias) } else { nil }
        return MoEForward(router: ops.linear("router"),
                          experts: (0..<experts).map { e in expert.makeExpert(ops, prefix: Self.expertPrefix(e), input: nil, downInput: Self.expertDownInput(e)) },
                          shared: shared?.makeExpert(ops, prefix: sharedPrefix, input: nil, downInput: Self.sharedDownInput),
                          topK: topK, routing: routing, correctionBias: bias)
    }

    /// The router's rows scaled up so that tokens pick clearly different experts.
    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        var t = ["router.weight": randomTensor([experts, c.hiddenSize], seed: next(), scale: 2 / Double(c.hiddenSize).squareRoot())]
        for e in 0..<experts {
            for (k, v) in expert.randomTensors(c, next: next) { t[Self.expertPrefix(e) + k] = v }
        }
        if let shared {
            for (k, v) in shared.randomTensors(c, next: next) { t[sharedPrefix + k] = v }
        }
        if case .sigmoid = routing { t[Self.correctionBias] = randomTensor([experts], seed: next(), scale: 0.1) }
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
    public var experts: [any ExpertForward]
    public var shared: (any ExpertForward)?
    public let topK: Int
    public let routing: MoEMixer.Routing
    /// Nemotron-H's e_score_correction_bias [E] (sigmoid routing only).
    public var correctionBias: Tensor?

    public func makeState() -> StatelessState { StatelessState() }

    /// The indices of the k largest of `values` among `allowed`, ties to the lower index.
    static func largest(_ k: Int, of values: [Float], allowed: (Int) -> Bool = { _ in true }) -> [Int] {
        var chosen: [Int] = []
        for _ in 0..<k {
            var best = -1
            for e in values.indices where allowed(e) && !chosen.contains(e) && (best < 0 || values[e] > values[best]) { best = e }
            chosen.append(best)
        }
        return chosen
    }

    /// Each expert's tokens and their weights, in token order.
    func route(_ logits: Tensor) -> [[(token: Int, weight: Float)]] {
        let (l, n) = (logits.rows, logits.cols)
        var assigned = [[(token: Int, weight: Float)]](repeating: [], count: n)
        for t in 0..<l {
            let row = Array(logits.storage[(t * n)..<((t + 1) * n)])
            switch routing {
            case .softmax(let normalize):
                // Softmax over the chosen logits, or over all of them (the chosen entries kept).
                let chosen = Self.largest(topK, of: row)
                let top = row[chosen[0]]
                let over = normalize ? chosen.map { row[$0] } : row
                let total = over.reduce(Float(0)) { $0 + exp($1 - top) }
                for e in chosen { assigned[e].append((t, exp(row[e] - top) / total)) }
            case .sigmoid(let groups, let topKGroups, let normalize, let scaling):
                let scores = row.map { 1 / (1 + exp(-$0)) }
                let choice = correctionBias.map { b in zip(scores, b.storage).map { $0 + $1 } } ?? scores
                let size = n / groups
                let worth = (0..<groups).map { g in Self.largest(2, of: Array(choice[(g * size)..<((g + 1) * size)])).reduce(Float(0)) { $0 + choice[g * size + $1] } }
                let keptGroups = Set(Self.largest(topKGroups, of: worth))
                let chosen = Self.largest(topK, of: choice) { keptGroups.contains($0 / size) }
                let total = normalize ? chosen.reduce(Float(0)) { $0 + scores[$1] } + 1e-20 : 1
                for e in chosen { assigned[e].append((t, scores[e] / total * scaling)) }
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
        if let shared { add(shared.forward(u, layer: layer, par, observer: observer), to: &out) }
        return out
    }
}
