import MambaCalibration
import MambaModel
import MambaTensors
import MambaTransforms

/// One transform applied, for the quantize report.
public struct AppliedTransform: Sendable, Codable, Equatable {
    public let step: String
    public let layer: Int?
    public let detail: String

    public init(step: String, layer: Int?, detail: String) {
        (self.step, self.layer, self.detail) = (step, layer, detail)
    }
}

/// The transforms each method applies (docs/DESIGN.md section 2's table), in order, on the float
/// parameters. Every decision reads statistics that the transforms before it leave unchanged
/// (norm folding and R1 do not change x, z, dtLow or g; smoothing factors use the current weights),
/// so the original stats serve; the scales of the final model come from a second calibration pass.
///
/// The plan acts a layer at a time: R1 (the only decision spanning layers, from the pooled
/// residual moments) is fixed up front, then each block is folded, rotated and smoothed on its own
/// (`apply(layer:to:)`), and the head and embedding outside the blocks (`transformHead`,
/// `transformEmbedding`). Every
/// matrix goes through the same operations in the same order as when the whole model is
/// transformed at once, so both give the same bits.
public struct MethodPlan: Sendable {
    public let method: QuantizationMethod
    public let seed: UInt64
    public let alpha: Double
    /// R1 and how it was built (nil: the method does not rotate the residual stream).
    public let residualRotation: (matrix: Matrix, kind: RotationKind)?
    /// The log entries that concern the whole model (norm folding, R1).
    public let globalLog: [AppliedTransform]

    public init(_ method: QuantizationMethod, stats: CalibrationStats, config: MambaConfig, seed: UInt64, alpha: Double) throws {
        (self.method, self.seed, self.alpha) = (method, seed, alpha)
        try Self.checkWidths(stats, config)
        var log: [AppliedTransform] = [.init(step: "fold_norms", layer: nil, detail: "block norms into in_proj; norm_f into an untied lm_head, or beside a tied one as the head-input matrix")]
        switch method {
        case .rtn, .smoothquant:
            residualRotation = nil
        case .hadamard, .mambaquant:
            let d = config.hiddenSize
            let pooled = stats.pooledResidual
            guard pooled.channels == d else {
                throw MambaError(.mismatchedInputs, "the stats' residual moments have \(pooled.channels) channels, the model \(d)")
            }
            let (r1, kind1) = try offlineRotation(n: d, secondMoment: method == .mambaquant ? pooled.secondMoment : nil, seed: seed)
            residualRotation = (r1, kind1)
            log.append(.init(step: "R1", layer: nil, detail: "\(kind1.rawValue) \(d)x\(d) on the residual stream"))
        }
        globalLog = log
    }

    /// Every site's statistics have the model's width there: a stats file of another model (its
    /// source hash forged or skipped) is refused by site instead of trapping in a transform.
    static func checkWidths(_ stats: CalibrationStats, _ c: MambaConfig) throws {
        for (key, s) in stats.sites.sorted(by: { $0.key < $1.key }) {
            if let layer = key.layer, layer >= c.numLayers {
                throw MambaError(.mismatchedInputs, "the stats have site \(key), but the model has \(c.numLayers) layers: the stats file is from another model")
            }
            let spec = key.layer.map(c.mixer(layer:))
            if let spec, key.site != .residual, !spec.sites.contains(key.site) {
                throw MambaError(.mismatchedInputs, "the stats have site \(key), which layer \(key.layer!) (\(spec.name)) does not have: the stats file is from another model")
            }
            let expected = spec.map { $0.channels(of: key.site, c) } ?? c.hiddenSize
            if let expected, s.channels != expected {
                throw MambaError(.mismatchedInputs, "the stats' site \(key) has \(s.channels) channels, this model's \(key.site.rawValue) has \(expected): the stats file is from another model")
            }
        }
    }

    /// The head (lm_head, or a copy of the original embedding when tied): norm_f folded in, then R1.
    public func transformHead(_ head: inout Matrix, normF: inout [Double]?) {
        if let w = normF { head.scaleColumns(w) }
        normF = nil
        if let (r, _) = residualRotation { head.rotateInputsFloat32(by: r) }
    }

    /// A tied head's input matrix: norm_f's weight as diag(w), rotated by R1 (Rᵀ diag(w) R); the
    /// table stays the embedding's (ModelParameters.foldFinalNorm).
    public func headInputTransform(normF w: [Double]) -> Matrix {
        guard let (r, _) = residualRotation else { return Matrix.diagonal(w) }
        // diag(w) R by scaling R's rows (a dense product with the diagonal did D^3 multiply-adds
        // by zero: 1.7 s at D 4096; each entry is the same single rounding of w_i r_ij).
        var scaled = r
        scaled.scaleRows(w)
        return r.transposedTimes(scaled)
    }

    /// The embedding: R1.
    public func transformEmbedding(_ embedding: inout Matrix) {
        if let (r, _) = residualRotation { embedding.rotateInputsFloat32(by: r) }
    }

    /// Layer `i`'s transforms: its norm folded, its share of R1, then the method's per-layer steps.
    public func apply(layer i: Int, to b: inout BlockParameters, stats: CalibrationStats) throws -> [AppliedTransform] {
        b.foldNorm()
        if let (r, _) = residualRotation { b.rotateResidual(r) }
        switch method {
        case .rtn:
            return []
        case .smoothquant:
            let reader = b.mixer.spec.residualReaders.joined(separator: ", ")
            b.smoothInProjInput(smoothingFactors(activationAbsMax: try stats.site(i, .residual).range.absmax,
                                                 weightColumnAbsMax: b.residualReaderColumnAbsMax, alpha: alpha))
            var steps = ["\(reader) input (norm)"]
            if b.canSmooth(site: .x) {
                try smoothConv(&b, i, stats)
                steps.append("conv input (alpha 1)")
            }
            for site in b.mixer.spec.bottlenecks where b.canSmooth(site: site) {
                b.smooth(site: site, smoothingFactors(activationAbsMax: try stats.site(i, site).range.absmax,
                                                      weightColumnAbsMax: b.consumerColumnAbsMax(site), alpha: alpha))
                steps.append(site == .dtLow ? "dt path" : "\(site.rawValue) path")
            }
            if b.hasSmoothableGate {
                try smoothOut(&b, i, stats, alpha)
                steps.append("out_proj input (S-SiLU)")
            } else if b.canSmoothThroughVector(site: .outProjInput) {
                try smoothOutThroughNorm(&b, i, stats, alpha)
                steps.append("out_proj input (into the norm weight)")
            }
            return [.init(step: "smooth", layer: i, detail: steps.joined(separator: ", ") + ", alpha \(alpha)")]
        case .hadamard, .mambaquant:
            let klt = method == .mambaquant
            var steps: [String] = []
            // R5 on each bottleneck (Mamba-1's dt path; Vim's backward branch has its own); the
            // first keeps the seed it always had, as R2's modules do below.
            for (k, site) in b.mixer.spec.bottlenecks.enumerated() where b.hasPath(through: site) {
                let rank = b.mixer.spec.producer(of: site, b.config)!.rows.count
                var sigma: [Double]? = nil
                if klt {
                    guard let m = try stats.site(i, site).moments else {
                        throw MambaError(.missingTensor, "the statistics lack layers.\(i).\(site.rawValue).sumsq_matrix, which the KLT of R5 needs")
                    }
                    sigma = m.secondMoment
                }
                let (r5, kind5) = try offlineRotation(n: rank, secondMoment: sigma, seed: seed &+ 1000 &+ UInt64(i) &+ UInt64(k) &* 1_000_003)
                b.rotate(site: site, r5)
                steps.append("R5 \(kind5.rawValue) \(rank)x\(rank)" + (k > 0 ? " on \(site.rawValue)" : ""))
            }
            if klt && b.canSmooth(site: .x) {
                try smoothConv(&b, i, stats)
                steps.append("conv input smoothing (alpha 1)")
            }
            if klt && b.hasSmoothableGate {
                try smoothOut(&b, i, stats, alpha)
                steps.append("S-SiLU smoothing of out_proj input (alpha \(alpha))")
            } else if klt && b.canSmoothThroughVector(site: .outProjInput) {
                try smoothOutThroughNorm(&b, i, stats, alpha)
                steps.append("smoothing of out_proj input into the norm weight (alpha \(alpha))")
            }
            // R2 on each module the description names (Mamba: out_proj); the first keeps the seed
            // it always had, so checkpoints of one rotated module per layer stay as they were.
            for (k, module) in b.mixer.spec.onlineRotated.enumerated() {
                let n = b.mixer.weight(module).cols
                if let h = RandomizedHadamard(size: n, seed: seed &+ 2000 &+ UInt64(i) &+ UInt64(k) &* 1_000_003) {
                    b.rotateInput(of: module, h)
                    steps.append("R2 online Hadamard \(n) (\(h.hadamard.factorSize) x \(h.hadamard.powerOfTwo))" + (k > 0 ? " on \(module)" : ""))
                } else {
                    steps.append("no online Hadamard of size \(n): R2 skipped")
                }
            }
            return [.init(step: "rotate", layer: i, detail: steps.joined(separator: "; "))]
        }
    }
}

/// The whole plan on whole-model parameters (tests, small models).
public func applyPlan(_ method: QuantizationMethod, to p: inout ModelParameters, stats: CalibrationStats, seed: UInt64, alpha: Double) throws -> [AppliedTransform] {
    let plan = try MethodPlan(method, stats: stats, config: p.config, seed: seed, alpha: alpha)
    var log = plan.globalLog
    if var head = p.lmHead {
        plan.transformHead(&head, normF: &p.normF)
        p.lmHead = head
    } else {
        // Tied: the table stays the embedding's, norm_f's weight goes to the head-input matrix.
        p.headInput = plan.headInputTransform(normF: p.normF ?? [Double](repeating: 1, count: p.hiddenSize))
        p.normF = nil
    }
    plan.transformEmbedding(&p.embedding)
    for i in p.blocks.indices { log += try plan.apply(layer: i, to: &p.blocks[i], stats: stats) }
    return log
}

/// The conv input (in_proj's x half): both sides per channel, so alpha 1 costs the weights nothing.
private func smoothConv(_ b: inout BlockParameters, _ i: Int, _ stats: CalibrationStats) throws {
    let x = try stats.site(i, .x).range.absmax
    b.smooth(site: .x, smoothingFactors(activationAbsMax: x, weightColumnAbsMax: [Double](repeating: 1, count: x.count), alpha: 1))
}

/// out_proj's input through S-SiLU, against out_proj's current column ranges.
private func smoothOut(_ b: inout BlockParameters, _ i: Int, _ stats: CalibrationStats, _ alpha: Double) throws {
    let g = try stats.site(i, .outProjInput).range.absmax
    b.smoothOutProjInput(smoothingFactors(activationAbsMax: g, weightColumnAbsMax: b.consumerColumnAbsMax(.outProjInput), alpha: alpha))
}

/// out_proj's input where a norm's weight scales it (Mamba-2): the factors fold into that weight.
private func smoothOutThroughNorm(_ b: inout BlockParameters, _ i: Int, _ stats: CalibrationStats, _ alpha: Double) throws {
    let g = try stats.site(i, .outProjInput).range.absmax
    b.smoothThroughVector(site: .outProjInput, smoothingFactors(activationAbsMax: g, weightColumnAbsMax: b.consumerColumnAbsMax(.outProjInput), alpha: alpha))
}
