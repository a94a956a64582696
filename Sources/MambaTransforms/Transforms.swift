import Foundation
import MambaModel
import MambaTensors

// The function-preserving transforms of MambaQuant (arXiv 2501.13484, DESIGN.md section 2), each a
// small function named after its site. Weights are [out, in] and a layer computes x W^T, so a
// rotation R of a layer's input (x -> x R) is absorbed as W -> W R, and a rotation of its output
// as W -> R^T W. Each leaves the float model's logits unchanged (tests).

// The transforms address a mixer's sub-blocks by site through its description (the module rows
// that produce a site, the module that consumes it), never by row ranges of their own.

extension ModelParameters {
    /// The rows producing `site` in layer `i`, or an error when this mixer has no such site.
    func producer(_ site: Site, layer i: Int) -> OutputSlice {
        guard let slice = blocks[i].mixer.spec.producer(of: site, config) else {
            preconditionFailure("\(blocks[i].mixer.spec.name) mixer has no module producing \(site.rawValue)")
        }
        return slice
    }

    /// The module consuming `site` in layer `i`.
    func consumer(_ site: Site, layer i: Int) -> ModuleSpec {
        guard let m = blocks[i].mixer.spec.consumer(of: site) else {
            preconditionFailure("\(blocks[i].mixer.spec.name) mixer has no module reading \(site.rawValue)")
        }
        return m
    }

    /// Whether layer `i`'s mixer both produces and consumes `site` (a transform between the two applies).
    public func hasPath(through site: Site, layer i: Int) -> Bool {
        let spec = blocks[i].mixer.spec
        return spec.producer(of: site, config) != nil && spec.consumer(of: site) != nil
    }

    /// Whether a per-channel smoothing between `site`'s producer and consumer is exact in layer `i`
    /// (a path exists and no weightless RMSNorm sits on it).
    public func canSmooth(site: Site, layer i: Int) -> Bool {
        hasPath(through: site, layer: i) && !blocks[i].mixer.spec.isNormalized(site)
    }

    /// Whether layer `i`'s mixer gates with SiLU(z) before a module reading .outProjInput, so that
    /// S-SiLU can smooth that module's input.
    public func hasSmoothableGate(layer i: Int) -> Bool {
        let spec = blocks[i].mixer.spec
        return spec.producer(of: .z, config) != nil && spec.consumer(of: .outProjInput) != nil
    }

    /// The per-input-column absmax of the module consuming `site` in layer `i` (SmoothQuant's weight side).
    public func consumerColumnAbsMax(_ site: Site, layer i: Int) -> [Double] {
        blocks[i].mixer.weight(consumer(site, layer: i).name).columnAbsMax
    }

    /// Norm folding: each block's RMSNorm weight into its residual reader's input columns, norm_f's
    /// into lm_head (untied from the embedding first). RMSNorm with weight 1 commutes with any
    /// orthogonal rotation, which is what makes R1 exact.
    public mutating func foldNorms() {
        for i in blocks.indices {
            let reader = blocks[i].mixer.spec.residualReader
            if let w = blocks[i].norm { blocks[i].mixer.weights[reader]!.scaleColumns(w) }
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
            let (reader, writer) = (blocks[i].mixer.spec.residualReader, blocks[i].mixer.spec.residualWriter)
            blocks[i].mixer.weights[reader] = blocks[i].mixer.weight(reader).times(r)
            blocks[i].mixer.weights[writer] = r.transposedTimes(blocks[i].mixer.weight(writer))
            if let b = blocks[i].mixer.biases[writer] { blocks[i].mixer.biases[writer] = rowTimes(b, r) }
        }
        lmHead = lmHead!.times(r)
    }

    /// An orthogonal rotation between the rows producing `site` and the linear consuming it
    /// (offline): a -> a R, producer rows W -> R^T W, consumer W -> W R. Exact across a weightless
    /// RMSNorm on the site too, since RMS(a R) = RMS(a).
    public mutating func rotate(site: Site, layer i: Int, _ r: Matrix) {
        let (slice, reader) = (producer(site, layer: i), consumer(site, layer: i))
        precondition(r.rows == slice.rows.count && r.cols == slice.rows.count && reader.kind == .linear)
        var m = blocks[i].mixer
        m.weights[slice.module]!.setRowBlock(slice.rows, r.transposedTimes(m.weight(slice.module).rowBlock(slice.rows)))
        if var b = m.biases[slice.module] {
            b.replaceSubrange(slice.rows, with: rowTimes(Array(b[slice.rows]), r))
            m.biases[slice.module] = b
        }
        m.weights[reader.name] = m.weight(reader.name).times(r)
        blocks[i].mixer = m
    }

    /// Per-channel smoothing between the rows producing `site` and the module consuming it: the
    /// activation divided by s, the consumer's input channels multiplied by s (exact).
    public mutating func smooth(site: Site, layer i: Int, _ s: [Double]) {
        let (slice, reader) = (producer(site, layer: i), consumer(site, layer: i))
        precondition(s.count == slice.rows.count)
        precondition(!blocks[i].mixer.spec.isNormalized(site), "a per-channel smoothing does not cross the RMSNorm at \(site.rawValue)")
        blocks[i].mixer.scaleOutputs(slice, s.map { 1 / $0 })
        blocks[i].mixer.scaleInputs(reader, s)
    }

    /// R5 on the dt path of one layer (offline): dtLow -> dtLow R, between x_proj's dt rows and dt_proj.
    public mutating func rotateDtPath(layer i: Int, _ r: Matrix) { rotate(site: .dtLow, layer: i, r) }

    /// Smoothing of the conv input x (in_proj's x rows divided by s, the conv's per-channel
    /// weights multiplied by s).
    public mutating func smoothConvInput(layer i: Int, _ s: [Double]) { smooth(site: .x, layer: i, s) }

    /// SmoothQuant on the dt path: x_proj's dt rows divided by s, dt_proj's columns times s.
    public mutating func smoothDtPath(layer i: Int, _ s: [Double]) { smooth(site: .dtLow, layer: i, s) }

    /// Smoothing of out_proj's input through S-SiLU: g / s, with z (the gate's input) divided by s
    /// and the gate becoming y * z * sigmoid(s z); the consumer's input columns times s.
    public mutating func smoothOutProjInput(layer i: Int, _ s: [Double]) {
        let (z, reader) = (producer(.z, layer: i), consumer(.outProjInput, layer: i))
        precondition(s.count == z.rows.count)
        precondition(blocks[i].mixer.onlineRotations[reader.name] == nil, "smooth out_proj's input before rotating it")
        blocks[i].mixer.scaleOutputs(z, s.map { 1 / $0 })
        let old = blocks[i].mixer.gateSmoothing ?? [Double](repeating: 1, count: s.count)
        blocks[i].mixer.gateSmoothing = zip(old, s).map { $0 * $1 }
        blocks[i].mixer.scaleInputs(reader, s)
    }

    /// R2, the online rotation of out_proj's input: g -> g R at run time, out_proj W -> W R.
    public mutating func rotateOutProjInput(layer i: Int, _ r: RandomizedHadamard) {
        let reader = consumer(.outProjInput, layer: i).name
        let n = r.hadamard.size
        precondition(n == blocks[i].mixer.weight(reader).cols)
        blocks[i].mixer.weights[reader] = blocks[i].mixer.weight(reader).times(Matrix(rows: n, cols: n, data: r.matrix))
        blocks[i].mixer.onlineRotations[reader] = r
    }

    /// SmoothQuant at the block input: the RMSNorm weight divided by s, the residual reader's columns times s.
    public mutating func smoothInProjInput(layer i: Int, _ s: [Double]) {
        let w = blocks[i].norm ?? [Double](repeating: 1, count: hiddenSize)
        blocks[i].norm = zip(w, s).map { $0 / $1 }
        blocks[i].mixer.weights[blocks[i].mixer.spec.residualReader]!.scaleColumns(s)
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
