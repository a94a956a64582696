import Foundation
import MambaModel
import MambaTensors

// The function-preserving transforms of MambaQuant (arXiv 2501.13484, docs/DESIGN.md section 2), each a
// small function named after its site. Weights are [out, in] and a layer computes x W^T, so a
// rotation R of a layer's input (x -> x R) is absorbed as W -> W R, and a rotation of its output
// as W -> R^T W. Each leaves the float model's logits unchanged (tests).

// The transforms address a mixer's sub-blocks by site through its description (the module rows
// that produce a site, the module that consumes it), never by row ranges of their own. Each acts
// on one block, so a pipeline can transform a layer at a time; ModelParameters applies them to
// layer i of a whole model.

extension BlockParameters {
    var spec: any MixerDescription { mixer.spec }

    /// The rows producing `site` (a description's own sites only: a bug otherwise).
    func producer(_ site: Site) -> OutputSlice {
        guard let slice = spec.producer(of: site, config) else {
            preconditionFailure("\(spec.name) mixer has no module producing \(site.rawValue)")
        }
        return slice
    }

    /// The module consuming `site`.
    func consumer(_ site: Site) -> ModuleSpec {
        guard let m = spec.consumer(of: site) else { preconditionFailure("\(spec.name) mixer has no module reading \(site.rawValue)") }
        return m
    }

    /// Whether the mixer both produces and consumes `site` (a transform between the two applies).
    public func hasPath(through site: Site) -> Bool {
        spec.producer(of: site, config) != nil && spec.consumer(of: site) != nil
    }

    /// Whether a per-channel smoothing between `site`'s producer and consumer is exact (a path
    /// exists and no weightless RMSNorm sits on it).
    public func canSmooth(site: Site) -> Bool { hasPath(through: site) && !spec.isNormalized(site) }

    /// Whether the mixer gates with SiLU(z) before a module reading .outProjInput, so that S-SiLU
    /// can smooth that module's input.
    public var hasSmoothableGate: Bool {
        spec.producer(of: .z, config) != nil && spec.consumer(of: .outProjInput) != nil && !spec.isNormalized(.outProjInput)
    }

    /// Whether a per-channel vector (a norm's weight) scales `site` just before its consumer, so
    /// that a smoothing of the site folds into it.
    public func canSmoothThroughVector(site: Site) -> Bool {
        spec.scaleVector(of: site) != nil && spec.consumer(of: site) != nil
    }

    /// The per-input-column absmax of the module consuming `site` (SmoothQuant's weight side).
    public func consumerColumnAbsMax(_ site: Site) -> [Double] { mixer.weight(consumer(site).name).columnAbsMax }

    /// The per-input-column absmax over the modules reading the block's normalized input (one
    /// smoothing of that input scales all of them).
    public var residualReaderColumnAbsMax: [Double] {
        spec.residualReaders.map { mixer.weight($0).columnAbsMax }.reduce(into: [Double]()) { m, c in
            m = m.isEmpty ? c : zip(m, c).map { max($0, $1) }
        }
    }

    /// Norm folding: the RMSNorm weight into every residual reader's input columns. RMSNorm with
    /// weight 1 commutes with any orthogonal rotation, which is what makes R1 exact.
    public mutating func foldNorm() {
        if let w = norm { for reader in spec.residualReaders { mixer.modules[reader]!.weight.scaleColumns(w) } }
        norm = nil
        // The same inside the mixer where R5 rotates: dt_low's norm weight (Jamba's dt_layernorm)
        // into dt_proj's columns, leaving a weightless RMSNorm that R5 crosses (RMS(a R) = RMS(a)).
        // (Mamba-2's gated-norm weight stays: smoothing folds into it, and no rotation crosses it.)
        for site in [Site.dtLow] where spec.isNormalized(site) {
            guard let key = spec.scaleVector(of: site), let reader = spec.consumer(of: site), reader.kind == .linear, let v = mixer.tensors[key] else { continue }
            mixer.modules[reader.name]!.weight.scaleColumns(v.storage.map(Double.init))
            mixer.tensors[key] = Tensor(repeating: 1, shape: v.shape)
        }
    }

    /// R1's share in this block (offline): each reader's input u -> u R, each writer's output o -> o R
    /// (the weights' products in float32, Matrix.rotateInputsFloat32).
    public mutating func rotateResidual(_ r: Matrix) {
        precondition(norm == nil, "fold the norms before rotating the residual stream")
        for reader in spec.residualReaders { mixer.modules[reader]!.weight.rotateInputsFloat32(by: r) }
        for writer in spec.residualWriters {
            mixer.modules[writer]!.weight.rotateOutputsFloat32(by: r)
            if let b = mixer.modules[writer]!.bias { mixer.modules[writer]!.bias = rowTimes(b, r) }
        }
    }

    /// An orthogonal rotation between the rows producing `site` and the linear consuming it
    /// (offline): a -> a R, producer rows W -> R^T W, consumer W -> W R. Exact across a weightless
    /// RMSNorm on the site too, since RMS(a R) = RMS(a).
    public mutating func rotate(site: Site, _ r: Matrix) {
        let (slice, reader) = (producer(site), consumer(site))
        precondition(r.rows == slice.rows.count && r.cols == slice.rows.count && reader.kind == .linear)
        mixer.modules[slice.module]!.weight.setRowBlock(slice.rows, r.transposedTimes(mixer.weight(slice.module).rowBlock(slice.rows)))
        if var b = mixer.modules[slice.module]!.bias {
            b.replaceSubrange(slice.rows, with: rowTimes(Array(b[slice.rows]), r))
            mixer.modules[slice.module]!.bias = b
        }
        mixer.modules[reader.name]!.weight = mixer.weight(reader.name).times(r)
    }

    /// Per-channel smoothing between the rows producing `site` and the modules consuming it: the
    /// activation divided by s, every consumer's input channels multiplied by s (exact; Vim's two
    /// convs both read in_proj's x).
    public mutating func smooth(site: Site, _ s: [Double]) {
        let slice = producer(site)
        precondition(s.count == slice.rows.count)
        precondition(!spec.isNormalized(site), "a per-channel smoothing does not cross the RMSNorm at \(site.rawValue)")
        mixer.scaleOutputs(slice, s.map { 1 / $0 })
        for reader in spec.modules where reader.input == site { mixer.scaleInputs(reader, s) }
    }

    /// Smoothing of out_proj's input through S-SiLU: g / s, with z (the gate's input) divided by s
    /// and the gate becoming y * z * sigmoid(s z); the consumer's input columns times s.
    public mutating func smoothOutProjInput(_ s: [Double]) {
        let (z, reader) = (producer(.z), consumer(.outProjInput))
        precondition(s.count == z.rows.count)
        precondition(mixer.hadamardSigns(before: reader.name) == nil, "smooth out_proj's input before rotating it")
        mixer.scaleOutputs(z, s.map { 1 / $0 })
        let old = mixer.gateSmoothing?.storage ?? [Float](repeating: 1, count: s.count)
        mixer.tensors[LayerArtifact.gateSmoothing] = Tensor(shape: [s.count], storage: zip(old, s).map { Float(Double($0) * $1) })
        mixer.scaleInputs(reader, s)
    }

    /// Smoothing through the vector that scales `site` (Mamba-2's gated-norm weight before
    /// out_proj): the vector divided by s, the consumer's input channels multiplied by s (exact:
    /// the norm's statistics are taken before its weight).
    public mutating func smoothThroughVector(site: Site, _ s: [Double]) {
        let (key, reader) = (spec.scaleVector(of: site)!, consumer(site))
        let v = mixer.tensors[key]!
        precondition(s.count == v.count)
        mixer.tensors[key] = Tensor(shape: v.shape, storage: zip(v.storage, s).map { Float(Double($0) / $1) })
        mixer.scaleInputs(reader, s)
    }

    /// R2, the online rotation of out_proj's input: g -> g R at run time, out_proj W -> W R.
    public mutating func rotateOutProjInput(_ r: RandomizedHadamard) { rotateInput(of: consumer(.outProjInput).name, r) }

    /// An online rotation of `reader`'s input: x -> x R at run time, the linear's W -> W R.
    public mutating func rotateInput(of reader: String, _ r: RandomizedHadamard) {
        let n = r.hadamard.size
        var w = mixer.weight(reader)
        precondition(n == w.cols)
        // W R row by row through the fast transform (the run time's x R), not a dense product: at
        // 7B shapes the dense one was most of quantize's time (docs/PERFORMANCE.md, "Big
        // models: quantize time").
        w.data.withUnsafeMutableBufferPointer { r.rotateRows($0.baseAddress!, rows: w.rows, parallelism: .ofBLAS) }
        mixer.modules[reader]!.weight = w
        mixer.tensors[LayerArtifact.hadamardSigns(reader)] = Tensor(shape: [n], storage: r.signs.map(Float.init))
    }

    /// SmoothQuant at the block input: the RMSNorm weight divided by s, every residual reader's columns times s.
    public mutating func smoothInProjInput(_ s: [Double]) {
        let w = norm ?? [Double](repeating: 1, count: s.count)
        norm = zip(w, s).map { $0 / $1 }
        for reader in spec.residualReaders { mixer.modules[reader]!.weight.scaleColumns(s) }
    }
}

extension ModelParameters {
    /// norm_f folded into lm_head (untied from the embedding first).
    public mutating func foldFinalNorm() {
        defer { normF = nil }
        guard let w = normF else { return }
        // A tied head stays tied (one table for the embedding and the head): norm_f's weight
        // becomes the head-input matrix diag(w), which R1 rotates with the stream.
        guard var head = lmHead else {
            headInput = .diagonal(w)
            return
        }
        head.scaleColumns(w)
        lmHead = head
    }

    /// Norm folding everywhere: each block's RMSNorm into its residual reader, norm_f into lm_head.
    public mutating func foldNorms() {
        for i in blocks.indices { blocks[i].foldNorm() }
        foldFinalNorm()
    }

    /// R1 on the residual stream (offline): u -> u R everywhere. Needs folded norms.
    public mutating func rotateResidual(_ r: Matrix) {
        precondition(blocks.allSatisfy { $0.norm == nil } && normF == nil, "fold the norms before rotating the residual stream")
        precondition(r.rows == hiddenSize && r.cols == hiddenSize)
        embedding.rotateInputsFloat32(by: r)
        for i in blocks.indices { blocks[i].rotateResidual(r) }
        lmHead?.rotateInputsFloat32(by: r)
        // norm(u R) = norm(u) R, so the head reads norm(u) R Rᵀ diag(w) R: the matrix becomes Rᵀ M R.
        headInput = headInput.map { r.transposedTimes($0.times(r)) }
    }

    public func hasPath(through site: Site, layer i: Int) -> Bool { blocks[i].hasPath(through: site) }
    public func canSmooth(site: Site, layer i: Int) -> Bool { blocks[i].canSmooth(site: site) }
    public func hasSmoothableGate(layer i: Int) -> Bool { blocks[i].hasSmoothableGate }
    public func consumerColumnAbsMax(_ site: Site, layer i: Int) -> [Double] { blocks[i].consumerColumnAbsMax(site) }

    public mutating func rotate(site: Site, layer i: Int, _ r: Matrix) { blocks[i].rotate(site: site, r) }
    public mutating func smooth(site: Site, layer i: Int, _ s: [Double]) { blocks[i].smooth(site: site, s) }

    /// R5 on the dt path of one layer (offline): dtLow -> dtLow R, between x_proj's dt rows and dt_proj.
    public mutating func rotateDtPath(layer i: Int, _ r: Matrix) { rotate(site: .dtLow, layer: i, r) }
    /// Smoothing of the conv input x (in_proj's x rows divided by s, the conv's per-channel weights times s).
    public mutating func smoothConvInput(layer i: Int, _ s: [Double]) { smooth(site: .x, layer: i, s) }
    /// SmoothQuant on the dt path: x_proj's dt rows divided by s, dt_proj's columns times s.
    public mutating func smoothDtPath(layer i: Int, _ s: [Double]) { smooth(site: .dtLow, layer: i, s) }
    public mutating func smoothOutProjInput(layer i: Int, _ s: [Double]) { blocks[i].smoothOutProjInput(s) }
    public mutating func rotateOutProjInput(layer i: Int, _ r: RandomizedHadamard) { blocks[i].rotateOutProjInput(r) }
    public mutating func smoothInProjInput(layer i: Int, _ s: [Double]) { blocks[i].smoothInProjInput(s) }
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
