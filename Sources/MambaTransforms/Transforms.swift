import Foundation
import MambaModel
import MambaTensors

// The function-preserving transforms of MambaQuant (arXiv 2501.13484, DESIGN.md section 2), each a
// small function named after its site. Weights are [out, in] and a layer computes x W^T, so a
// rotation R of a layer's input (x -> x R) is absorbed as W -> W R, and a rotation of its output
// as W -> R^T W. Each leaves the float model's logits unchanged (tests).

extension ModelParameters {
    /// Norm folding: each block's RMSNorm weight into in_proj's input columns, norm_f's into
    /// lm_head (untied from the embedding first). RMSNorm with weight 1 commutes with any
    /// orthogonal rotation, which is what makes R1 exact.
    public mutating func foldNorms() {
        for i in blocks.indices {
            if let w = blocks[i].norm { blocks[i].mixer.inProj.scaleColumns(w) }
            blocks[i].norm = nil
        }
        var head = lmHead ?? embedding
        if let w = normF { head.scaleColumns(w) }
        lmHead = head
        normF = nil
    }

    /// R1 on the residual stream (offline): u -> u R everywhere. Needs folded norms.
    public mutating func rotateResidual(_ r: Matrix) {
        precondition(blocks.allSatisfy { $0.norm == nil } && normF == nil, "fold the norms before rotating the residual stream")
        precondition(r.rows == hiddenSize && r.cols == hiddenSize)
        embedding = embedding.times(r)
        for i in blocks.indices {
            blocks[i].mixer.inProj = blocks[i].mixer.inProj.times(r)
            blocks[i].mixer.outProj = r.transposedTimes(blocks[i].mixer.outProj)
            if let b = blocks[i].mixer.outProjBias { blocks[i].mixer.outProjBias = rowTimes(b, r) }
        }
        lmHead = lmHead!.times(r)
    }

    /// R5 on the dt path of one layer (offline): dtLow -> dtLow R, between x_proj's dt rows and dt_proj.
    public mutating func rotateDtPath(layer i: Int, _ r: Matrix) {
        let rank = timeStepRank
        precondition(r.rows == rank && r.cols == rank)
        var m = blocks[i].mixer
        m.xProj.setRowBlock(0..<rank, r.transposedTimes(m.xProj.rowBlock(0..<rank)))
        m.dtProj = m.dtProj.times(r)
        blocks[i].mixer = m
    }

    /// Smoothing of the conv input: x = in_proj's first E outputs divided by s, the conv's
    /// per-channel weights multiplied by s (both per channel, so exact).
    public mutating func smoothConvInput(layer i: Int, _ s: [Double]) {
        let e = innerSize
        precondition(s.count == e)
        let inv = s.map { 1 / $0 }
        blocks[i].mixer.inProj.scaleRows(inv, in: 0..<e)
        if var b = blocks[i].mixer.inProjBias { for j in 0..<e { b[j] *= inv[j] }; blocks[i].mixer.inProjBias = b }
        blocks[i].mixer.conv.scaleRows(s)
    }

    /// Smoothing of out_proj's input through S-SiLU: g / s, with z = in_proj's last E outputs
    /// divided by s and the gate becoming y * z * sigmoid(s z); out_proj's columns times s.
    public mutating func smoothOutProjInput(layer i: Int, _ s: [Double]) {
        let e = innerSize
        precondition(s.count == e)
        precondition(blocks[i].mixer.outProjRotation == nil, "smooth out_proj's input before rotating it")
        let inv = s.map { 1 / $0 }
        blocks[i].mixer.inProj.scaleRows(inv, in: e..<(2 * e))
        if var b = blocks[i].mixer.inProjBias { for j in 0..<e { b[e + j] *= inv[j] }; blocks[i].mixer.inProjBias = b }
        let old = blocks[i].mixer.gateSmoothing ?? [Double](repeating: 1, count: e)
        blocks[i].mixer.gateSmoothing = zip(old, s).map { $0 * $1 }
        blocks[i].mixer.outProj.scaleColumns(s)
    }

    /// R2, the online rotation of out_proj's input: g -> g R at run time, out_proj W -> W R.
    public mutating func rotateOutProjInput(layer i: Int, _ r: RandomizedHadamard) {
        precondition(r.hadamard.size == innerSize)
        blocks[i].mixer.outProj = blocks[i].mixer.outProj.times(Matrix(rows: innerSize, cols: innerSize, data: r.matrix))
        blocks[i].mixer.outProjRotation = r
    }

    /// SmoothQuant at in_proj's input: the RMSNorm weight divided by s, in_proj's columns times s.
    public mutating func smoothInProjInput(layer i: Int, _ s: [Double]) {
        let w = blocks[i].norm ?? [Double](repeating: 1, count: hiddenSize)
        blocks[i].norm = zip(w, s).map { $0 / $1 }
        blocks[i].mixer.inProj.scaleColumns(s)
    }

    /// SmoothQuant on the dt path: x_proj's dt rows divided by s, dt_proj's columns times s.
    public mutating func smoothDtPath(layer i: Int, _ s: [Double]) {
        let rank = timeStepRank
        precondition(s.count == rank)
        blocks[i].mixer.xProj.scaleRows(s.map { 1 / $0 }, in: 0..<rank)
        blocks[i].mixer.dtProj.scaleColumns(s)
    }
}

/// SmoothQuant's per-channel factor s_j = max|X_j|^alpha / max|W_.j|^(1 - alpha), floored at 1e-2
/// (and 1 where a channel is dead on both sides).
public func smoothingFactors(activationAbsMax x: [Float], weightColumnAbsMax w: [Double], alpha: Double, floor: Double = 1e-2) -> [Double] {
    precondition(x.count == w.count)
    return zip(x, w).map { a, b in
        let xa = Double(a), wb = b
        if xa <= 0 || wb <= 0 { return 1 }
        return max(floor, pow(xa, alpha) / pow(wb, 1 - alpha))
    }
}
