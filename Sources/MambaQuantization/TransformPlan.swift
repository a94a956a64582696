import MambaCalibration
import MambaModel
import MambaTensors
import MambaTransforms

/// One transform applied, for the quantize report.
public struct AppliedTransform: Sendable, Codable, Equatable {
    public let step: String
    public let layer: Int?
    public let detail: String
}

/// The transforms each method applies (DESIGN.md section 2's table), in order, on the float
/// parameters. Every decision reads statistics that the transforms before it leave unchanged
/// (norm folding and R1 do not change x, z, dtLow or g; smoothing factors use the current weights),
/// so the original stats serve; the scales of the final model come from a second calibration pass.
public func applyPlan(_ method: QuantizationMethod, to p: inout ModelParameters, stats: CalibrationStats, seed: UInt64, alpha: Double) throws -> [AppliedTransform] {
    var log: [AppliedTransform] = []
    p.foldNorms()
    log.append(.init(step: "fold_norms", layer: nil, detail: "block norms into in_proj, norm_f into an untied lm_head"))
    let layers = p.blocks.indices
    switch method {
    case .rtn:
        break
    case .smoothquant:
        for i in layers {
            let reader = p.blocks[i].mixer.spec.residualReader
            let sIn = smoothingFactors(activationAbsMax: try stats.site(i, .residual).range.absmax,
                                       weightColumnAbsMax: p.blocks[i].mixer.weight(reader).columnAbsMax, alpha: alpha)
            p.smoothInProjInput(layer: i, sIn)
            var steps = ["\(reader) input (norm)"]
            if p.canSmooth(site: .x, layer: i) {
                try smoothConv(&p, i, stats)
                steps.append("conv input (alpha 1)")
            }
            if p.canSmooth(site: .dtLow, layer: i) {
                let sDt = smoothingFactors(activationAbsMax: try stats.site(i, .dtLow).range.absmax,
                                           weightColumnAbsMax: p.consumerColumnAbsMax(.dtLow, layer: i), alpha: alpha)
                p.smoothDtPath(layer: i, sDt)
                steps.append("dt path")
            }
            if p.hasSmoothableGate(layer: i) {
                try smoothOut(&p, i, stats, alpha)
                steps.append("out_proj input (S-SiLU)")
            }
            log.append(.init(step: "smooth", layer: i, detail: steps.joined(separator: ", ") + ", alpha \(alpha)"))
        }
    case .hadamard, .mambaquant:
        let klt = method == .mambaquant
        let d = p.hiddenSize
        let pooled = stats.pooledResidual
        guard pooled.channels == d else {
            throw MambaError(.mismatchedInputs, "the stats' residual moments have \(pooled.channels) channels, the model \(d)")
        }
        let (r1, kind1) = try offlineRotation(n: d, secondMoment: klt ? pooled.secondMoment : nil, seed: seed)
        p.rotateResidual(r1)
        log.append(.init(step: "R1", layer: nil, detail: "\(kind1.rawValue) \(d)x\(d) on the residual stream"))
        for i in layers {
            var steps: [String] = []
            if p.hasPath(through: .dtLow, layer: i) {
                let rank = p.blocks[i].mixer.spec.producer(of: .dtLow, p.config)!.rows.count
                var sigma: [Double]? = nil
                if klt {
                    guard let m = try stats.site(i, .dtLow).moments else {
                        throw MambaError(.missingTensor, "the statistics lack layers.\(i).dt_low.sumsq_matrix, which the KLT of R5 needs")
                    }
                    sigma = m.secondMoment
                }
                let (r5, kind5) = try offlineRotation(n: rank, secondMoment: sigma, seed: seed &+ 1000 &+ UInt64(i))
                p.rotateDtPath(layer: i, r5)
                steps.append("R5 \(kind5.rawValue) \(rank)x\(rank)")
            }
            if klt && p.canSmooth(site: .x, layer: i) {
                try smoothConv(&p, i, stats)
                steps.append("conv input smoothing (alpha 1)")
            }
            if klt && p.hasSmoothableGate(layer: i) {
                try smoothOut(&p, i, stats, alpha)
                steps.append("S-SiLU smoothing of out_proj input (alpha \(alpha))")
            }
            if let n = p.blocks[i].mixer.spec.consumer(of: .outProjInput).map({ p.blocks[i].mixer.weight($0.name).cols }) {
                if let h = RandomizedHadamard(size: n, seed: seed &+ 2000 &+ UInt64(i)) {
                    p.rotateOutProjInput(layer: i, h)
                    steps.append("R2 online Hadamard \(n) (\(h.hadamard.factorSize) x \(h.hadamard.powerOfTwo))")
                } else {
                    steps.append("no online Hadamard of size \(n): R2 skipped")
                }
            }
            log.append(.init(step: "rotate", layer: i, detail: steps.joined(separator: "; ")))
        }
    }
    return log
}

/// The conv input (in_proj's x half): both sides per channel, so alpha 1 costs the weights nothing.
private func smoothConv(_ p: inout ModelParameters, _ i: Int, _ stats: CalibrationStats) throws {
    let x = try stats.site(i, .x).range.absmax
    p.smoothConvInput(layer: i, smoothingFactors(activationAbsMax: x, weightColumnAbsMax: [Double](repeating: 1, count: x.count), alpha: 1))
}

/// out_proj's input through S-SiLU, against out_proj's current column ranges.
private func smoothOut(_ p: inout ModelParameters, _ i: Int, _ stats: CalibrationStats, _ alpha: Double) throws {
    let g = try stats.site(i, .outProjInput).range.absmax
    p.smoothOutProjInput(layer: i, smoothingFactors(activationAbsMax: g, weightColumnAbsMax: p.consumerColumnAbsMax(.outProjInput, layer: i), alpha: alpha))
}
