import MambaTensors

/// An activation site of the forward (docs/DESIGN.md section 2). Calibration keys its statistics on
/// (layer, site) and quantization places its scales here. A site is a name that a mixer
/// description declares (`MixerDescription.sites`); the Mamba mixers' sites and the two outside
/// the blocks are named below, and a new layer kind declares its own (Site("down_proj_input")).
public struct Site: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String

    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ name: String) { self.rawValue = name }

    public var description: String { rawValue }

    /// Whether `name` can name a site: letters, digits and underscores (a stats file's tensor
    /// names are `layers.N.SITE.*`).
    public static func isValidName(_ name: some StringProtocol) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name.unicodeScalars.allSatisfy { $0.isASCII && ($0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0)) }
    }

    // Outside the mixers: every layer kind has these.

    /// Block input normalized as u / rms(u), without the norm weight (the KLT R1 site).
    public static let residual = Site("residual")
    /// norm_f output: lm_head's input (not per layer).
    public static let lmHeadInput = Site("lm_head_input")

    // The Mamba mixers' sites (Mamba1Mixer, Mamba2Mixer).

    /// RMSNorm output: in_proj's input.
    public static let inProjInput = Site("in_proj_input")
    /// The conv input: in_proj's x rows (Mamba-1 [L, E]; Mamba-2's x, B, C rows [L, X]).
    public static let x = Site("x")
    /// in_proj output, z half: the gate.
    public static let z = Site("z")
    /// SiLU(conv(x) + bias), the scan's x: x_proj's input on Mamba-1; on Mamba-2 the x part only.
    public static let convOutput = Site("conv_output")
    /// x_proj's dt rows: dt_proj's input (the R5 site).
    public static let dtLow = Site("dt_low")
    /// The scan's B and C: x_proj's rows on Mamba-1, the conv output's B and C parts on Mamba-2.
    public static let B = Site("B"), C = Site("C")
    /// dt before softplus (softplus runs inside the scan): dt_proj's output on Mamba-1 [L, E];
    /// in_proj's dt rows before dt_bias on Mamba-2 [L, H].
    public static let dt = Site("dt")
    /// Scan output before gating.
    public static let y = Site("y")
    /// y * SiLU(z) (Mamba-2: its gated group RMSNorm), after the online rotation where there is
    /// one: out_proj's input, where the outliers are.
    public static let outProjInput = Site("out_proj_input")

    /// The order statistics are written in within a layer (the stats file's tensor order): these
    /// first, as they always were, then any other kind's sites by name.
    static let writeOrder: [Site] = [.residual, .inProjInput, .x, .z, .convOutput, .dtLow, .B, .C, .dt, .y, .outProjInput, .lmHeadInput]

    /// The stats-file order of two sites of one layer.
    public static func precedes(_ a: Site, _ b: Site) -> Bool {
        let (ia, ib) = (writeOrder.firstIndex(of: a) ?? writeOrder.count, writeOrder.firstIndex(of: b) ?? writeOrder.count)
        return ia != ib ? ia < ib : a.rawValue < b.rawValue
    }
}

/// Sees activations as the forward produces them (calibration's observers, SQNR probes).
/// `layer` is nil for sites outside the blocks.
public protocol ActivationObserver: AnyObject {
    func observe(_ activation: Tensor, site: Site, layer: Int?)
}
