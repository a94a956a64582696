import MambaTensors

// Falcon-H1's mixer (docs/DESIGN.md section 1, "Hybrids"): a Mamba-2 mixer and an attention mixer
// read the same normalized input and their outputs are summed (each after its own μP multiplier,
// which the two descriptions carry). Upstream: transformers models/falcon_h1/modeling_falcon_h1.py
// (FalconH1DecoderLayer.forward: mamba(h) * ssm_out_multiplier + self_attn(h *
// attention_in_multiplier) * attention_out_multiplier). The two keep their own tensor and module
// names under "mamba." and "self_attn."; their sites are distinct already (in_proj_input, x, ...
// against attn_input, o_proj_input), so the transforms address either half by site as usual.

/// A Mamba-2 mixer and an attention mixer side by side.
public struct ParallelMixer: MixerDescription {
    public let mamba: Mamba2Mixer
    public let attention: AttentionMixer

    public init(mamba: Mamba2Mixer, attention: AttentionMixer) {
        precondition(Set(mamba.sites).isDisjoint(with: attention.sites))
        (self.mamba, self.attention) = (mamba, attention)
    }

    static let mambaPrefix = "mamba.", attentionPrefix = "self_attn."

    public var name: String { "mamba2|attention" }

    public var parameters: [ParameterSpec] {
        mamba.parameters.map { $0.prefixed(Self.mambaPrefix) } + attention.parameters.map { $0.prefixed(Self.attentionPrefix) }
    }

    public var modules: [ModuleSpec] {
        mamba.modules.map { $0.prefixed(Self.mambaPrefix) } + attention.modules.map { $0.prefixed(Self.attentionPrefix) }
    }

    public var sites: [Site] { mamba.sites + attention.sites }

    public var scanInputs: [(site: Site, scaleKey: String)] { mamba.scanInputs.map { ($0.site, Self.mambaPrefix + $0.scaleKey) } }

    public func producer(of site: Site, _ c: MambaConfig) -> OutputSlice? {
        mamba.producer(of: site, c).map { OutputSlice(module: Self.mambaPrefix + $0.module, rows: $0.rows) }
    }

    public var residualReaders: [String] {
        mamba.residualReaders.map { Self.mambaPrefix + $0 } + attention.residualReaders.map { Self.attentionPrefix + $0 }
    }
    public var residualWriters: [String] {
        mamba.residualWriters.map { Self.mambaPrefix + $0 } + attention.residualWriters.map { Self.attentionPrefix + $0 }
    }
    public var onlineRotated: [String] {
        mamba.onlineRotated.map { Self.mambaPrefix + $0 } + attention.onlineRotated.map { Self.attentionPrefix + $0 }
    }

    public func isNormalized(_ site: Site) -> Bool { mamba.isNormalized(site) }
    public func scaleVector(of site: Site) -> String? { mamba.scaleVector(of: site).map { Self.mambaPrefix + $0 } }
    public func scanScaleGroups(_ site: Site, _ c: MambaConfig) -> Int? { mamba.scanScaleGroups(site, c) }

    public func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp {
        ParallelForward(mamba: mamba.makeForward(PrefixedOpSource(base: ops, prefix: Self.mambaPrefix), c),
                        attention: attention.makeForward(PrefixedOpSource(base: ops, prefix: Self.attentionPrefix)))
    }

    public func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor] {
        var t: [String: Tensor] = [:]
        for (k, v) in mamba.randomTensors(c, next: next) { t[Self.mambaPrefix + k] = v }
        for (k, v) in attention.randomTensors(c, next: next) { t[Self.attentionPrefix + k] = v }
        return t
    }

    public var modelType: String { "falcon_h1" }
    public var architecture: String { "FalconH1ForCausalLM" }
    public func configJSON(_ c: MambaConfig) -> [String: JSONValue] { [:] }
    public func settings(_ c: MambaConfig) -> String { "parallel: " + mamba.settings(c) + " | " + attention.settings(c) }
}

extension ParameterSpec {
    /// The same tensor under `prefix` (a part of a composite mixer).
    func prefixed(_ prefix: String) -> ParameterSpec {
        ParameterSpec(prefix + key, role.prefixed(prefix), file: file.map { FileSource(prefix + $0.key, stacked: $0.stacked) }, diskShape)
    }
}

extension ModuleSpec {
    func prefixed(_ prefix: String) -> ModuleSpec { ModuleSpec(prefix + name, kind, input: input, allowsGroups: allowsGroups) }
}

/// A part's view of its composite mixer's ops: its names under `prefix`.
struct PrefixedOpSource: MixerOpSource {
    let base: any MixerOpSource
    let prefix: String

    func linear(_ module: String) -> any LinearOp { base.linear(prefix + module) }
    func conv(_ module: String) -> any ConvOp { base.conv(prefix + module) }
    func tensor(_ key: String) -> Tensor { base.tensor(prefix + key) }
    func scanInput() -> any ScanInputOp { base.scanInput() }
    func gate() -> any GateOp { base.gate() }
    func onlineRotation(before module: String) -> OnlineHadamard? { base.onlineRotation(before: prefix + module) }
}

/// The decode state of a parallel layer: the Mamba half's recurrent state and the attention
/// half's KV cache.
public struct ParallelState: LayerState, Equatable {
    public var mamba: RecurrentState
    public var attention: KVCache
}

public struct ParallelForward: MixerOp {
    public var mamba: Mamba2Forward
    public var attention: AttentionForward

    public func makeState() -> ParallelState { ParallelState(mamba: mamba.makeState(), attention: attention.makeState()) }

    public func forward(_ u: Tensor, state: inout ParallelState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        var out = mamba.forward(u, state: &state.mamba, layer: layer, par, observer: observer)  // [L, D]
        add(attention.forward(u, state: &state.attention, layer: layer, par, observer: observer), to: &out)
        return out
    }
}
