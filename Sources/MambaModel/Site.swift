import MambaTensors

/// An activation site of the forward (docs/DESIGN.md section 2). Calibration keys its statistics on
/// (layer, site) and quantization places its scales here: the one list of where tensors flow.
public enum Site: String, CaseIterable, Sendable, Codable {
    /// Block input normalized as u / rms(u), without the norm weight (the KLT R1 site).
    case residual
    /// RMSNorm output: in_proj's input.
    case inProjInput = "in_proj_input"
    /// The conv input: in_proj's x rows (Mamba-1 [L, E]; Mamba-2's x, B, C rows [L, X]).
    case x
    /// in_proj output, z half: the gate.
    case z
    /// SiLU(conv(x) + bias), the scan's x: x_proj's input on Mamba-1; on Mamba-2 the x part only.
    case convOutput = "conv_output"
    /// x_proj's dt rows: dt_proj's input (the R5 site).
    case dtLow = "dt_low"
    /// The scan's B and C: x_proj's rows on Mamba-1, the conv output's B and C parts on Mamba-2.
    case B, C
    /// dt before softplus (softplus runs inside the scan): dt_proj's output on Mamba-1 [L, E];
    /// in_proj's dt rows before dt_bias on Mamba-2 [L, H].
    case dt
    /// Scan output before gating.
    case y
    /// y * SiLU(z) (Mamba-2: its gated group RMSNorm), after the online rotation where there is
    /// one: out_proj's input, where the outliers are.
    case outProjInput = "out_proj_input"
    /// norm_f output: lm_head's input (not per layer).
    case lmHeadInput = "lm_head_input"
}

/// Sees activations as the forward produces them (calibration's observers, SQNR probes).
/// `layer` is nil for sites outside the blocks.
public protocol ActivationObserver: AnyObject {
    func observe(_ activation: Tensor, site: Site, layer: Int?)
}
