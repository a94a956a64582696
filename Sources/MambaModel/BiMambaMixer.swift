import Dispatch
import MambaTensors

// Vision Mamba's bidirectional mixer, bimamba_type "v2" (hustvl/Vim
// mamba-1p1p1/mamba_ssm/modules/mamba_simple.py, Mamba.forward's fast path): one in_proj makes x and
// z; a forward selective branch (conv1d, x_proj, dt_proj, A_log, D) runs over the tokens in order
// and a backward one (conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b) over them reversed; each output is
// gated by SiLU(z) of its own order (mamba_inner_fn_no_out_proj), the backward one reversed back and
// the two added (halved under if_divide_out) before out_proj. The gate is one per position, so
// y_f ⊙ SiLU(z) + y_b ⊙ SiLU(z) = (y_f + y_b) ⊙ SiLU(z): the forward adds the branches first and
// gates once, and out_proj's input is the same site as in Mamba-1. Shapes: D hidden, E inner, N
// state, R dt rank, K conv kernel, L tokens.

extension BranchSites {
    /// Vim's backward branch: its own scan inputs and x_proj / dt_proj inputs.
    public static let backward = BranchSites(convOutput: Site("conv_output_b"), dtLow: Site("dt_low_b"), dt: Site("dt_b"),
                                             B: Site("B_b"), C: Site("C_b"))
}

/// The "v2" bidirectional mixer's description.
public struct BiMambaMixer: MixerDescription {
    /// Vim's if_divide_out: the two branches' sum is halved.
    public let divideOut: Bool

    public init(divideOut: Bool) { self.divideOut = divideOut }

    public var name: String { "vim_bimamba_v2" }

    /// One branch's tensors under its suffix ("" forward, "_b" backward); A_log's is A_b_log.
    static func branchParameters(_ suffix: String) -> [ParameterSpec] {
        [
            ParameterSpec("conv1d\(suffix).weight", .weight(module: "conv1d\(suffix)")) { c in [c.innerSize, 1, c.convKernel] },
            ParameterSpec("conv1d\(suffix).bias", .bias(module: "conv1d\(suffix)")) { c in c.useConvBias ? [c.innerSize] : nil },
            ParameterSpec("x_proj\(suffix).weight", .weight(module: "x_proj\(suffix)")) { c in [c.timeStepRank + 2 * c.stateSize, c.innerSize] },
            ParameterSpec("dt_proj\(suffix).weight", .weight(module: "dt_proj\(suffix)")) { c in [c.innerSize, c.timeStepRank] },
            ParameterSpec("dt_proj\(suffix).bias", .bias(module: "dt_proj\(suffix)")) { c in [c.innerSize] },
            ParameterSpec("A\(suffix)_log", .vector) { c in [c.innerSize, c.stateSize] },
            ParameterSpec("D\(suffix)", .vector) { c in [c.innerSize] },
        ]
    }

    public var parameters: [ParameterSpec] {
        [
            ParameterSpec("in_proj.weight", .weight(module: "in_proj")) { c in [2 * c.innerSize, c.hiddenSize] },
            ParameterSpec("in_proj.bias", .bias(module: "in_proj")) { c in c.useBias ? [2 * c.innerSize] : nil },
        ] + Self.branchParameters("") + Self.branchParameters("_b") + [
            ParameterSpec("out_proj.weight", .weight(module: "out_proj")) { c in [c.hiddenSize, c.innerSize] },
            ParameterSpec("out_proj.bias", .bias(module: "out_proj")) { c in c.useBias ? [c.hiddenSize] : nil },
        ]
    }

    static func branchModules(_ suffix: String, _ sites: BranchSites) -> [ModuleSpec] {
        [
            // Both convs read in_proj's x (the backward one reversed in time: the same values).
            ModuleSpec("conv1d\(suffix)", .depthwiseConv, input: .x, allowsGroups: false),
            ModuleSpec("x_proj\(suffix)", .linear, input: sites.convOutput),
            ModuleSpec("dt_proj\(suffix)", .linear, input: sites.dtLow),
        ]
    }

    public var modules: [ModuleSpec] {
        [ModuleSpec("in_proj", .linear, input: .inProjInput)] + Self.branchModules("", .forward) + Self.branchModules("_b", .backward)
            + [ModuleSpec("out_proj", .linear, input: .outProjInput)]
    }

    public var sites: [Site] { [.inProjInput, .x, .z] + BranchSites.forward.all + BranchSites.backward.all + [.y, .outProjInput] }

    public var scanInputs: [(site: Site, scaleKey: String)] {
        [(.convOutput, "x_scale"), (.dt, "dt_scale"), (.B, "B_scale"), (.C, "C_scale"),
         (BranchSites.backward.convOutput, "x_b_scale"), (BranchSites.backward.dt, "dt_b_scale"),
         (BranchSites.backward.B, "B_b_scale"), (BranchSites.backward.C, "C_b_scale")]
    }

    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? {
        let (e, n, r) = (c.innerSize, c.stateSize, c.timeStepRank)
        switch site {
        case .x: return OutputSlice(module: "in_proj", rows: 0..<e)
        case .z: return OutputSlice(module: "in_proj", rows: e..<(2 * e))
        default: break
        }
        for (suffix, s) in [("", BranchSites.forward), ("_b", BranchSites.backward)] {
            switch site {
            case s.dtLow: return OutputSlice(module: "x_proj\(suffix)", rows: 0..<r)
            case s.B: return OutputSlice(module: "x_proj\(suffix)", rows: r..<(r + n))
            case s.C: return OutputSlice(module: "x_proj\(suffix)", rows: (r + n)..<(r + 2 * n))
            case s.dt: return OutputSlice(module: "dt_proj\(suffix)", rows: 0..<e)
            default: continue
            }
        }
        return nil
    }

    public var bottlenecks: [Site] { [.dtLow, BranchSites.backward.dtLow] }

    public var residualReaders: [String] { ["in_proj"] }
    public var residualWriters: [String] { ["out_proj"] }

    public var modelType: String { "vim" }
    public var architecture: String { "VisionMamba" }

    public func settings(_ c: MambaConfig) -> String { "R \(c.timeStepRank), forward and backward scans\(divideOut ? " averaged" : " summed")" }

    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] { ["if_divide_out": .bool(divideOut)] }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        func branch(_ suffix: String, _ sites: BranchSites) -> SelectiveBranch {
            SelectiveBranch(conv: ops.conv("conv1d\(suffix)"), xProj: ops.linear("x_proj\(suffix)"), dtProj: ops.linear("dt_proj\(suffix)"),
                            scanInput: ops.scanInput(), scan: SelectiveScan(aLog: ops.tensor("A\(suffix)_log"), dSkip: ops.tensor("D\(suffix)")),
                            sites: sites)
        }
        return BidirectionalMambaMixer(inProj: ops.linear("in_proj"), forward: branch("", .forward), backward: branch("_b", .backward),
                                       gate: ops.gate(), outProjRotation: ops.onlineRotation(before: "out_proj"), outProj: ops.linear("out_proj"),
                                       divideOut: divideOut)
    }

    /// Both branches drawn as Mamba-1's (Mamba1Mixer.randomTensors), the backward one with its own seeds.
    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        var t = Mamba1Mixer().randomTensors(c, next: next)
        let backwardKeys = Dictionary(uniqueKeysWithValues: zip(Self.branchParameters("").map(\.key), Self.branchParameters("_b").map(\.key)))
        for (key, value) in Mamba1Mixer().randomTensors(c, next: next) { if let b = backwardKeys[key] { t[b] = value } }
        return t
    }
}

/// The bidirectional forward over swappable leaf ops. It reads a whole sequence at once (each
/// branch starts from a zero state), so it carries no decode state.
public struct BidirectionalMambaMixer: MixerOp {
    public var inProj: any LinearOp        // [2E, D]
    public var forward: SelectiveBranch
    public var backward: SelectiveBranch
    public var gate: any GateOp
    public var outProjRotation: OnlineHadamard?  // R2 before out_proj (nil: none)
    public var outProj: any LinearOp       // [D, E]
    public var divideOut: Bool

    public init(inProj: any LinearOp, forward: SelectiveBranch, backward: SelectiveBranch, gate: any GateOp,
                outProjRotation: OnlineHadamard? = nil, outProj: any LinearOp, divideOut: Bool) {
        self.inProj = inProj; self.forward = forward; self.backward = backward; self.gate = gate
        self.outProjRotation = outProjRotation; self.outProj = outProj; self.divideOut = divideOut
    }

    public func makeState() -> StatelessState { StatelessState() }

    /// u: normalized block input [L, D] (a whole sequence) -> mixer output [L, D].
    public func forward(_ u: Tensor, state: inout StatelessState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        let e = forward.innerSize
        observer?.observe(u, site: .inProjInput, layer: layer)
        let xz = profiled("in_proj") { inProj.forward(u, par) }         // [L, 2E]
        let (x, z) = profiled("split") { (xz.columns(0..<e), xz.columns(e..<(2 * e))) } // [L, E] each
        observer?.observe(x, site: .x, layer: layer)
        observer?.observe(z, site: .z, layer: layer)
        var (y, yBackward) = branches(x, layer: layer, par, observer: observer)    // [L, E] each, the backward one reversed
        profiled("residual") {
            let scale: Float = divideOut ? 0.5 : 1
            let (rows, cols) = (y.rows, y.cols)
            y.storage.withUnsafeMutableBufferPointer { yp in
                yBackward.storage.withUnsafeBufferPointer { bp in
                    for t in 0..<rows {
                        let (dst, src) = (t * cols, (rows - 1 - t) * cols)
                        for j in 0..<cols { yp[dst + j] = (yp[dst + j] + bp[src + j]) * scale }
                    }
                }
            }
        }
        observer?.observe(y, site: .y, layer: layer)
        let g = profiled("gate") { gate.forward(y: y, z: z, par) }     // [L, E]
        return profiled("out_proj") {                                   // [L, D]
            outProj.forward(g, rotatedBy: outProjRotation, par, observer: observer, site: .outProjInput, layer: layer)
        }
    }
}

extension BidirectionalMambaMixer {
    /// Both branches from zero states: the forward one over x, the backward one over x reversed.
    /// With two threads or more and no observer they run at once, one thread each (their products
    /// are small: at Vim-T's shape x_proj and dt_proj lose more to a second OpenBLAS thread than
    /// they gain, and the conv and the scan inputs run on one thread anyway). A branch's arithmetic
    /// does not depend on its thread count (products split by output columns, the scan by
    /// channels), so the output is the same either way. bench --steps does not see the steps of
    /// branches run this way (the step profile is the calling task's).
    func branches(_ x: Tensor, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> (Tensor, Tensor) {
        let reversed = reversedRows(x)
        guard par.threads > 1, observer == nil else {
            var fs = forward.makeState(), bs = backward.makeState()
            return (forward.forward(x, state: &fs, layer: layer, par, observer: observer),
                    backward.forward(reversed, state: &bs, layer: layer, par, observer: observer))
        }
        var out: [Tensor?] = [nil, nil]
        let (inputs, branches) = ([x, reversed], [forward, backward])
        let half = Parallelism(threads: max(1, par.threads / 2))    // OpenBLAS's (process-wide) count too, until restored below
        defer { par.applyToBLAS() }
        out.withUnsafeMutableBufferPointer { slots in
            let o = UncheckedSendable(slots)
            DispatchQueue.concurrentPerform(iterations: 2) { k in
                var state = branches[k].makeState()
                o.value[k] = branches[k].forward(inputs[k], state: &state, layer: layer, half, observer: nil)
            }
        }
        return (out[0]!, out[1]!)
    }
}

/// x's rows in reverse order (the tokens reversed in time).
func reversedRows(_ x: Tensor) -> Tensor {
    let (rows, cols) = (x.rows, x.cols)
    return Tensor(shape: x.shape) { out in
        x.storage.withUnsafeBufferPointer { src in
            for t in 0..<rows {
                (out.baseAddress! + t * cols).update(from: src.baseAddress! + (rows - 1 - t) * cols, count: cols)
            }
        }
    }
}
