import MambaModel
import MambaTensors

/// A Mamba model's parameters in Double, as the transforms change them: folded norms (nil),
/// rotated weights, the S-SiLU smoothing of the gate and the online rotation of out_proj's input.
public struct MixerParameters: Sendable {
    public var inProj: Matrix             // [2E, D]: rows 0..<E make x, E..<2E make z
    public var inProjBias: [Double]?
    public var conv: Matrix               // [E, K]
    public var convBias: [Double]?
    public var xProj: Matrix              // [R + 2N, E]: dt rows, then B, then C
    public var dtProj: Matrix             // [E, R]
    public var dtProjBias: [Double]
    public var aLog: Tensor
    public var dSkip: Tensor
    public var outProj: Matrix            // [D, E]
    public var outProjBias: [Double]?
    /// S-SiLU's per-channel s (nil: plain SiLU).
    public var gateSmoothing: [Double]?
    /// The online rotation of out_proj's input (nil: none).
    public var outProjRotation: RandomizedHadamard?
}

public struct BlockParameters: Sendable {
    /// RMSNorm weight; nil once folded into in_proj (then all ones).
    public var norm: [Double]?
    public var mixer: MixerParameters
}

public struct ModelParameters: Sendable {
    public var config: MambaConfig
    public var embedding: Matrix          // [V, D]
    public var blocks: [BlockParameters]
    public var normF: [Double]?           // nil once folded into lm_head
    /// nil while tied to the embedding.
    public var lmHead: Matrix?

    public init(weights w: MambaWeights) {
        config = w.config
        embedding = Matrix(w.embedding)
        blocks = w.layers.map { l in
            let m = l.mixer
            return BlockParameters(norm: l.norm.storage.map(Double.init), mixer: MixerParameters(
                inProj: Matrix(m.inProj), inProjBias: m.inProjBias.map { $0.storage.map(Double.init) },
                conv: Matrix(m.convWeight), convBias: m.convBias.map { $0.storage.map(Double.init) },
                xProj: Matrix(m.xProj), dtProj: Matrix(m.dtProj), dtProjBias: m.dtProjBias.storage.map(Double.init),
                aLog: m.aLog, dSkip: m.dSkip,
                outProj: Matrix(m.outProj), outProjBias: m.outProjBias.map { $0.storage.map(Double.init) },
                gateSmoothing: nil, outProjRotation: nil))
        }
        normF = w.normF.storage.map(Double.init)
        lmHead = w.lmHead.map(Matrix.init)
    }

    public var hiddenSize: Int { config.hiddenSize }
    public var innerSize: Int { config.innerSize }
    public var timeStepRank: Int { config.timeStepRank }

    /// The float model these parameters define (ops: S-SiLU where smoothed, the online rotation
    /// where rotated). Its logits equal the original model's up to float rounding.
    public func floatModel() -> MambaLM {
        MambaLM(config: config, embedding: FloatEmbedding(table: embedding.tensor), blocks: blocks.map { b in
            let m = b.mixer
            return MambaBlock(norm: b.norm.map(floatVector), mixer: MambaMixer(
                inProj: FloatLinear(weight: m.inProj.tensor, bias: m.inProjBias.map(floatVector)),
                conv: FloatConv(weight: m.conv.tensor, bias: m.convBias.map(floatVector)),
                xProj: FloatLinear(weight: m.xProj.tensor),
                dtProj: FloatLinear(weight: m.dtProj.tensor, bias: floatVector(m.dtProjBias)),
                scanInput: IdentityScanInput(),
                scan: SelectiveScan(aLog: m.aLog, dSkip: m.dSkip),
                gate: m.gateSmoothing.map { SmoothSiLUGate(s: $0.map(Float.init)) } ?? SiLUGate(),
                outProjRotation: m.outProjRotation.map { OnlineHadamard(signs: $0.signs.map(Float.init), hadamard: $0.hadamard) },
                outProj: FloatLinear(weight: m.outProj.tensor, bias: m.outProjBias.map(floatVector))))
        }, normF: normF.map(floatVector), lmHead: FloatLinear(weight: (lmHead ?? embedding).tensor))
    }
}

func floatVector(_ v: [Double]) -> Tensor { Tensor(shape: [v.count], storage: v.map(Float.init)) }
