import MambaTensors

// Vision Mamba (hustvl/Vim vim/models_mamba.py, VisionMamba.forward in eval mode): an image
// [C, H, W] becomes patch tokens by a strided convolution (PatchEmbed: kernel p, stride s, read
// here as one linear over each patch's C p p values), the cls token joins them in the middle or at
// the head, the absolute position embedding is added, the blocks run (MambaBlock: Vim's
// add-then-norm order is the pre-norm residual stream u += mixer(norm(u))), norm_f, and the head
// reads the cls token's row (or pools the rows). Shapes: D hidden, T tokens, M patches.

public struct VisionMamba: Sendable {
    public var config: MambaConfig
    public let vision: VisionSettings
    public var patchEmbed: any LinearOp    // [D, C p p] + bias
    public var classToken: Tensor?         // [D]
    public var positionEmbedding: Tensor?  // [T, D]
    public var blocks: [MambaBlock]
    public var normF: Tensor?              // [D]
    public var head: any LinearOp          // [classes, D] + bias

    public init(config: MambaConfig, patchEmbed: any LinearOp, classToken: Tensor?, positionEmbedding: Tensor?, blocks: [MambaBlock],
                normF: Tensor?, head: any LinearOp) {
        precondition(config.vision != nil, "a Vision Mamba needs a vision config")
        self.config = config
        self.vision = config.vision!
        self.patchEmbed = patchEmbed
        self.classToken = classToken
        self.positionEmbedding = positionEmbedding
        self.blocks = blocks
        self.normF = normF
        self.head = head
    }

    /// The float model of a Vim checkpoint directory.
    public static func load(directory: String) throws -> VisionMamba {
        try VisionMamba(checkpoint: try CheckpointWeights(directory: directory))
    }

    /// The float model over a checkpoint's weights as stored (16-bit matrices kept in 16 bits, as
    /// MambaLM does), refused up front when it cannot fit in MemAvailable.
    public init(checkpoint w: CheckpointWeights, available: Double? = SystemMemory.available()) throws {
        let outer = try VisionOuterWeights(checkpoint: w)
        let need = Double(w.runtimeBytes)
        if let available, need > available {
            throw MambaError(.outOfMemory, "the float model of \(w.store.directory) needs \(gigabytes(need)) but \(gigabytes(available)) is available (\(SystemMemory.availableSource()))")
        }
        var blocks: [MambaBlock] = []
        for i in 0..<w.config.numLayers { blocks.append(MambaBlock(float: try w.readStoredLayer(i), config: w.config, layer: i)) }
        self.init(outer: outer, blocks: blocks)
    }

    /// The float model of the tensors around the blocks and the blocks.
    public init(outer o: VisionOuterWeights, blocks: [MambaBlock]) {
        self.init(config: o.config, patchEmbed: FloatLinear(weight: o.patchWeight, bias: o.patchBias), classToken: o.classToken,
                  positionEmbedding: o.positionEmbedding, blocks: blocks, normF: o.normF, head: FloatLinear(weight: o.headWeight, bias: o.headBias))
    }

    public var classes: Int { vision.classes }

    /// One image's patches as rows [M, C p p], row-major over the grid, each patch's values in the
    /// conv weight's (channel, row, column) order.
    public func patches(_ image: UnsafeBufferPointer<Float>) -> Tensor {
        let v = vision
        precondition(image.count == v.imageValues, "an image of \(image.count) values for a \(v.shapeDescription) model")
        let (p, s, h, w) = (v.patchSize, v.stride, v.imageHeight, v.imageWidth)
        return Tensor(shape: [v.patches, v.patchFeatures]) { out in
            var o = 0
            for gy in 0..<v.gridHeight {
                for gx in 0..<v.gridWidth {
                    for c in 0..<v.channels {
                        for ky in 0..<p {
                            (out.baseAddress! + o).update(from: image.baseAddress! + (c * h + gy * s + ky) * w + gx * s, count: p)
                            o += p
                        }
                    }
                }
            }
        }
    }

    /// The blocks' input for one image [T, D]: patch tokens, the cls token, the position embedding.
    public func embed(_ image: UnsafeBufferPointer<Float>, _ par: Parallelism = .serial) -> Tensor {
        let d = config.hiddenSize
        let tokens = profiled("patch_embed") { patchEmbed.forward(patches(image), par) }   // [M, D]
        var u: Tensor
        if let row = vision.classTokenRow, let cls = classToken {
            u = Tensor(shape: [vision.tokens, d]) { out in
                tokens.storage.withUnsafeBufferPointer { t in
                    let base = out.baseAddress!
                    base.update(from: t.baseAddress!, count: row * d)
                    cls.storage.withUnsafeBufferPointer { (base + row * d).update(from: $0.baseAddress!, count: d) }
                    (base + (row + 1) * d).update(from: t.baseAddress! + row * d, count: (vision.patches - row) * d)
                }
            }
        } else {
            u = tokens
        }
        if let pos = positionEmbedding { add(pos, to: &u, times: 1) }
        return u
    }

    /// The residual stream after the blocks [T, D] (each block from a fresh state: the whole image
    /// is one sequence).
    public func encode(_ embedded: Tensor, _ par: Parallelism = .serial, observer: (any ActivationObserver)? = nil) -> Tensor {
        var u = embedded
        for (i, block) in blocks.enumerated() {
            var state: any LayerState = block.mixer.makeState()
            block.step(&u, state: &state, layer: i, config: config, par, observer: observer)
        }
        return u
    }

    /// The head's input from the last residual stream [T, D]: norm_f, then the cls token's row,
    /// the last row or the mean of all rows (final_pool_type); every row for max pooling, where
    /// the head runs on each row and the largest output per class is kept.
    public func headInput(_ u: Tensor) -> Tensor {
        let h = rmsNorm(u, weight: normF, eps: config.layerNormEpsilon)
        if let row = vision.classTokenRow { return h.rows(row..<(row + 1)) }
        switch vision.pool {
        case .last: return h.rows((h.rows - 1)..<h.rows)
        case .mean: return Tensor(shape: [1, h.cols], storage: columnMeans(h))
        case .max: return h
        }
    }

    /// The head's logits [classes] from the last residual stream.
    public func classify(_ u: Tensor, _ par: Parallelism = .serial, observer: (any ActivationObserver)? = nil) -> [Float] {
        let features = headInput(u)
        observer?.observe(features, site: .lmHeadInput, layer: nil)
        let out = profiled("head") { head.forward(features, par) }
        return features.rows == 1 ? out.storage : columnMaxima(out)
    }

    /// `body` on each image of images [n, C, H, W] in order (its values in place, no copy).
    public func mapImages<T>(_ images: Tensor, _ body: (Int, UnsafeBufferPointer<Float>) throws -> T) rethrows -> [T] {
        let values = vision.imageValues
        precondition(images.count == images.shape[0] * values, "images of shape \(images.shape) for a \(vision.shapeDescription) model")
        return try images.storage.withUnsafeBufferPointer { all in
            try (0..<images.shape[0]).map { i in try body(i, UnsafeBufferPointer(rebasing: all[(i * values)..<((i + 1) * values)])) }
        }
    }

    /// Each image's tokens [T, D] (the blocks' input), in order.
    public func embedAll(_ images: Tensor, _ par: Parallelism = .serial) -> [Tensor] {
        mapImages(images) { _, image in embed(image, par) }
    }

    /// Logits [n, classes] of images [n, C, H, W].
    public func logits(_ images: Tensor, _ par: Parallelism = .serial) -> Tensor {
        Tensor(shape: [images.shape[0], classes], storage: Array(mapImages(images) { _, image in classify(encode(embed(image, par), par), par) }.joined()))
    }
}

/// A Vision Mamba's float tensors outside the blocks (VisionParameter), in the forward's shapes.
public struct VisionOuterWeights: Sendable {
    public let config: MambaConfig
    public var patchWeight: Tensor         // [D, C p p]
    public var patchBias: Tensor           // [D]
    public var classToken: Tensor?         // [D]
    public var positionEmbedding: Tensor?  // [T, D]
    public var normF: Tensor               // [D]
    public var headWeight: Tensor          // [classes, D]
    public var headBias: Tensor            // [classes]

    public init(checkpoint w: CheckpointWeights) throws {
        let c = w.config
        guard let v = c.vision else {
            throw MambaError(.unsupportedModel, "\(w.store.directory) is a language model (\(c.family)), not a Vision Mamba: run it with generate, evaluate or compare")
        }
        let d = c.hiddenSize
        config = c
        patchWeight = try w.tensor(VisionParameter.patchWeight.name).reshaped([d, v.patchFeatures])
        patchBias = try w.tensor(VisionParameter.patchBias.name)
        classToken = v.classToken == .none ? nil : try w.tensor(VisionParameter.classToken.name).reshaped([d])
        positionEmbedding = v.positionEmbedding ? try w.tensor(VisionParameter.positionEmbedding.name).reshaped([v.tokens, d]) : nil
        normF = try w.readNormF()
        headWeight = try w.tensor(VisionParameter.headWeight.name)
        headBias = try w.tensor(VisionParameter.headBias.name)
    }

    /// Random tensors of a trained model's ranges (benchmarks at the Vim-T/S/B shapes).
    public init(random c: MambaConfig, seed: UInt64) {
        let v = c.vision!, d = c.hiddenSize
        var s = seed
        func next() -> UInt64 { s &+= 0x9E37_79B9_7F4A_7C15; return s }
        config = c
        patchWeight = randomTensor([d, v.patchFeatures], seed: next(), scale: 1 / Double(v.patchFeatures).squareRoot())
        patchBias = randomTensor([d], seed: next(), scale: 0.1)
        classToken = v.classToken == .none ? nil : randomTensor([d], seed: next(), scale: 0.5)
        positionEmbedding = v.positionEmbedding ? randomTensor([v.tokens, d], seed: next(), scale: 0.2) : nil
        normF = randomTensor([d], seed: next(), scale: 0.2, offset: 1)
        headWeight = randomTensor([v.classes, d], seed: next(), scale: 1 / Double(d).squareRoot())
        headBias = randomTensor([v.classes], seed: next(), scale: 0.1)
    }
}

/// The mean of each column of x [rows, cols].
func columnMeans(_ x: Tensor) -> [Float] {
    var sums = [Double](repeating: 0, count: x.cols)
    x.storage.withUnsafeBufferPointer { p in
        for r in 0..<x.rows { for j in 0..<x.cols { sums[j] += Double(p[r * x.cols + j]) } }
    }
    return sums.map { Float($0 / Double(max(x.rows, 1))) }
}

/// The largest value of each column of x [rows, cols].
func columnMaxima(_ x: Tensor) -> [Float] {
    var best = [Float](repeating: -.infinity, count: x.cols)
    x.storage.withUnsafeBufferPointer { p in
        for r in 0..<x.rows { for j in 0..<x.cols { best[j] = max(best[j], p[r * x.cols + j]) } }
    }
    return best
}
