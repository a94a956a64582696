import CMambaKernels
import Foundation
import MambaTensors

// The Mamba-2 mixer (SSD, Dao & Gu 2024): its description and its forward. Upstream: transformers
// models/mamba2/modeling_mamba2.py (Mamba2Mixer.forward and its torch fallbacks) and state-spaces
// mamba_ssm/modules/mamba2.py. Shapes: D hidden, E inner = H * P, H heads, P head dim, N state,
// G groups (head h reads B/C group h / (H / G)), K conv kernel, L tokens, X = E + 2GN the conv's
// channels [x | B | C].
//
// Deliberate differences from transformers, each for a reason:
// - Prompts of 64 tokens or more run the chunked form (ChunkedSSD.swift) in chunks of 64 whatever
//   the config's chunk_size, which is read and kept but changes only the summation order; decode
//   and shorter prompts run the recurrence in time order (mq_ssd_scan_f32). Decays below exp(-60)
//   count as 0 in the chunked form.
// - dt is clamped to time_step_limit in decode too. transformers and mamba_ssm clamp only in the
//   chunked prefill (mamba2_chunk_scan), so their step-by-step decode of a model with a finite
//   limit disagrees with their own prefill; here the two agree (the fixture tiny-mamba2-g2-untied
//   checks both against transformers' prefill).
// - The decode conv state holds K-1 inputs, not K (the oldest of transformers' K is never read).

/// The Mamba-2 mixer's description; its options are the config's per-head settings.
public struct Mamba2Mixer: MixerDescription {
    public let heads: Int            // H
    public let headDim: Int          // P
    public let groups: Int           // G
    /// Kept for the config's round trip; the result does not depend on it (see the file comment).
    public let chunkSize: Int
    /// dt is clamped to [min, max] after softplus (time_step_limit; max may be infinite).
    public let timeStepMin: Float
    public let timeStepMax: Float
    /// The gated group RMSNorm before out_proj (false: y * silu(z) goes to out_proj as in Mamba-1;
    /// Falcon-H1's mamba_rms_norm false).
    public let gatedNorm: Bool
    /// Biases on in_proj and on out_proj (nil: the config's use_bias for both; Falcon-H1 sets
    /// them apart: mamba_proj_bias, projectors_bias).
    public let biases: (inProj: Bool, outProj: Bool)?
    /// Falcon-H1's μP scalars: on the input (ssm_in_multiplier), on in_proj's output parts z, x,
    /// B, C and dt (ssm_multipliers), on out_proj's output (ssm_out_multiplier); 1 elsewhere.
    public let multipliers: Mamba2Multipliers

    public init(heads: Int, headDim: Int, groups: Int, chunkSize: Int = 256, timeStepMin: Float = 0, timeStepMax: Float = .infinity,
                gatedNorm: Bool = true, biases: (inProj: Bool, outProj: Bool)? = nil, multipliers: Mamba2Multipliers = Mamba2Multipliers()) {
        (self.heads, self.headDim, self.groups, self.chunkSize) = (heads, headDim, groups, chunkSize)
        (self.timeStepMin, self.timeStepMax) = (timeStepMin, timeStepMax)
        (self.gatedNorm, self.biases, self.multipliers) = (gatedNorm, biases, multipliers)
    }

    func inProjBias(_ c: MambaConfig) -> Bool { biases?.inProj ?? c.useBias }
    func outProjBias(_ c: MambaConfig) -> Bool { biases?.outProj ?? c.useBias }

    public var name: String { "mamba2" }

    /// The conv's channels: x, then B and C of every group.
    public func convChannels(_ c: MambaConfig) -> Int { c.innerSize + 2 * groups * c.stateSize }

    public var parameters: [ParameterSpec] {
        let h = heads
        return [
            // Rows [z (E) | x, B, C (X) | dt (H)].
            ParameterSpec("in_proj.weight", .weight(module: "in_proj")) { c in [c.innerSize + convChannels(c) + h, c.hiddenSize] },
            ParameterSpec("in_proj.bias", .bias(module: "in_proj")) { c in inProjBias(c) ? [c.innerSize + convChannels(c) + h] : nil },
            ParameterSpec("conv1d.weight", .weight(module: "conv1d")) { c in [convChannels(c), 1, c.convKernel] },
            ParameterSpec("conv1d.bias", .bias(module: "conv1d")) { c in c.useConvBias ? [convChannels(c)] : nil },
            ParameterSpec("dt_bias", .vector) { _ in [h] },
            ParameterSpec("A_log", .vector) { _ in [h] },
            ParameterSpec("D", .vector) { _ in [h] },
            // The gated RMSNorm's weight (MambaRMSNormGated), applied per group of E / G channels.
            ParameterSpec("norm.weight", .vector) { [gatedNorm] c in gatedNorm ? [c.innerSize] : nil },
            ParameterSpec("out_proj.weight", .weight(module: "out_proj")) { c in [c.hiddenSize, c.innerSize] },
            ParameterSpec("out_proj.bias", .bias(module: "out_proj")) { c in outProjBias(c) ? [c.hiddenSize] : nil },
        ]
    }

    public var modules: [ModuleSpec] {
        [
            ModuleSpec("in_proj", .linear, input: .inProjInput),
            ModuleSpec("conv1d", .depthwiseConv, input: .x, allowsGroups: false),
            ModuleSpec("out_proj", .linear, input: .outProjInput),
        ]
    }

    /// The SSM's inputs, as for Mamba-1: x (the conv output's x part), dt before dt_bias and
    /// softplus ([L, H]), B and C.
    public var sites: [Site] { [.inProjInput, .z, .x, .convOutput, .dt, .B, .C, .y, .outProjInput] }

    public var scanInputs: [(site: Site, scaleKey: String)] {
        [(.convOutput, "x_scale"), (.dt, "dt_scale"), (.B, "B_scale"), (.C, "C_scale")]
    }

    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? {
        let (e, x) = (c.innerSize, convChannels(c))
        switch site {
        case .z: return OutputSlice(module: "in_proj", rows: 0..<e)
        case .x: return OutputSlice(module: "in_proj", rows: e..<(e + x))
        case .dt: return OutputSlice(module: "in_proj", rows: (e + x)..<(e + x + heads))
        default: return nil
        }
    }

    public var residualReaders: [String] { ["in_proj"] }
    public var residualWriters: [String] { ["out_proj"] }

    /// out_proj's input is the output of the gated group RMSNorm: S-SiLU's smoothing of z would
    /// change the norm's statistics, but a smoothing of out_proj's input folds into the norm's
    /// weight (docs/DESIGN.md, Mamba-2).
    public func isNormalized(_ site: Site) -> Bool { gatedNorm && site == .outProjInput }
    public func scaleVector(of site: Site) -> String? { gatedNorm && site == .outProjInput ? "norm.weight" : nil }

    /// Quamba2's finer scales: x and dt per head, B and C per group (`--scan-scales group`).
    public func scanScaleGroups(_ site: Site, _ c: MambaConfig) -> Int? {
        switch site {
        case .convOutput, .dt: heads
        case .B, .C: groups
        default: nil
        }
    }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp { makeForward(ops, c) }

    func makeForward(_ ops: any MixerOpSource, _ c: MambaConfig) -> Mamba2Forward {
        Mamba2Forward(
            inProj: ops.linear("in_proj"), conv: ops.conv("conv1d"), scanInput: ops.scanInput(),
            scan: SSDScan(aLog: ops.tensor("A_log"), dSkip: ops.tensor("D"), dtBias: ops.tensor("dt_bias"), headDim: headDim,
                          groups: groups, stateSize: c.stateSize, timeStepMin: timeStepMin, timeStepMax: timeStepMax),
            gate: ops.gate(), norm: gatedNorm ? GroupRMSNorm(weight: ops.tensor("norm.weight"), groups: groups, eps: c.layerNormEpsilon) : nil,
            outProjRotation: ops.onlineRotation(before: "out_proj"), outProj: ops.linear("out_proj"), multipliers: multipliers)
    }

    /// A_log = log(1..16) spread over the heads plus noise, dt_bias the inverse softplus of dt in
    /// [1e-3, 1e-1] (mamba_ssm's init ranges), D near 1, the norm's weight near 1.
    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        let (d, e, k, x) = (c.hiddenSize, c.innerSize, c.convKernel, convChannels(c))
        func w(_ shape: [Int]) -> Tensor { randomTensor(shape, seed: next(), scale: 1 / Double(shape.last!).squareRoot()) }
        var rng = SeededRandom(seed: next())
        var t: [String: Tensor] = [:]
        t["A_log"] = Tensor(shape: [heads], storage: (0..<heads).map { i in Float(log(1 + 15 * Double(i) / Double(max(heads - 1, 1))) + 0.1 * rng.nextGaussian()) })
        t["dt_bias"] = Tensor(shape: [heads], storage: (0..<heads).map { _ in
            let dt = exp(log(1e-3) + rng.nextUnit() * (log(1e-1) - log(1e-3)))
            return Float(dt + log(-expm1(-dt)))
        })
        t["D"] = randomTensor([heads], seed: next(), scale: 0.2, offset: 1)
        t["in_proj.weight"] = w([e + x + heads, d])
        if inProjBias(c) { t["in_proj.bias"] = randomTensor([e + x + heads], seed: next(), scale: 0.1) }
        t["conv1d.weight"] = randomTensor([x, k], seed: next(), scale: 0.5)
        if c.useConvBias { t["conv1d.bias"] = randomTensor([x], seed: next(), scale: 0.1) }
        if gatedNorm { t["norm.weight"] = randomTensor([e], seed: next(), scale: 0.1, offset: 1) }
        t["out_proj.weight"] = w([d, e])
        if outProjBias(c) { t["out_proj.bias"] = randomTensor([d], seed: next(), scale: 0.1) }
        return t
    }

    public var modelType: String { "mamba2" }
    public var architecture: String { "Mamba2ForCausalLM" }

    public func settings(_ c: MambaConfig) -> String {
        "H \(heads) x P \(headDim), G \(groups), dt in [\(timeStepMin), \(timeStepMax)], chunk \(chunkSize)"
            + (gatedNorm ? "" : ", no gated norm") + (multipliers == Mamba2Multipliers() ? "" : ", \(multipliers)")
    }

    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] {
        [
            "num_heads": .number(Double(heads)), "head_dim": .number(Double(headDim)), "n_groups": .number(Double(groups)),
            "chunk_size": .number(Double(chunkSize)),
            "time_step_limit": .array([JSONValue(float: Double(timeStepMin)), JSONValue(float: Double(timeStepMax))]),
        ]
    }
}

/// The Mamba-2 forward over swappable leaf ops (Ops.swift).
public struct Mamba2Forward: MixerOp {
    public var inProj: any LinearOp        // [E + X + H, D]
    public var conv: any ConvOp            // [X, K]
    public var scanInput: any ScanInputOp  // x, dt, B, C before the scan
    public var scan: SSDScan
    public var gate: any GateOp            // y * silu(z)
    public var norm: GroupRMSNorm?         // over each group of E / G channels, weight [E] (nil: none)
    public var outProjRotation: OnlineHadamard?
    public var outProj: any LinearOp       // [D, E]
    public var multipliers = Mamba2Multipliers()

    public var innerSize: Int { scan.heads * scan.headDim }
    var convChannels: Int { innerSize + 2 * scan.groups * scan.stateSize }

    public func makeState() -> RecurrentState {
        RecurrentState(conv: [Float](repeating: 0, count: (conv.kernelSize - 1) * convChannels),
                   ssm: [Float](repeating: 0, count: innerSize * scan.stateSize))
    }

    public func forward(_ input: Tensor, state: inout RecurrentState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        let (e, x, h, gn) = (innerSize, convChannels, scan.heads, scan.groups * scan.stateSize)
        // The site is the scaled input: what in_proj reads (and an int8 model quantizes).
        let u = scaled(input, multipliers.input)
        observer?.observe(u, site: .inProjInput, layer: layer)
        let z: Tensor
        var xBC: Tensor                                                  // [L, E], [L, X]: the conv's output, X = x, B, C
        var dt: Tensor                                                  // [L, H], before dt_bias and softplus
        let scaledParts = multipliers.parts != Mamba2Multipliers().parts
        if observer == nil, !scaledParts, inProj.quantizesColumns, var xbc = conv.quantizedInput(rows: u.rows, state: state.conv),
           let rest = profiled("in_proj", { inProj.forward(u, quantizing: e..<(e + x), into: &xbc, par) }) {
            // An int8 conv: in_proj's epilogue writes xBC as its integers, z before it and dt after.
            (z, dt) = rest
            xBC = profiled("conv") { conv.forwardSiLU(xbc, state: &state.conv, par) }
        } else {
            var proj = profiled("in_proj") { inProj.forward(u, par) }  // [L, E + X + H]
            if scaledParts {
                let p = multipliers.parts
                scaleColumns(&proj, segments: [(0..<e, p[0]), (e..<(2 * e), p[1]), ((2 * e)..<(2 * e + gn), p[2]),
                                               ((2 * e + gn)..<(2 * e + 2 * gn), p[3]), ((e + x)..<(e + x + h), p[4])])
            }
            let xbc: Tensor
            (z, xbc, dt) = profiled("split") { (proj.columns(0..<e), proj.columns(e..<(e + x)), proj.columns((e + x)..<(e + x + h))) }
            observer?.observe(z, site: .z, layer: layer)
            observer?.observe(xbc, site: .x, layer: layer)
            xBC = profiled("conv") { conv.forwardSiLU(xbc, state: &state.conv, par) }
        }
        // x, B and C stay where the conv wrote them: the scan inputs' quantization and the scan
        // read their columns in place.
        let (xColumns, bColumns, cColumns) = (0..<e, e..<(e + gn), (e + gn)..<(e + 2 * gn))
        profiled("scan inputs") {
            scanInput.forward(&xBC, columns: xColumns, site: .convOutput)
            scanInput.forward(&dt, site: .dt)
            scanInput.forward(&xBC, columns: bColumns, site: .B)
            scanInput.forward(&xBC, columns: cColumns, site: .C)
        }
        if let observer {
            observer.observe(xBC.columns(xColumns), site: .convOutput, layer: layer)
            observer.observe(dt, site: .dt, layer: layer)
            observer.observe(xBC.columns(bColumns), site: .B, layer: layer)
            observer.observe(xBC.columns(cColumns), site: .C, layer: layer)
        }
        let y = profiled("scan") { scan.forward(xBC: xBC, dtRaw: dt, s: &state.ssm, par) } // [L, E], D skip included
        observer?.observe(y, site: .y, layer: layer)
        let g = profiled("gate") {                                      // [L, E]: norm(y * silu(z)) * weight, or y * silu(z)
            norm.map { gate.forward(y: y, z: z, normalizedBy: $0, par) } ?? gate.forward(y: y, z: z, par)
        }
        return profiled("out_proj") {                                   // [L, D]
            scaled(outProj.forward(g, rotatedBy: outProjRotation, par, observer: observer, site: .outProjInput, layer: layer), multipliers.output)
        }
    }
}

/// Falcon-H1's μP scalars of a Mamba-2 mixer (transformers models/falcon_h1/modeling_falcon_h1.py:
/// FalconH1Mixer's ssm_in_multiplier and mup_vector, FalconH1DecoderLayer's ssm_out_multiplier).
public struct Mamba2Multipliers: Sendable, Equatable, CustomStringConvertible {
    public var input: Float = 1
    /// in_proj's output parts [z, x, B, C, dt] (compute_mup_vector's order).
    public var parts: [Float] = [1, 1, 1, 1, 1]
    public var output: Float = 1

    public init(input: Float = 1, parts: [Float] = [1, 1, 1, 1, 1], output: Float = 1) {
        precondition(parts.count == 5)
        (self.input, self.parts, self.output) = (input, parts, output)
    }

    public var description: String { "multipliers in \(input), z/x/B/C/dt \(parts.map { "\($0)" }.joined(separator: "/")), out \(output)" }
}

/// RMSNorm over each group of `cols / groups` channels, times a per-channel weight, in float32
/// (transformers MambaRMSNormGated with group_size E / n_groups; the gate is applied before it).
public struct GroupRMSNorm: Sendable {
    public let weight: Tensor      // [E]
    public let groups: Int
    public let eps: Float

    public init(weight: Tensor, groups: Int, eps: Float) {
        (self.weight, self.groups, self.eps) = (weight, groups, eps)
    }

    public func forward(_ x: Tensor) -> Tensor { rmsNorm(x, weight: weight, eps: eps, groups: groups) }
}

/// Mamba-2's state space recurrence with its dt discretization: dt = clamp(softplus(dt_raw +
/// dt_bias), time_step_limit), a scalar decay exp(dt * A) per head, B and C shared by the heads of
/// a group, the D skip per head. The state is [H, P, N] as transformers' cache holds it.
public struct SSDScan: Sendable {
    public let a: [Float]          // [H] = -exp(A_log)
    public let dSkip: [Float]      // [H]
    public let dtBias: [Float]     // [H]
    public let headDim: Int
    public let groups: Int
    public let stateSize: Int
    public let timeStepMin: Float
    public let timeStepMax: Float

    public init(aLog: Tensor, dSkip: Tensor, dtBias: Tensor, headDim: Int, groups: Int, stateSize: Int,
                timeStepMin: Float = 0, timeStepMax: Float = .infinity) {
        a = aLog.storage.map { -Foundation.exp($0) }
        (self.dSkip, self.dtBias) = (dSkip.storage, dtBias.storage)
        (self.headDim, self.groups, self.stateSize) = (headDim, groups, stateSize)
        (self.timeStepMin, self.timeStepMax) = (timeStepMin, timeStepMax)
    }

    public var heads: Int { a.count }

    /// Which form of the scan runs: the recurrence, the chunked form, or (auto) the chunked one from
    /// `chunkTokens` tokens on.
    public enum Form: Sendable { case auto, recurrent, chunked }

    /// dt [L, H] = clamp(softplus(dt_raw + dt_bias), min, max).
    func discretize(_ dtRaw: Tensor) -> [Float] {
        let h = heads
        var v = dtRaw.storage
        for i in v.indices { v[i] += dtBias[i % h] }
        var dt = [Float](repeating: 0, count: v.count)
        v.withUnsafeBufferPointer { src in dt.withUnsafeMutableBufferPointer { mq_softplus_f32(src.baseAddress!, $0.baseAddress!, src.count) } }
        for i in dt.indices { dt[i] = min(max(dt[i], timeStepMin), timeStepMax) }
        return dt
    }

    /// x [L, E]; dtRaw [L, H] (before dt_bias and softplus); b, c [L, G N]; s [H, P, N] updated.
    /// Returns y [L, E]. Heads are independent, so they are split between threads.
    public func forward(x: Tensor, dtRaw: Tensor, b: Tensor, c: Tensor, s: inout [Float], _ parallelism: Parallelism, form: Form = .auto) -> Tensor {
        let (h, p, gn) = (heads, headDim, groups * stateSize)
        precondition(x.cols == h * p && b.cols == gn && c.cols == gn && b.rows == x.rows && c.rows == x.rows)
        return x.storage.withUnsafeBufferPointer { xp in
            b.storage.withUnsafeBufferPointer { bp in
                c.storage.withUnsafeBufferPointer { cp in
                    forward(Inputs(length: x.rows, x: xp.baseAddress!, ldx: x.cols, b: bp.baseAddress!, ldb: gn, c: cp.baseAddress!, ldc: gn),
                            dtRaw: dtRaw, s: &s, parallelism, form: form)
                }
            }
        }
    }

    /// The same on Mamba-2's conv output xBC [L, E + 2 G N] (x, then B, then C), read in place.
    public func forward(xBC: Tensor, dtRaw: Tensor, s: inout [Float], _ parallelism: Parallelism, form: Form = .auto) -> Tensor {
        let (e, gn) = (heads * headDim, groups * stateSize)
        precondition(xBC.cols == e + 2 * gn, "xBC has \(xBC.cols) columns, not E + 2 G N = \(e + 2 * gn)")
        return xBC.storage.withUnsafeBufferPointer { p in
            let base = p.baseAddress!
            return forward(Inputs(length: xBC.rows, x: base, ldx: xBC.cols, b: base + e, ldb: xBC.cols, c: base + e + gn, ldc: xBC.cols),
                           dtRaw: dtRaw, s: &s, parallelism, form: form)
        }
    }

    /// The scan's x [L, E], B and C [L, G N]: where each starts and its row stride (separate tensors,
    /// or column blocks of the conv's output).
    struct Inputs {
        let length: Int
        let x: UnsafePointer<Float>, ldx: Int
        let b: UnsafePointer<Float>, ldb: Int
        let c: UnsafePointer<Float>, ldc: Int
    }

    func forward(_ inputs: Inputs, dtRaw: Tensor, s: inout [Float], _ parallelism: Parallelism, form: Form) -> Tensor {
        let (l, h, p, n) = (inputs.length, heads, headDim, stateSize)
        precondition(dtRaw.rows == l && dtRaw.cols == h && s.count == h * p * n)
        let dt = discretize(dtRaw)
        // A prefill runs the chunked form (ChunkedSSD.swift: matrix products); decode and short
        // prompts the recurrence.
        if form == .chunked || (form == .auto && l >= Self.chunkTokens) { return chunkedForward(inputs, dt: dt, s: &s, parallelism) }
        var y = Tensor(zeros: [l, h * p])
        dt.withUnsafeBufferPointer { dp in
        a.withUnsafeBufferPointer { ap in
        dSkip.withUnsafeBufferPointer { sp in
        s.withUnsafeMutableBufferPointer { hp in
        y.storage.withUnsafeMutableBufferPointer { yp in
            let args = mq_ssd_args(
                length: Int32(l), heads: Int32(h), head_dim: Int32(p), state: Int32(n), groups: Int32(groups),
                head_begin: 0, head_end: Int32(h), x: inputs.x, ldx: Int32(inputs.ldx), dt: dp.baseAddress, B: inputs.b, C: inputs.c,
                ldb: Int32(inputs.ldb), ldc: Int32(inputs.ldc), A: ap.baseAddress, D: sp.baseAddress, s: hp.baseAddress, y: yp.baseAddress)
            // A decode step of a small model is not worth a thread hand-off.
            parallelism.forEachChunk(h, minimumChunk: l * p * n >= 4096 ? 1 : h) { range in
                var part = args
                part.head_begin = Int32(range.lowerBound)
                part.head_end = Int32(range.upperBound)
                mq_ssd_scan_f32(&part)
            }
        }}}}}
        return y
    }

    /// The plain recurrence in Double, line for line with mamba2_selective_state_update
    /// (transformers) plus the clamp: the reference the kernel is tested against.
    public func reference(x: Tensor, dtRaw: Tensor, b: Tensor, c: Tensor, s: inout [Float]) -> Tensor {
        let (l, h, p, n, gn) = (x.rows, heads, headDim, stateSize, groups * stateSize)
        let perGroup = h / groups
        var y = Tensor(zeros: [l, h * p])
        for t in 0..<l {
            for head in 0..<h {
                let raw = Double(dtRaw.storage[t * h + head]) + Double(dtBias[head])
                let dt = min(max(raw > 20 ? raw : Foundation.log1p(Foundation.exp(raw)), Double(timeStepMin)), Double(timeStepMax))
                let decay = Foundation.exp(dt * Double(a[head]))
                let g = head / perGroup
                for q in 0..<p {
                    let ch = head * p + q
                    let xv = Double(x.storage[t * h * p + ch])
                    var acc = 0.0
                    for k in 0..<n {
                        let next = decay * Double(s[ch * n + k]) + dt * Double(b.storage[t * gn + g * n + k]) * xv
                        s[ch * n + k] = Float(next)
                        acc += next * Double(c.storage[t * gn + g * n + k])
                    }
                    y.storage[t * h * p + ch] = Float(acc + Double(dSkip[head]) * xv)
                }
            }
        }
        return y
    }
}
