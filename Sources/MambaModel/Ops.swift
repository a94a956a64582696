import CMambaKernels
import MambaTensors

// The leaf ops of the forward. The float model uses the Float* ops below; a quantized model is the
// same forward with these swapped for int8 ones (as mlx-swift swaps Linear for QuantizedLinear).

/// y = x * W^T (+ b): [L, in] -> [L, out].
public protocol LinearOp: Sendable {
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    func forward(_ x: Tensor, _ parallelism: Parallelism) -> Tensor
    /// forward(rotation.rotate(x)): an online rotation of the input (R2, TransformOps.swift) and
    /// the product. An op that quantizes its input may rotate each row on the way (Int8Linear).
    func forward(_ x: Tensor, rotatedBy rotation: OnlineHadamard, _ parallelism: Parallelism) -> Tensor
    /// Whether forward(_:quantizing:into:) can write a conv's integers (Int8Linear with one scale per
    /// output channel): the mixers ask before they have the conv allocate that input.
    var quantizesColumns: Bool { get }
    /// forward(x) with the output columns `columns` written into `input` as the integers of the
    /// conv that reads them (in the product's epilogue, no float pass between: Int8Linear) and
    /// the columns before and after them returned as floats, [L, columns.lowerBound] and [L,
    /// outFeatures - columns.upperBound]. Nil where the op cannot (quantizesColumns false); the
    /// caller then runs forward(x) and the conv on floats.
    func forward(_ x: Tensor, quantizing columns: Range<Int>, into input: inout QuantizedConvInput,
                 _ parallelism: Parallelism) -> (before: Tensor, after: Tensor)?
}

extension LinearOp {
    public func forward(_ x: Tensor, rotatedBy rotation: OnlineHadamard, _ parallelism: Parallelism) -> Tensor {
        forward(profiled("hadamard") { rotation.rotate(x, parallelism) }, parallelism)
    }

    public var quantizesColumns: Bool { false }

    public func forward(_ x: Tensor, quantizing columns: Range<Int>, into input: inout QuantizedConvInput,
                        _ parallelism: Parallelism) -> (before: Tensor, after: Tensor)? {
        nil
    }

    /// The product of x rotated by `rotation` first (nil: none), as the mixers run their output
    /// projections: an observer (calibration) sees the rotated input at `site`, so with one the
    /// rotation is a pass of its own.
    public func forward(
        _ x: Tensor, rotatedBy rotation: OnlineHadamard?, _ parallelism: Parallelism,
        observer: (any ActivationObserver)?, site: Site, layer: Int
    ) -> Tensor {
        guard let rotation else {
            observer?.observe(x, site: site, layer: layer)
            return forward(x, parallelism)
        }
        guard let observer else { return forward(x, rotatedBy: rotation, parallelism) }
        let rotated = profiled("hadamard") { rotation.rotate(x, parallelism) }
        observer.observe(rotated, site: site, layer: layer)
        return forward(rotated, parallelism)
    }
}

/// Causal depthwise conv over time with a rolling state of the last K-1 inputs: [L, E] -> [L, E],
/// conv + bias, no activation. `state` is [K-1, E] row-major, updated.
public protocol ConvOp: Sendable {
    var kernelSize: Int { get }
    func forward(_ x: Tensor, state: inout [Float], _ parallelism: Parallelism) -> Tensor
    /// silu(forward(x)): what the blocks read; an op may fuse the two.
    func forwardSiLU(_ x: Tensor, state: inout [Float], _ parallelism: Parallelism) -> Tensor
    /// Where the conv runs on integers that the product before it can write (Int8Conv, a prompt
    /// of more than one token): the input for `rows` new rows with the state's rows in place. Nil:
    /// it reads floats.
    func quantizedInput(rows: Int, state: [Float]) -> QuantizedConvInput?
    /// forwardSiLU over an input from quantizedInput, once the product has written its rows.
    func forwardSiLU(_ input: QuantizedConvInput, state: inout [Float], _ parallelism: Parallelism) -> Tensor
}

extension ConvOp {
    public func forwardSiLU(_ x: Tensor, state: inout [Float], _ parallelism: Parallelism) -> Tensor {
        silu(forward(x, state: &state, parallelism))
    }

    public func quantizedInput(rows: Int, state: [Float]) -> QuantizedConvInput? { nil }

    public func forwardSiLU(_ input: QuantizedConvInput, state: inout [Float], _ parallelism: Parallelism) -> Tensor {
        preconditionFailure("\(Self.self) reads floats: it has no quantized input")
    }
}

/// A conv's input as the integers it runs on, [K-1+L, channels] row-major: the state's K-1 rows,
/// then L rows that the product before the conv writes in its epilogue (in_proj's x), quantized
/// with `inverseScale` and clamped to +-qmax. One float pass over [L, E] fewer than quantizing x
/// after the product (docs/DESIGN.md section 3).
public struct QuantizedConvInput: Sendable {
    public let rows: Int
    public let channels: Int
    public let historyRows: Int
    public let inverseScale: Float
    public let qmax: Int
    public var values: [Int8]

    public init(rows: Int, channels: Int, historyRows: Int, inverseScale: Float, qmax: Int, values: [Int8]) {
        precondition(values.count == (historyRows + rows) * channels, "\(values.count) integers for \(historyRows + rows) rows of \(channels)")
        (self.rows, self.channels, self.historyRows, self.inverseScale, self.qmax, self.values) = (rows, channels, historyRows, inverseScale, qmax, values)
    }
}

/// The gate: y * act(z), [L, E] x [L, E] -> [L, E]. Float Mamba uses SiLU; the smoothed model
/// uses S-SiLU (docs/DESIGN.md section 2).
public protocol GateOp: Sendable {
    func forward(y: Tensor, z: Tensor, _ parallelism: Parallelism) -> Tensor
    /// norm(forward(y, z)): Mamba-2's gated RMSNorm. The ops here gate and normalize each row in
    /// one pass while the row is in cache, with the same operations as the two passes.
    func forward(y: Tensor, z: Tensor, normalizedBy norm: GroupRMSNorm, _ parallelism: Parallelism) -> Tensor
}

extension GateOp {
    public func forward(y: Tensor, z: Tensor) -> Tensor { forward(y: y, z: z, .serial) }

    public func forward(y: Tensor, z: Tensor, normalizedBy norm: GroupRMSNorm, _ parallelism: Parallelism) -> Tensor {
        norm.forward(forward(y: y, z: z, parallelism))
    }
}

/// Token ids -> [L, D].
public protocol EmbeddingOp: Sendable {
    var vocabSize: Int { get }
    func forward(_ tokens: [Int]) -> Tensor
}

/// What happens to a scan input (x, dt, B, C) before the scan: nothing in float; quantization
/// in a quantized model.
public protocol ScanInputOp: Sendable {
    func forward(_ activation: inout Tensor, site: Site)
    /// The same on columns `columns` of `activation`, in place (Mamba-2's x, B and C are column
    /// blocks of its conv's output, which the scan reads where they lie).
    func forward(_ activation: inout Tensor, columns: Range<Int>, site: Site)
}

// MARK: - Float ops

public struct FloatLinear: LinearOp {
    public let weight: Tensor      // [out, in]
    public let bias: Tensor?       // [out]

    public init(weight: Tensor, bias: Tensor? = nil) {
        self.weight = weight
        self.bias = bias
    }

    public var inFeatures: Int { weight.cols }
    public var outFeatures: Int { weight.rows }

    public func forward(_ x: Tensor, _ parallelism: Parallelism) -> Tensor {
        // x_proj and dt_proj in decode: too small to be worth OpenBLAS's second thread.
        let small = parallelism.threads > 1 && x.rows * weight.rows * weight.cols < parallelism.minimumWorkPerThread
        var y = small ? BLAS.withThreads(1) { BLAS.linear(x, weight) } : BLAS.linear(x, weight, parallelism)
        if let bias { addRowVector(&y, bias) }
        return y
    }
}

public struct FloatConv: ConvOp {
    /// [K, E]: transposed from the checkpoint's [E, K] so the channel loop is contiguous.
    let weightKE: [Float]
    let bias: [Float]              // [E] (zeros when the conv has no bias)
    public let kernelSize: Int
    public let channels: Int

    public init(weight: Tensor, bias: Tensor?) {
        let (e, k) = (weight.shape[0], weight.shape[1])
        var t = [Float](repeating: 0, count: e * k)
        for c in 0..<e { for j in 0..<k { t[j * e + c] = weight.storage[c * k + j] } }
        weightKE = t
        self.bias = bias?.storage ?? [Float](repeating: 0, count: e)
        kernelSize = k
        channels = e
    }

    public func forward(_ x: Tensor, state: inout [Float], _ parallelism: Parallelism) -> Tensor {
        causalConv(x, state: &state, weightKE: weightKE, bias: bias, kernelSize: kernelSize)
    }

    /// The conv and its SiLU in one pass (CMambaKernels mq_conv_silu_f32), rows split between
    /// threads; `silu(forward(x))` is its reference.
    public func forwardSiLU(_ x: Tensor, state: inout [Float], _ parallelism: Parallelism) -> Tensor {
        let (l, e, k) = (x.rows, x.cols, kernelSize)
        precondition(e == channels && state.count == (k - 1) * e, "conv expects \(channels) channels and a state of \(k - 1) rows")
        let out = Tensor(shape: [l, e]) { o in
            state.withUnsafeBufferPointer { h in
                x.storage.withUnsafeBufferPointer { xp in
                    weightKE.withUnsafeBufferPointer { w in
                        bias.withUnsafeBufferPointer { b in
                            let (hv, xv, wv, bv, ov) = (UncheckedSendable(h.baseAddress), UncheckedSendable(xp.baseAddress!), UncheckedSendable(w.baseAddress!),
                                                        UncheckedSendable(b.baseAddress!), UncheckedSendable(o.baseAddress!))
                            parallelism.forEachChunk(l, minimumChunk: 16) { rows in
                                mq_conv_silu_f32(hv.value, xv.value, Int32(rows.lowerBound), Int32(rows.upperBound), Int32(e), Int32(k), wv.value, bv.value, ov.value)
                            }
                        }
                    }
                }
            }
        }
        // The new state: the last K-1 rows of [state; x].
        if k > 1 {
            let keep = min(l, k - 1)
            state = Array(state[(keep * e)...]) + Array(x.storage[((l - keep) * e)...])
        }
        return out
    }
}

/// out[t, e] = bias[e] + sum_k w[k, e] * [state; x][t + k, e]; the state becomes the last K-1 rows.
func causalConv(_ x: Tensor, state: inout [Float], weightKE: [Float], bias: [Float], kernelSize k: Int) -> Tensor {
    let (l, e) = (x.rows, x.cols)
    let history = k - 1
    precondition(state.count == history * e, "conv state has \(state.count) values, expected \(history * e)")
    var padded = state                                     // [K-1+L, E]
    padded.append(contentsOf: x.storage)
    var out = Tensor(zeros: [l, e])
    padded.withUnsafeBufferPointer { p in
        weightKE.withUnsafeBufferPointer { w in
            bias.withUnsafeBufferPointer { b in
                out.storage.withUnsafeMutableBufferPointer { o in
                    for t in 0..<l {
                        let orow = o.baseAddress! + t * e
                        orow.update(from: b.baseAddress!, count: e)
                        for j in 0..<k {
                            let prow = p.baseAddress! + (t + j) * e
                            let wrow = w.baseAddress! + j * e
                            for c in 0..<e { orow[c] += wrow[c] * prow[c] }
                        }
                    }
                }
            }
        }
    }
    if history > 0 { state = Array(padded[(l * e)...]) }
    return out
}

public struct SiLUGate: GateOp {
    public init() {}
    public func forward(y: Tensor, z: Tensor, _ parallelism: Parallelism) -> Tensor {
        gateRows(y: y, z: z, smoothing: nil, parallelism)
    }

    public func forward(y: Tensor, z: Tensor, normalizedBy norm: GroupRMSNorm, _ parallelism: Parallelism) -> Tensor {
        gateRows(y: y, z: z, smoothing: nil, normalizedBy: norm, parallelism)
    }
}

/// y * silu(z), or silu(s * z) * (y / s) with a smoothing vector s: rows split between threads.
/// With `norm`, each row is normalized right after its gate (one pass over the rows, split between
/// threads as the gate is; the same kernels, so the same floats as gating every row and then
/// normalizing every row).
public func gateRows(y: Tensor, z: Tensor, smoothing s: [Float]?, normalizedBy norm: GroupRMSNorm? = nil,
                     _ parallelism: Parallelism) -> Tensor {
    precondition(y.shape == z.shape && (s == nil || s!.count == z.cols), "gate: y \(y.shape), z \(z.shape)")
    let e = z.cols
    precondition(norm.map { e % $0.groups == 0 && $0.weight.count == e } ?? true, "gated norm: \(e) channels, \(norm?.groups ?? 0) groups")
    return Tensor(shape: z.shape) { out in
        y.storage.withUnsafeBufferPointer { yp in
        z.storage.withUnsafeBufferPointer { zp in
        (norm?.weight.storage ?? []).withUnsafeBufferPointer { wp in
            let (yv, zv, ov) = (UncheckedSendable(yp.baseAddress!), UncheckedSendable(zp.baseAddress!), UncheckedSendable(out.baseAddress!))
            let weight = UncheckedSendable(wp.baseAddress)   // used only with a norm, whose weight has e values
            func run(_ sp: UncheckedSendable<UnsafePointer<Float>>?) {
                parallelism.forEachChunk(z.rows, minimumChunk: 16) { r in
                    guard let norm else {
                        let o = r.lowerBound * e
                        return mq_gate_rows_f32(yv.value + o, zv.value + o, sp?.value, ov.value + o, Int32(r.count), Int32(e))
                    }
                    // Each row gated into a row of scratch (in L1) and normalized from there into the
                    // output (the norm in place runs 2.5x slower: its loop cannot assume no aliasing).
                    let gated = UnsafeMutablePointer<Float>.allocate(capacity: e)
                    defer { gated.deallocate() }
                    for i in r {
                        mq_gate_rows_f32(yv.value + i * e, zv.value + i * e, sp?.value, gated, 1, Int32(e))
                        mq_rmsnorm_f32(gated, 1, Int32(e), Int32(norm.groups), weight.value, norm.eps, ov.value + i * e)
                    }
                }
            }
            guard let s else { return run(nil) }
            s.withUnsafeBufferPointer { run(UncheckedSendable($0.baseAddress!)) }
        }}}
    }
}

public struct FloatEmbedding: EmbeddingOp {
    public let table: Tensor       // [V, D]
    public init(table: Tensor) { self.table = table }
    public var vocabSize: Int { table.rows }

    public func forward(_ tokens: [Int]) -> Tensor {
        let d = table.cols
        var out = Tensor(zeros: [tokens.count, d])
        table.storage.withUnsafeBufferPointer { src in
            out.storage.withUnsafeMutableBufferPointer { dst in
                for (i, t) in tokens.enumerated() {
                    (dst.baseAddress! + i * d).update(from: src.baseAddress! + t * d, count: d)
                }
            }
        }
        return out
    }
}

public struct IdentityScanInput: ScanInputOp {
    public init() {}
    public func forward(_ activation: inout Tensor, site: Site) {}
    public func forward(_ activation: inout Tensor, columns: Range<Int>, site: Site) {}
}

// MARK: - Elementwise helpers

public func silu(_ x: Tensor) -> Tensor {
    var out = Tensor(zeros: x.shape)
    x.storage.withUnsafeBufferPointer { src in
        out.storage.withUnsafeMutableBufferPointer { dst in
            mq_silu_f32(src.baseAddress!, dst.baseAddress!, src.count)
        }
    }
    return out
}

/// x[r, :] += v for every row.
public func addRowVector(_ x: inout Tensor, _ v: Tensor) {
    let c = x.cols
    precondition(v.count == c)
    x.storage.withUnsafeMutableBufferPointer { xp in
        v.storage.withUnsafeBufferPointer { vp in
            for r in 0..<(xp.count / max(c, 1)) {
                for j in 0..<c { xp[r * c + j] += vp[j] }
            }
        }
    }
}

/// RMSNorm (transformers MambaRMSNorm): w * x / sqrt(mean(x^2) + eps), per row (or per group of
/// cols / groups channels of a row: MambaRMSNormGated's group_size); weight nil = ones. The sum of
/// squares runs in vector lanes (CMambaKernels mq_rmsnorm_f32); `rmsNormReference` is the plain loop.
public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Float, groups: Int = 1) -> Tensor {
    let (rows, c) = (x.rows, x.cols)
    precondition(groups > 0 && c % groups == 0 && (weight?.count ?? c) == c, "RMSNorm: \(c) channels, \(groups) groups, weight of \(weight?.count ?? c)")
    return Tensor(shape: x.shape) { op in   // every element written
        x.storage.withUnsafeBufferPointer { xp in
            guard let weight else { return mq_rmsnorm_f32(xp.baseAddress!, Int32(rows), Int32(c), Int32(groups), nil, eps, op.baseAddress!) }
            weight.storage.withUnsafeBufferPointer { wp in
                mq_rmsnorm_f32(xp.baseAddress!, Int32(rows), Int32(c), Int32(groups), wp.baseAddress!, eps, op.baseAddress!)
            }
        }
    }
}

/// `rmsNorm` as a plain loop, one chain per group's sum of squares (what the kernel is tested against).
public func rmsNormReference(_ x: Tensor, weight: Tensor?, eps: Float, groups: Int = 1) -> Tensor {
    let (rows, c) = (x.rows, x.cols)
    let size = c / groups
    var out = Tensor(zeros: x.shape)
    for r in 0..<rows {
        for g in 0..<groups {
            let base = r * c + g * size
            var ss: Float = 0
            for j in 0..<size { ss += x.storage[base + j] * x.storage[base + j] }
            let inv = 1 / (ss / Float(size) + eps).squareRoot()
            for j in 0..<size { out.storage[base + j] = (weight?.storage[g * size + j] ?? 1) * (x.storage[base + j] * inv) }
        }
    }
    return out
}

/// x times a scalar (Granite's and Falcon-H1's multipliers); x itself when the scalar is 1. Taken
/// as consuming, so a fresh result (a linear's output) is scaled in place, not copied.
public func scaled(_ x: consuming Tensor, _ s: Float) -> Tensor {
    guard s != 1 else { return x }
    x.storage.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] *= s } }
    return x
}

/// x += y * m elementwise (the residual add, a mixture's shared MLP, Falcon-H1's two halves).
func add(_ y: Tensor, to x: inout Tensor, times m: Float = 1) {
    precondition(x.count == y.count)
    x.storage.withUnsafeMutableBufferPointer { xp in
        y.storage.withUnsafeBufferPointer { yp in
            if m == 1 {
                for j in 0..<xp.count { xp[j] += yp[j] }
            } else {
                for j in 0..<xp.count { xp[j] += yp[j] * m }
            }
        }
    }
}

/// Every row's columns `segments[i].columns` times `segments[i].scale`, in place (Falcon-H1's
/// per-part multipliers of in_proj's output).
func scaleColumns(_ x: inout Tensor, segments: [(columns: Range<Int>, scale: Float)]) {
    let (rows, c) = (x.rows, x.cols)
    x.storage.withUnsafeMutableBufferPointer { p in
        for r in 0..<rows {
            for (columns, s) in segments where s != 1 {
                for j in columns { p[r * c + j] *= s }
            }
        }
    }
}
