import Foundation
import MambaTensors

// The Mamba-1 mixer: its description (every tensor named once, its modules and sites) and its
// forward. Upstream: transformers models/mamba/modeling_mamba.py (MambaMixer.slow_forward) and
// state-spaces mamba_ssm/modules/mamba_simple.py. Falcon-Mamba is the same mixer with weightless
// RMSNorms on dt_low, B and C after x_proj's split (transformers
// models/falcon_mamba/modeling_falcon_mamba.py, FalconMambaMixer: dt_layernorm, b_layernorm,
// c_layernorm); Jamba's Mamba layers have the same three norms with weights (transformers
// models/jamba/modeling_jamba.py, JambaMambaMixer). Shapes: D hidden, E inner, N state, R dt rank,
// K conv kernel, L tokens.

/// The Mamba-1 (and Falcon-Mamba) mixer's description.
public struct Mamba1Mixer: MixerDescription {
    /// Falcon-Mamba's mixer_rms_eps: weightless RMSNorms on dt_low, B and C (nil: plain Mamba-1).
    public let ssmNormEpsilon: Float?
    /// The three norms carry weights (Jamba's dt_layernorm, b_layernorm, c_layernorm).
    public let ssmNormWeights: Bool

    public init(ssmNormEpsilon: Float? = nil, ssmNormWeights: Bool = false) {
        precondition(!ssmNormWeights || ssmNormEpsilon != nil)
        (self.ssmNormEpsilon, self.ssmNormWeights) = (ssmNormEpsilon, ssmNormWeights)
    }

    public var name: String { ssmNormWeights ? "jamba_mamba" : ssmNormEpsilon == nil ? "mamba1" : "falcon_mamba" }

    /// The norms' weight tensors, by site (Jamba's).
    static let normWeights: [(site: Site, key: String)] = [(.dtLow, "dt_layernorm.weight"), (.B, "b_layernorm.weight"), (.C, "c_layernorm.weight")]

    /// Jamba's norm weight multiplies dt_low last before dt_proj; the transforms fold it into
    /// dt_proj's columns, leaving a weightless norm that R5 crosses.
    public func scaleVector(of site: Site) -> String? {
        ssmNormWeights ? Self.normWeights.first { $0.site == site }?.key : nil
    }

    /// dt_low passes through Falcon-Mamba's weightless RMSNorm: RMS(a R) = RMS(a) for an orthogonal
    /// R, so R5 still crosses it exactly, but a per-channel smoothing would change the RMS.
    public func isNormalized(_ site: Site) -> Bool {
        ssmNormEpsilon != nil && [.dtLow, .B, .C].contains(site)
    }

    public var parameters: [ParameterSpec] {
        [
            ParameterSpec("in_proj.weight", .weight(module: "in_proj")) { c in [2 * c.innerSize, c.hiddenSize] },
            ParameterSpec("in_proj.bias", .bias(module: "in_proj")) { c in c.useBias ? [2 * c.innerSize] : nil },
            // torch's Conv1d(groups=E) layout; the forward uses [E, K].
            ParameterSpec("conv1d.weight", .weight(module: "conv1d")) { c in [c.innerSize, 1, c.convKernel] },
            ParameterSpec("conv1d.bias", .bias(module: "conv1d")) { c in c.useConvBias ? [c.innerSize] : nil },
            ParameterSpec("x_proj.weight", .weight(module: "x_proj")) { c in [c.timeStepRank + 2 * c.stateSize, c.innerSize] },
            ParameterSpec("dt_proj.weight", .weight(module: "dt_proj")) { c in [c.innerSize, c.timeStepRank] },
            ParameterSpec("dt_proj.bias", .bias(module: "dt_proj")) { c in [c.innerSize] },
            ParameterSpec("A_log", .vector) { c in [c.innerSize, c.stateSize] },
            ParameterSpec("D", .vector) { c in [c.innerSize] },
            ParameterSpec("out_proj.weight", .weight(module: "out_proj")) { c in [c.hiddenSize, c.innerSize] },
            ParameterSpec("out_proj.bias", .bias(module: "out_proj")) { c in c.useBias ? [c.hiddenSize] : nil },
            ParameterSpec("dt_layernorm.weight", .vector) { [ssmNormWeights] c in ssmNormWeights ? [c.timeStepRank] : nil },
            ParameterSpec("b_layernorm.weight", .vector) { [ssmNormWeights] c in ssmNormWeights ? [c.stateSize] : nil },
            ParameterSpec("c_layernorm.weight", .vector) { [ssmNormWeights] c in ssmNormWeights ? [c.stateSize] : nil },
        ]
    }

    public var modules: [ModuleSpec] {
        [
            ModuleSpec("in_proj", .linear, input: .inProjInput),
            ModuleSpec("conv1d", .depthwiseConv, input: .x, allowsGroups: false),
            // x_proj reads the conv output, the same quantized values the scan takes as x.
            ModuleSpec("x_proj", .linear, input: .convOutput),
            ModuleSpec("dt_proj", .linear, input: .dtLow),
            ModuleSpec("out_proj", .linear, input: .outProjInput),
        ]
    }

    public var sites: [Site] { [.inProjInput, .x, .z, .convOutput, .dtLow, .dt, .B, .C, .y, .outProjInput] }

    public var scanInputs: [(site: Site, scaleKey: String)] {
        [(.convOutput, "x_scale"), (.dt, "dt_scale"), (.B, "B_scale"), (.C, "C_scale")]
    }

    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? {
        let (e, n, r) = (c.innerSize, c.stateSize, c.timeStepRank)
        switch site {
        case .x: return OutputSlice(module: "in_proj", rows: 0..<e)
        case .z: return OutputSlice(module: "in_proj", rows: e..<(2 * e))
        case .dtLow: return OutputSlice(module: "x_proj", rows: 0..<r)
        case .B: return OutputSlice(module: "x_proj", rows: r..<(r + n))
        case .C: return OutputSlice(module: "x_proj", rows: (r + n)..<(r + 2 * n))
        case .dt: return OutputSlice(module: "dt_proj", rows: 0..<e)
        default: return nil
        }
    }

    public var residualReaders: [String] { ["in_proj"] }
    public var residualWriters: [String] { ["out_proj"] }

    public var modelType: String { ssmNormWeights ? "jamba" : ssmNormEpsilon == nil ? "mamba" : "falcon_mamba" }
    public var architecture: String { ssmNormWeights ? "JambaForCausalLM" : ssmNormEpsilon == nil ? "MambaForCausalLM" : "FalconMambaForCausalLM" }

    public func settings(_ c: MambaConfig) -> String {
        "R \(c.timeStepRank)" + (ssmNormEpsilon.map { ", dt/B/C RMSNorm\(ssmNormWeights ? " (weighted)" : "") eps \($0)" } ?? "")
    }

    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] {
        var json: [String: JSONValue] = ["time_step_rank": .number(Double(c.timeStepRank))]
        if let eps = ssmNormEpsilon { json["mixer_rms_eps"] = .number(Double(eps)) }
        return json
    }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        MambaMixer(
            inProj: ops.linear("in_proj"),
            branch: SelectiveBranch(conv: ops.conv("conv1d"), xProj: ops.linear("x_proj"), dtProj: ops.linear("dt_proj"), scanInput: ops.scanInput(),
                                    scan: SelectiveScan(aLog: ops.tensor("A_log"), dSkip: ops.tensor("D")), ssmNormEpsilon: ssmNormEpsilon,
                                    ssmNormWeights: ssmNormWeights ? Self.normWeights.map { ops.tensor($0.key) } : nil),
            gate: ops.gate(), outProjRotation: ops.onlineRotation(before: "out_proj"), outProj: ops.linear("out_proj"))
    }

    /// A_log = log(1..N) plus noise, dt bias the inverse softplus of dt in [1e-3, 1e-1], so tests
    /// exercise real decay rates rather than zeros.
    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        let (d, e, n, r, k) = (c.hiddenSize, c.innerSize, c.stateSize, c.timeStepRank, c.convKernel)
        func w(_ shape: [Int]) -> Tensor { randomTensor(shape, seed: next(), scale: 1 / Double(shape.last!).squareRoot()) }
        var rng = SeededRandom(seed: next())
        var t: [String: Tensor] = [:]
        t["A_log"] = Tensor(shape: [e, n], storage: (0..<(e * n)).map { i in Float(log(Double(i % n + 1)) + 0.1 * rng.nextGaussian()) })
        t["dt_proj.bias"] = Tensor(shape: [e], storage: (0..<e).map { _ in
            let dt = exp(log(1e-3) + rng.nextUnit() * (log(1e-1) - log(1e-3)))
            return Float(dt + log(-expm1(-dt)))
        })
        t["in_proj.weight"] = w([2 * e, d])
        if c.useBias { t["in_proj.bias"] = randomTensor([2 * e], seed: next(), scale: 0.1) }
        t["conv1d.weight"] = randomTensor([e, k], seed: next(), scale: 0.5)
        if c.useConvBias { t["conv1d.bias"] = randomTensor([e], seed: next(), scale: 0.1) }
        t["x_proj.weight"] = w([r + 2 * n, e])
        t["dt_proj.weight"] = randomTensor([e, r], seed: next(), scale: 1 / Double(r).squareRoot())
        t["D"] = randomTensor([e], seed: next(), scale: 0.2, offset: 1)
        t["out_proj.weight"] = w([d, e])
        if c.useBias { t["out_proj.bias"] = randomTensor([d], seed: next(), scale: 0.1) }
        if ssmNormWeights {
            for (key, size) in zip(Self.normWeights.map(\.key), [r, n, n]) { t[key] = randomTensor([size], seed: next(), scale: 0.2, offset: 1) }
        }
        return t
    }
}

/// The part of a Mamba-1 mixer between in_proj's x and the scan's output y: the causal conv and
/// SiLU, x_proj, Falcon-Mamba's and Jamba's norms on dt_low, B and C, dt_proj and the selective
/// scan. A Mamba-1 mixer runs one; Vim's bidirectional mixer runs two, the second over the sequence
/// reversed (BiMambaMixer.swift), each reporting its own sites.
public struct SelectiveBranch: Sendable {
    public var conv: any ConvOp            // [E, K]
    public var xProj: any LinearOp         // [R + 2N, E]
    public var dtProj: any LinearOp        // [E, R] + bias
    public var scanInput: any ScanInputOp  // x, dt, B, C before the scan
    public var scan: SelectiveScan         // A [E, N], D [E]
    /// Falcon-Mamba's weightless RMSNorm on dt_low, B and C (nil: none).
    public var ssmNormEpsilon: Float?
    /// Jamba's weights of those norms: dt_low's [R], B's [N], C's [N] (nil: weightless).
    public var ssmNormWeights: [Tensor]?
    /// The sites this branch reports and quantizes its scan inputs at.
    public var sites: BranchSites

    public init(conv: any ConvOp, xProj: any LinearOp, dtProj: any LinearOp, scanInput: any ScanInputOp, scan: SelectiveScan,
                ssmNormEpsilon: Float? = nil, ssmNormWeights: [Tensor]? = nil, sites: BranchSites = .forward) {
        self.conv = conv; self.xProj = xProj; self.dtProj = dtProj; self.scanInput = scanInput; self.scan = scan
        self.ssmNormEpsilon = ssmNormEpsilon
        self.ssmNormWeights = ssmNormWeights
        self.sites = sites
    }

    public var innerSize: Int { scan.channels }
    public var stateSize: Int { scan.stateSize }
    public var timeStepRank: Int { dtProj.inFeatures }

    /// A fresh (all zero) conv window and SSM state.
    public func makeState() -> RecurrentState {
        RecurrentState(conv: [Float](repeating: 0, count: (conv.kernelSize - 1) * innerSize),
                       ssm: [Float](repeating: 0, count: innerSize * stateSize))
    }

    /// x: in_proj's x rows [L, E] -> the scan's output y [L, E] (before the gate), from `state`.
    public func forward(_ x: Tensor, state: inout RecurrentState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        var xc = profiled("conv") { conv.forwardSiLU(x, state: &state.conv, par) } // [L, E]
        return forward(convolved: &xc, state: &state, layer: layer, par, observer: observer)
    }

    /// The same from x as the conv's integers, written by in_proj's epilogue (ConvOp.quantizedInput).
    public func forward(_ x: QuantizedConvInput, state: inout RecurrentState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        var xc = profiled("conv") { conv.forwardSiLU(x, state: &state.conv, par) } // [L, E]
        return forward(convolved: &xc, state: &state, layer: layer, par, observer: observer)
    }

    /// From silu(conv(x)) [L, E] on; `xc` is quantized in place (inout: a copy would be a pass and
    /// fresh pages per layer).
    private func forward(convolved xc: inout Tensor, state: inout RecurrentState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        let (n, r) = (stateSize, timeStepRank)
        profiled("scan inputs") { scanInput.forward(&xc, site: sites.convOutput) }
        observer?.observe(xc, site: sites.convOutput, layer: layer)
        let xdbl = profiled("x_proj") { xProj.forward(xc, par) }       // [L, R + 2N]
        var (dtLow, b, c) = profiled("split") {                          // [L, R], [L, N], [L, N]
            (xdbl.columns(0..<r), xdbl.columns(r..<(r + n)), xdbl.columns((r + n)..<(r + 2 * n)))
        }
        if let eps = ssmNormEpsilon {                          // Falcon-Mamba, Jamba: before dt_proj and the B, C quantizers
            dtLow = rmsNorm(dtLow, weight: ssmNormWeights?[0], eps: eps)
            b = rmsNorm(b, weight: ssmNormWeights?[1], eps: eps)
            c = rmsNorm(c, weight: ssmNormWeights?[2], eps: eps)
        }
        observer?.observe(dtLow, site: sites.dtLow, layer: layer)
        var dt = profiled("dt_proj") { dtProj.forward(dtLow, par) }    // [L, E], before softplus
        profiled("scan inputs") {
            scanInput.forward(&dt, site: sites.dt)
            scanInput.forward(&b, site: sites.B)
            scanInput.forward(&c, site: sites.C)
        }
        observer?.observe(dt, site: sites.dt, layer: layer)
        observer?.observe(b, site: sites.B, layer: layer)
        observer?.observe(c, site: sites.C, layer: layer)
        return profiled("scan") { scan.forward(x: xc, dtRaw: dt, b: b, c: c, h: &state.ssm, par) } // [L, E]
    }
}

/// The sites of one selective branch.
public struct BranchSites: Sendable, Equatable {
    public let convOutput: Site, dtLow: Site, dt: Site, B: Site, C: Site

    public var all: [Site] { [convOutput, dtLow, B, C, dt] }

    /// Mamba-1's (and Vim's forward branch's).
    public static let forward = BranchSites(convOutput: .convOutput, dtLow: .dtLow, dt: .dt, B: .B, C: .C)
}

/// The Mamba-1 forward over swappable leaf ops (Ops.swift).
public struct MambaMixer: MixerOp {
    public var inProj: any LinearOp        // [2E, D]
    public var branch: SelectiveBranch     // conv, x_proj, dt_proj, the scan
    public var gate: any GateOp
    public var outProjRotation: OnlineHadamard?  // R2, applied to g before out_proj (nil: none)
    public var outProj: any LinearOp       // [D, E]

    public init(inProj: any LinearOp, branch: SelectiveBranch, gate: any GateOp, outProjRotation: OnlineHadamard? = nil, outProj: any LinearOp) {
        self.inProj = inProj; self.branch = branch; self.gate = gate; self.outProjRotation = outProjRotation; self.outProj = outProj
    }

    public var innerSize: Int { branch.innerSize }

    public func makeState() -> RecurrentState { branch.makeState() }

    /// u: normalized block input [L, D] -> mixer output [L, D]; `state` is this layer's decode state.
    public func forward(_ u: Tensor, state: inout RecurrentState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        let e = innerSize
        observer?.observe(u, site: .inProjInput, layer: layer)
        let y: Tensor, z: Tensor                                        // [L, E] each
        if observer == nil, inProj.quantizesColumns, var x = branch.conv.quantizedInput(rows: u.rows, state: state.conv),
           let rest = profiled("in_proj", { inProj.forward(u, quantizing: 0..<e, into: &x, par) }) {
            // An int8 conv: in_proj's epilogue writes x as its integers; the floats after it are z.
            (y, z) = (branch.forward(x, state: &state, layer: layer, par, observer: nil), rest.after)
        } else {
            let xz = profiled("in_proj") { inProj.forward(u, par) }     // [L, 2E]
            let x: Tensor
            (x, z) = profiled("split") { (xz.columns(0..<e), xz.columns(e..<(2 * e))) }
            observer?.observe(x, site: .x, layer: layer)
            observer?.observe(z, site: .z, layer: layer)
            y = branch.forward(x, state: &state, layer: layer, par, observer: observer)
        }
        observer?.observe(y, site: .y, layer: layer)
        let g = profiled("gate") { gate.forward(y: y, z: z, par) }     // [L, E]
        return profiled("out_proj") {                                   // [L, D]
            outProj.forward(g, rotatedBy: outProjRotation, par, observer: observer, site: .outProjInput, layer: layer)
        }
    }
}
