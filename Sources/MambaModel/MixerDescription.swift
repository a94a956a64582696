import MambaTensors

// One description per mixer type (docs: README "How it works"): its tensors, its linear modules
// and where their inputs are quantized, the scan inputs it quantizes, which module rows produce
// which site, and how its forward is built from leaf ops. Loading, the transforms' Double view,
// the quantized checkpoint's names, keep-float validation, weight bytes and the float/int8 op
// construction all read it, so adding a layer type means one description and its ops. The layout
// follows mlx-swift-lm's one-declaration-per-field module keys (a tensor is named once, here).

/// What a mixer tensor is, for the loader, the transforms and the quantizer.
public enum ParameterRole: Sendable, Equatable {
    /// A module's weight: [out, in] for a linear, [C, 1, K] on disk ([C, K] in memory) for a
    /// depthwise conv. Quantized per output channel unless kept float.
    case weight(module: String)
    /// A module's bias: kept float, stored beside the module.
    case bias(module: String)
    /// Any other float tensor (A_log, D, ...): never quantized.
    case vector
}

/// One tensor of a mixer, named once: its key under `backbone.layers.N.mixer.`, its role and its
/// shape on disk for a config (nil when the config leaves it out).
public struct ParameterSpec: Sendable {
    public let key: String
    public let role: ParameterRole
    public let diskShape: @Sendable (MambaConfig) -> [Int]?
    /// Where a float checkpoint of the family keeps the tensor when not under `key` (nil: there).
    public let file: FileSource?

    public init(_ key: String, _ role: ParameterRole, file: FileSource? = nil, _ diskShape: @escaping @Sendable (MambaConfig) -> [Int]?) {
        self.key = key
        self.role = role
        self.file = file
        self.diskShape = diskShape
    }

    /// The shape the forward uses: a depthwise conv's [C, 1, K] becomes [C, K].
    public func shape(_ c: MambaConfig, kind: ModuleKind?) -> [Int]? {
        guard let s = diskShape(c) else { return nil }
        return kind == .depthwiseConv ? [s[0], s[2]] : s
    }
}

/// A tensor's place in a float checkpoint, under the layer's mixer prefix: another key, and the
/// entry of that tensor's first dimension when the family stacks a module's copies in one tensor
/// (Granite's experts: block_sparse_moe.input_linear.weight is [E, 2I, D], expert e's module
/// the tool names experts.e.input_linear is its entry e).
public struct FileSource: Sendable, Equatable {
    public let key: String
    /// (entry, entries): the file's tensor is [entries] + the parameter's disk shape.
    public let stacked: (index: Int, count: Int)?

    public init(_ key: String, stacked: (index: Int, count: Int)? = nil) {
        self.key = key
        self.stacked = stacked
    }

    public static func == (a: FileSource, b: FileSource) -> Bool {
        a.key == b.key && a.stacked?.index == b.stacked?.index && a.stacked?.count == b.stacked?.count
    }
}

public enum ModuleKind: Sendable, Equatable {
    /// y = x W^T (+ b).
    case linear
    /// Causal depthwise conv over time, one K-tap filter per channel (+ b).
    case depthwiseConv
}

/// A quantizable module: a linear or a depthwise conv whose input is quantized at `input`.
public struct ModuleSpec: Sendable {
    public let name: String
    public let kind: ModuleKind
    /// The activation site whose scale quantizes the module's input.
    public let input: Site
    /// Whether group-wise weight scales (`--group-size`) apply; a conv's K taps are too few.
    public let allowsGroups: Bool

    public init(_ name: String, _ kind: ModuleKind, input: Site, allowsGroups: Bool = true) {
        self.name = name
        self.kind = kind
        self.input = input
        self.allowsGroups = allowsGroups
    }
}

/// Rows `rows` of module `module`'s output are the activation at one site (e.g. in_proj's first
/// E rows are x): what the transforms address instead of hard-coded row ranges.
public struct OutputSlice: Sendable, Equatable {
    public let module: String
    public let rows: Range<Int>

    public init(module: String, rows: Range<Int>) {
        self.module = module
        self.rows = rows
    }
}

/// A mixer type. Implementations are value types with no state beyond their options.
public protocol MixerDescription: Sendable {
    /// Short name for messages and `inspect` ("mamba1").
    var name: String { get }
    /// Every tensor of the mixer in checkpoint order.
    var parameters: [ParameterSpec] { get }
    /// Quantizable modules in checkpoint order.
    var modules: [ModuleSpec] { get }
    /// The activation sites the forward reports to an observer, in the order it reports them
    /// (calibration keys statistics on them; `.residual` and `.lmHeadInput` belong to the model
    /// around the mixers and are not listed).
    var sites: [Site] { get }
    /// Activation sites quantized before the scan (not module inputs): the site and the scalar
    /// tensor name of its static scale in a quantized checkpoint.
    var scanInputs: [(site: Site, scaleKey: String)] { get }
    /// The module rows that produce `site` (nil: no module output is that site).
    func producer(of site: Site, _ c: MambaConfig) -> OutputSlice?
    /// The modules reading the block's normalized input (the residual stream: R1's left side, where
    /// the block's norm folds) and the modules writing the block's output (R1's right side).
    var residualReaders: [String] { get }
    var residualWriters: [String] { get }
    /// The modules whose input takes an online Hadamard (R2) under the rotation methods (default:
    /// the module reading .outProjInput).
    var onlineRotated: [String] { get }
    /// The low-rank sites between two linears that R5 rotates (and SmoothQuant smooths) where the
    /// mixer has them (default: Mamba-1's dt path; Vim's two branches have one each).
    var bottlenecks: [Site] { get }
    /// Whether a weightless RMSNorm sits between `site`'s producing rows and its consumer:
    /// orthogonal rotations cross it exactly, per-channel smoothing does not.
    func isNormalized(_ site: Site) -> Bool
    /// The per-channel vector tensor (a norm's weight) that multiplies `site` last before its
    /// consumer reads it: a per-channel smoothing of the site folds into it (nil: none).
    func scaleVector(of site: Site) -> String?
    /// The number of contiguous channel groups a scan input may have its own static scales for
    /// (Mamba-2: heads for x and dt, groups for B and C; nil: one scale per tensor only).
    func scanScaleGroups(_ site: Site, _ c: MambaConfig) -> Int?
    /// The forward, built from leaf ops that `ops` provides (float, transformed or quantized).
    func makeMixer(_ ops: any MixerOpSource, _ c: MambaConfig, layer: Int) -> any MixerOp
    /// Random tensors with a trained model's value ranges (benchmarks and tests), keyed as
    /// `parameters`, in the memory shapes; `next` hands out seeds.
    func randomTensors(_ c: MambaConfig, next: () -> UInt64) -> [String: Tensor]
    /// config.json's model_type and architecture for checkpoints written here, and the mixer's
    /// own config keys beside the common ones (MambaConfig.hfJSON).
    var modelType: String { get }
    var architecture: String { get }
    func configJSON(_ c: MambaConfig) -> [String: JSONValue]
    /// The mixer's own settings in a few words, for `inspect` ("R 48").
    func settings(_ c: MambaConfig) -> String
}

extension MixerDescription {
    public func isNormalized(_ site: Site) -> Bool { false }
    public func scaleVector(of site: Site) -> String? { nil }
    public func scanScaleGroups(_ site: Site, _ c: MambaConfig) -> Int? { nil }
    public func module(_ name: String) -> ModuleSpec? { modules.first { $0.name == name } }
    public var onlineRotated: [String] { consumer(of: .outProjInput).map { [$0.name] } ?? [] }
    public var bottlenecks: [Site] { [.dtLow] }

    /// The sites the linear modules read (GPTQ's Hessians are gathered there).
    public var linearInputs: Set<Site> { Set(modules.filter { $0.kind == .linear }.map(\.input)) }
    /// The module whose input is `site` (the consumer a transform scales or rotates).
    public func consumer(of site: Site) -> ModuleSpec? { modules.first { $0.input == site } }
    /// The width of `site`'s activation where the description fixes it: the rows that produce it,
    /// or the input features of the module that reads it (nil: neither, e.g. the scan output).
    public func channels(of site: Site, _ c: MambaConfig) -> Int? {
        if site == .residual { return c.hiddenSize }
        if let slice = producer(of: site, c) { return slice.rows.count }
        guard let m = consumer(of: site) else { return nil }
        let shape = presentParameters(c).first { $0.spec.key == m.name + ".weight" }?.shape
        return m.kind == .linear ? shape?[1] : shape?[0]
    }

    /// Tensors present for this config, with their memory shapes.
    public func presentParameters(_ c: MambaConfig) -> [(spec: ParameterSpec, shape: [Int])] {
        parameters.compactMap { p in
            let kind: ModuleKind? = if case .weight(let m) = p.role { module(m)?.kind } else { nil }
            return p.shape(c, kind: kind).map { (p, $0) }
        }
    }
}

/// Which mixer a layer runs. Equality is by name and options (a description is a value).
public struct MixerKind: Sendable, Equatable {
    public let spec: any MixerDescription

    public init(_ spec: any MixerDescription) { self.spec = spec }

    public static func == (a: MixerKind, b: MixerKind) -> Bool { String(describing: a.spec) == String(describing: b.spec) }

    public static let mamba1 = MixerKind(Mamba1Mixer())
    /// Falcon-Mamba: Mamba-1 with weightless RMSNorms on dt_low, B and C.
    public static func falconMamba(ssmNormEpsilon: Float) -> MixerKind { MixerKind(Mamba1Mixer(ssmNormEpsilon: ssmNormEpsilon)) }
}

extension MambaConfig {
    /// Short names of the quantizable modules of every layer kind, in order of first appearance.
    public var moduleNames: [String] { orderedUnion(distinctKinds.map { $0.spec.modules.map(\.name) }) }

    /// The same with every expert's modules under one name ("experts.*.down_proj").
    public var moduleGroups: [String] { orderedUnion([moduleNames.map(MoEMixer.group)]) }

    /// The scan-input sites of every layer kind, in order of first appearance.
    public var scanInputSites: [Site] { orderedUnion(distinctKinds.map { $0.spec.scanInputs.map(\.site) }) }
}

/// The elements of `lists` in order, each once.
func orderedUnion<T: Hashable>(_ lists: [[T]]) -> [T] {
    var seen = Set<T>()
    return lists.joined().filter { seen.insert($0).inserted }
}

/// The block-level checkpoint names (outside the mixer).
public enum BlockNames {
    public static func mixerPrefix(layer: Int) -> String { "backbone.layers.\(layer).mixer." }
    public static func norm(layer: Int) -> String { "backbone.layers.\(layer).norm.weight" }

    /// A module's full name ("backbone.layers.3.mixer.in_proj") as its layer and its name inside
    /// the mixer (nil for any other name).
    public static func split(module name: String) -> (layer: Int, module: String)? {
        let parts = name.split(separator: ".", maxSplits: 4, omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "backbone", parts[1] == "layers", parts[3] == "mixer", let i = Int(parts[2]), i >= 0 else { return nil }
        return (i, String(parts[4]))
    }
}

/// Leaf ops by module or tensor name: the float checkpoint, the transformed Double parameters and
/// the quantized model each provide them, and a description builds the same forward from any.
/// Every name a description asks for was checked when its tensors were loaded or made, so a
/// missing one is a bug in the description, not bad input.
public protocol MixerOpSource {
    func linear(_ module: String) -> any LinearOp
    func conv(_ module: String) -> any ConvOp
    /// A float tensor of the mixer (role .vector), in its memory shape.
    func tensor(_ key: String) -> Tensor
    /// What happens to the scan inputs (identity in float, quantization in a quantized model).
    func scanInput() -> any ScanInputOp
    /// SiLU gating, or S-SiLU where the transforms smoothed the gate's output.
    func gate() -> any GateOp
    /// The online rotation applied to `module`'s input at run time (nil: none).
    func onlineRotation(before module: String) -> OnlineHadamard?
}

/// A mixer's forward with its own decode state.
public protocol MixerOp: Sendable {
    /// What the mixer carries from one decode step to the next.
    associatedtype State: LayerState
    /// A fresh (all zero) decode state for this mixer.
    func makeState() -> State
    /// u: normalized block input [L, D] -> mixer output [L, D].
    func forward(_ u: Tensor, state: inout State, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor
}

extension MixerOp {
    /// `forward` on a type-erased state (a model holds one state per layer, of each layer's own
    /// type). The state is moved out and back so that its buffers stay uniquely referenced and
    /// update in place.
    public func forward(_ u: Tensor, layerState: inout any LayerState, layer: Int, _ par: Parallelism, observer: (any ActivationObserver)?) -> Tensor {
        guard var s = layerState as? State else {
            preconditionFailure("layer \(layer) was handed a \(type(of: layerState)) state; its mixer keeps \(State.self)")
        }
        layerState = StatelessState()
        defer { layerState = s }
        return forward(u, state: &s, layer: layer, par, observer: observer)
    }
}

/// One layer's decode state: each mixer type has its own (Mamba's conv window and SSM state; an
/// attention layer's KV cache; none for an MLP).
public protocol LayerState: Sendable {
    /// Equality across the type-erased states of a model (MambaState's ==).
    func isEqual(to other: any LayerState) -> Bool
}

extension LayerState where Self: Equatable {
    public func isEqual(to other: any LayerState) -> Bool { (other as? Self) == self }
}

/// The state of a recurrent mixer (Mamba-1, Mamba-2): the last K-1 conv inputs and the SSM state.
public struct RecurrentState: LayerState, Equatable {
    public var conv: [Float]               // [K-1, channels]
    public var ssm: [Float]                // the recurrence's state

    public init(conv: [Float], ssm: [Float]) {
        self.conv = conv
        self.ssm = ssm
    }
}

/// The state of a mixer that carries nothing between tokens (an MLP).
public struct StatelessState: LayerState, Equatable {
    public init() {}
}
