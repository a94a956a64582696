import CMambaKernels
import MambaModel
import MambaTensors

// The quantized model's ops on the int8 runtime (docs/DESIGN.md section 3): activations quantized to
// int8 rows, weights packed once at load, an int8 x int8 -> int32 GEMM with a float epilogue
// (CMambaKernels/int8.c). They compute the same integers as the reference ops in ReferenceOps.swift
// and differ from them only by float rounding (tested in Int8OpsTests).

/// Which kernels a quantized model runs on.
public enum QuantizedRuntime: String, Sendable, CaseIterable {
    /// int8 GEMM for the per-channel linears (the default).
    case int8
    /// Quantize-dequantize in float32 (the definition the int8 path is tested against).
    case reference
}

/// A weight matrix packed for mq_gemm_s8: panels of 16 output rows, K padded to 4; values of at
/// most 4 bits in int4 panels (two per byte, mamba_int8.h), the rest one per byte. With `block`,
/// also its scales and column sums per block of K in the blocked GEMM's order (weight groups, or
/// per-channel scales repeated across the blocks of a block-scaled input).
public struct PackedInt8Matrix: Sendable {
    public let rows: Int
    public let cols: Int
    /// 8, or 4: `packed` holds int4 panels (mq_s4_pack).
    public let weightBits: Int
    let packed: [Int8]
    let columnSums: [Int32]
    /// The weights' own scales: [rows], or [rows, groups] with `groupSize`.
    let scales: [Float]
    let groupSize: Int?
    /// Columns per block of the blocked GEMM (nil: one scale per output channel, mq_gemm_s8).
    public let block: Int?
    let blockScales: [Float]
    let blockSums: [Int32]

    /// Whether the int8 kernels take these weights with input blocks of `inputBlock` (nil: one
    /// scale per row): group sizes and blocks must be multiples of 4 (of 8 for int4 panels, whose
    /// loads hold two k-steps) and agree.
    public static func supports(_ w: QuantizedMatrix, inputBlock: Int?) -> Bool {
        let step = Int(MQ_S8_KSTEP) * (w.bits <= 4 ? 2 : 1)
        switch (w.groupSize, inputBlock) {
        case (nil, nil): return true
        case (let g?, nil): return g % step == 0
        case (nil, let b?): return b % step == 0
        case (let g?, let b?): return g == b && g % step == 0
        }
    }

    public init(_ w: QuantizedMatrix, inputBlock: Int? = nil) {
        precondition(Self.supports(w, inputBlock: inputBlock), "the int8 GEMM takes groups and input blocks that are equal multiples of 4")
        rows = w.rows
        cols = w.cols
        weightBits = w.bits <= 4 ? 4 : 8
        var packed = [Int8](repeating: 0, count: mq_s8_packed_bytes(Int32(w.rows), Int32(w.cols)))
        var sums = [Int32](repeating: 0, count: w.rows)
        w.values.withUnsafeBufferPointer { v in
            packed.withUnsafeMutableBufferPointer { p in
                sums.withUnsafeMutableBufferPointer { s in
                    mq_s8_pack(v.baseAddress, Int32(w.rows), Int32(w.cols), Int32(w.cols), p.baseAddress, s.baseAddress)
                }
            }
        }
        if weightBits == 4 {
            precondition(w.values.allSatisfy { $0 >= -8 && $0 <= 7 }, "int4 panels hold values in [-8, 7]")
            var half = [Int8](repeating: 0, count: mq_s4_packed_bytes(Int32(w.rows), Int32(w.cols)))
            half.withUnsafeMutableBytes { h in
                mq_s4_pack(packed, Int32(w.rows), Int32(w.cols), h.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
            packed = half
        }
        self.packed = packed
        columnSums = sums
        scales = w.scales
        groupSize = w.groupSize
        block = w.groupSize ?? inputBlock
        guard let block else {
            blockScales = []
            blockSums = []
            return
        }
        let nb = Int(mq_s8_block_count(Int32(w.cols), Int32(block)))
        var rowScales = [Float](repeating: 0, count: w.rows * nb), rowSums = [Int32](repeating: 0, count: w.rows * nb)
        for j in 0..<w.rows {
            for b in 0..<nb {
                rowScales[j * nb + b] = w.groupSize == nil ? w.scales[j] : w.scales[j * nb + b]
                var total: Int32 = 0
                for t in (b * block)..<min(w.cols, (b + 1) * block) { total += Int32(w.values[j * w.cols + t]) }
                rowSums[j * nb + b] = total
            }
        }
        let paddedCount = (w.rows + Int(MQ_S8_PANEL) - 1) / Int(MQ_S8_PANEL) * Int(MQ_S8_PANEL) * nb
        var ps = [Float](repeating: 0, count: paddedCount), pc = [Int32](repeating: 0, count: paddedCount)
        mq_s8_pack_block_scales(rowScales, rowSums, Int32(w.rows), Int32(nb), &ps, &pc)
        blockScales = ps
        blockSums = pc
    }

    public var panels: Int { (rows + Int(MQ_S8_PANEL) - 1) / Int(MQ_S8_PANEL) }

    /// The packed weights, per-block column sums and per-block scales, for a direct kernel call.
    public func withBlockedPointers<R>(_ body: (UnsafePointer<Int8>, UnsafePointer<Int32>, UnsafePointer<Float>) -> R) -> R {
        precondition(block != nil, "not packed for the blocked GEMM")
        return packed.withUnsafeBufferPointer { p in
            blockSums.withUnsafeBufferPointer { s in blockScales.withUnsafeBufferPointer { body(p.baseAddress!, s.baseAddress!, $0.baseAddress!) } }
        }
    }

    public var bytes: Int { packed.count + 4 * (columnSums.count + scales.count + blockScales.count + blockSums.count) }
}

/// The embedding lookup of a tied head (QuantizedModel.tiedHead): rows are read back from the
/// head's packed panels (mq_packed_row) and scaled, so the table is in memory once, in the GEMM's
/// layout. The same floats as QuantizedEmbedding over the unpacked table.
public struct PackedTableEmbedding: EmbeddingOp {
    public let table: PackedInt8Matrix

    public init(table: PackedInt8Matrix) { self.table = table }
    public var vocabSize: Int { table.rows }

    public func forward(_ tokens: [Int]) -> Tensor {
        let d = table.cols
        var row = [Int8](repeating: 0, count: d)
        return Tensor(shape: [tokens.count, d]) { out in
            table.packed.withUnsafeBufferPointer { p in
                for (i, t) in tokens.enumerated() {
                    mq_packed_row(p.baseAddress, Int32(table.weightBits), Int32(d), Int32(t), &row)
                    dequantizeRow(row, row: t, cols: d, scales: table.scales, groupSize: table.groupSize, into: out.baseAddress! + i * d)
                }
            }
        }
    }
}

/// Activations quantized to int8 rows (zero padded to the GEMM's K) with one scale per row, or
/// with `block`, one per row and block: [rows, ceil(cols / block)].
public struct Int8Rows {
    public let rows: Int
    public let cols: Int
    public let stride: Int
    public var values: [Int8]
    public var scales: [Float]

    /// Quantizes x [rows, cols] with the quantizer's static scale, a dynamic one per row, or
    /// dynamic ones per row and block, exactly as ActivationQuantizer.fakeQuantize rounds (half
    /// away from zero, clamp to +-qmax). With `rotation`, each row is rotated first (in a row of
    /// scratch that stays in cache, one pass over x) and quantized as the rotated tensor would be.
    /// `repeatedOver` blocks repeats a row's one scale (a per-row input of a block-scaled weight).
    public init(quantizing x: Tensor, with quantizer: ActivationQuantizer, rotatedBy rotation: OnlineHadamard? = nil,
                repeatedOver blocks: Int? = nil, _ parallelism: Parallelism) {
        precondition(rotation == nil || rotation!.size == x.cols, "a rotation of \(rotation?.size ?? 0) columns for an input of \(x.cols)")
        rows = x.rows
        cols = x.cols
        stride = Int(mq_s8_padded_k(Int32(x.cols)))
        let q = qmax(bits: quantizer.bits)
        let (m, k, ldq) = (rows, cols, stride)
        let block = quantizer.scale.block
        let nb = block.map { Int(mq_s8_block_count(Int32(k), Int32($0))) } ?? 1
        var values = [Int8](repeating: 0, count: m * ldq)
        var scales = [Float](repeating: 0, count: m * nb)
        if case .static(let s) = quantizer.scale { for i in 0..<m { scales[i] = s } }
        let dynamic = quantizer.scale == .dynamic
        precondition(block != nil || dynamic || quantizer.scale.staticScale != nil, "group scales quantize scan inputs only, not a module's input")
        x.storage.withUnsafeBufferPointer { xp in
            values.withUnsafeMutableBufferPointer { vp in
                scales.withUnsafeMutableBufferPointer { sp in
                    let (src, dst, sc) = (UncheckedSendable(xp.baseAddress!), UncheckedSendable(vp.baseAddress!), UncheckedSendable(sp.baseAddress!))
                    parallelism.forEachChunk(m, minimumChunk: 64) { r in
                        // A rotated row and the transform's own scratch.
                        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: rotation == nil ? 0 : 2 * k)
                        defer { scratch.deallocate() }
                        for i in r {
                            var row = UnsafePointer(src.value + i * k)
                            if let rotation {
                                scratch.update(from: row, count: k)
                                rotation.rotateRows(scratch, rows: 1, scratch: scratch + k)
                                row = UnsafePointer(scratch)
                            }
                            let out = dst.value + i * ldq
                            if let block {
                                mq_quantize_blocks_s8(row, 1, Int32(k), Int32(k), Int32(block), Int32(q), out, Int32(ldq), sc.value + i * nb)
                                continue
                            }
                            if dynamic {   // absmax / qmax, as ActivationQuantizer.rowScales
                                var absmax: Float = 0
                                mq_absmax_rows_f32(row, 1, Int32(k), Int32(k), &absmax)
                                sc.value[i] = absmax / Float(q)
                            }
                            var inverse: Float = sc.value[i] > 0 ? 1 / sc.value[i] : 0
                            mq_quantize_rows_s8(row, 1, Int32(k), Int32(k), &inverse, Int32(q), out, Int32(ldq))
                        }
                    }
                }
            }
        }
        self.scales = blocks.map { n in scales.flatMap { [Float](repeating: $0, count: n) } } ?? scales
        self.values = values
    }
}

/// y = dequant(quant(x) * W_q^T) + b with int32 accumulation: the W8A8 linear.
public struct Int8Linear: LinearOp {
    public let weight: PackedInt8Matrix
    public let bias: Tensor?
    public let input: ActivationQuantizer

    public init(weight: QuantizedMatrix, bias: Tensor?, input: ActivationQuantizer) {
        self.weight = PackedInt8Matrix(weight, inputBlock: input.scale.block)
        self.bias = bias
        self.input = input
    }

    public var inFeatures: Int { weight.cols }
    public var outFeatures: Int { weight.rows }

    public func forward(_ x: Tensor, _ parallelism: Parallelism) -> Tensor {
        run(x, rotatedBy: nil, parallelism)
    }

    /// The online rotation fused into the input's quantization: each row rotated in cache on its
    /// way to int8, no rotated copy of x written (docs/DESIGN.md section 3).
    public func forward(_ x: Tensor, rotatedBy rotation: OnlineHadamard, _ parallelism: Parallelism) -> Tensor {
        run(x, rotatedBy: rotation, parallelism)
    }

    /// Block-scaled weights' GEMM (int8_blocked.c) has no column quantizer in its epilogue.
    public var quantizesColumns: Bool { weight.block == nil }

    /// The conv's input quantized in the GEMM's epilogue (mq_s8_column_quantizer): the columns in
    /// `columns` are written as int8 at the input's row K-1 on, never as floats. Nil for
    /// block-scaled weights, whose GEMM has no such epilogue.
    public func forward(_ x: Tensor, quantizing columns: Range<Int>, into input: inout QuantizedConvInput,
                        _ parallelism: Parallelism) -> (before: Tensor, after: Tensor)? {
        guard quantizesColumns else { return nil }
        precondition(x.cols == weight.cols, "int8 linear expects \(weight.cols) input features, got \(x.cols)")
        precondition(columns.lowerBound >= 0 && columns.upperBound <= weight.rows && columns.count == input.channels && x.rows == input.rows,
                     "columns \(columns) of \(weight.rows) into a conv input of \(input.rows) x \(input.channels)")
        let a = profiled("quantize") { Int8Rows(quantizing: x, with: self.input, repeatedOver: nil, parallelism) }
        return profiled("gemm") {
            var after = Tensor(zeros: [0])
            let before = Tensor(shape: [x.rows, columns.lowerBound]) { y in
                after = Tensor(shape: [x.rows, weight.rows - columns.upperBound]) { rest in
                    input.values.withUnsafeMutableBufferPointer { q in
                        var quantizer = mq_s8_column_quantizer(
                            begin: Int32(columns.lowerBound), end: Int32(columns.upperBound), inv_scale: input.inverseScale, qmax: Int32(input.qmax),
                            q: q.baseAddress! + input.historyRows * input.channels, ldq: Int32(input.channels),
                            after: rest.baseAddress, ldafter: Int32(weight.rows - columns.upperBound))
                        withUnsafePointer(to: &quantizer) { Self.gemm(a, weight, bias: bias?.storage, into: y, quantizing: $0, parallelism) }
                    }
                }
            }
            return (before, after)
        }
    }

    private func run(_ x: Tensor, rotatedBy rotation: OnlineHadamard?, _ parallelism: Parallelism) -> Tensor {
        precondition(x.cols == weight.cols, "int8 linear expects \(weight.cols) input features, got \(x.cols)")
        let repeated = weight.block != nil && input.scale.block == nil ? Int(mq_s8_block_count(Int32(weight.cols), Int32(weight.block!))) : nil
        let a = profiled(rotation == nil ? "quantize" : "hadamard+quantize") {
            Int8Rows(quantizing: x, with: input, rotatedBy: rotation, repeatedOver: repeated, parallelism)
        }
        return profiled("gemm") {
            Tensor(shape: [x.rows, weight.rows]) { y in
                if weight.block != nil { Self.blockedGEMM(a, weight, bias: bias?.storage, into: y, parallelism) }
                else { Self.gemm(a, weight, bias: bias?.storage, into: y, parallelism) }
            }
        }
    }

    /// Panels per thread so that each has the budget's minimum work per thread to do.
    static func minimumPanelsPerThread(_ a: Int8Rows, _ w: PackedInt8Matrix, _ parallelism: Parallelism) -> Int {
        max(1, parallelism.minimumWorkPerThread / max(1, a.rows * w.cols * Int(MQ_S8_PANEL)))
    }

    /// The blocked GEMM (scales per block of K) with the panels split between threads.
    static func blockedGEMM(_ a: Int8Rows, _ w: PackedInt8Matrix, bias: [Float]?, into y: UnsafeMutableBufferPointer<Float>, _ parallelism: Parallelism) {
        let (m, n, k, lda, block, bits) = (Int32(a.rows), Int32(w.rows), Int32(w.cols), Int32(a.stride), Int32(w.block!), Int32(w.weightBits))
        let minimumPanels = minimumPanelsPerThread(a, w, parallelism)
        withPointers(a.values, a.scales, w.packed, w.blockSums, w.blockScales, bias) { av, asc, wp, cs, ws, b in
            let out = UncheckedSendable(y.baseAddress!)
            parallelism.forEachChunk(w.panels, minimumChunk: minimumPanels) { panels in
                var args = mq_gemm_s8_blocked_args(
                    m: m, n: n, k: k, block: block, a: av.value, lda: lda, packed: wp.value, col_sums: cs.value,
                    panel_begin: Int32(panels.lowerBound), panel_end: Int32(panels.upperBound),
                    a_scale: asc.value, w_scale: ws.value, bias: b?.value, c: out.value, ldc: n, weight_bits: bits)
                mq_gemm_s8_blocked(&args)
            }
        }
    }

    /// y[i, j] = acc[i, j] * a.scales[i] * w.scales[j] + bias[j], the panels split between threads
    /// (at one row, the decode step, each thread streams its own part of the weights). With
    /// `quantizer`, its columns go to its integers and y holds the others.
    static func gemm(_ a: Int8Rows, _ w: PackedInt8Matrix, bias: [Float]?, into y: UnsafeMutableBufferPointer<Float>,
                     quantizing quantizer: UnsafePointer<mq_s8_column_quantizer>? = nil, _ parallelism: Parallelism) {
        let (m, n, k, lda, bits) = (Int32(a.rows), Int32(w.rows), Int32(w.cols), Int32(a.stride), Int32(w.weightBits))
        let ldc = quantizer?.pointee.begin ?? n   // with a quantizer, c holds the columns before its range
        let minimumPanels = minimumPanelsPerThread(a, w, parallelism)
        let columns = UncheckedSendable(quantizer)
        withPointers(a.values, a.scales, w.packed, w.columnSums, w.scales, bias) { av, asc, wp, cs, ws, b in
            let out = UncheckedSendable(y.baseAddress)   // nil where a quantizer's range starts at column 0
            parallelism.forEachChunk(w.panels, minimumChunk: minimumPanels) { panels in
                var args = mq_gemm_s8_args(
                    m: m, n: n, k: k, a: av.value, lda: lda, packed: wp.value, col_sums: cs.value,
                    panel_begin: Int32(panels.lowerBound), panel_end: Int32(panels.upperBound),
                    a_scale: asc.value, w_scale: ws.value, bias: b?.value, c: out.value, ldc: ldc, acc: nil, ldacc: 0, weight_bits: bits,
                    quantized_columns: columns.value)
                mq_gemm_s8(&args)
            }
        }
    }
}

/// The depthwise causal conv on integers: out[t, e] = acc[t, e] * s_x * s_w[e] + bias[e] with
/// acc = sum_j w_q[j, e] * x_q[t + j, e] in int32. Static input scale only (one scale must hold
/// across the K time steps a sum mixes; dynamic scales run the reference conv). The state holds
/// the last K-1 quantized inputs as integer-valued floats.
public struct Int8Conv: ConvOp {
    let weightKE: [Int8]       // [K, E], transposed so the channel loop is contiguous
    let outScale: [Float]      // [E]: s_x * s_w[e]
    let bias: [Float]          // [E]
    let inputScale: Float
    /// 1 / inputScale (0 for a zero scale): what every quantization of the input multiplies by.
    var inverseScale: Float { inputScale > 0 ? 1 / inputScale : 0 }
    let bits: Int
    public let kernelSize: Int
    public let channels: Int

    public init(weight: QuantizedMatrix, bias: Tensor?, input: ActivationQuantizer) {
        guard let s = input.scale.staticScale else { preconditionFailure("Int8Conv needs a static input scale") }
        precondition(weight.groupSize == nil)
        let (e, k) = (weight.rows, weight.cols)
        var t = [Int8](repeating: 0, count: e * k)
        for c in 0..<e { for j in 0..<k { t[j * e + c] = weight.values[c * k + j] } }
        weightKE = t
        outScale = weight.scales.map { $0 * s }
        self.bias = bias?.storage ?? [Float](repeating: 0, count: e)
        inputScale = s
        bits = input.bits
        kernelSize = k
        channels = e
    }

    public func forward(_ x: Tensor, state: inout [Float], _ parallelism: Parallelism) -> Tensor {
        run(x, state: &state, silu: false, parallelism)
    }

    /// The conv with its SiLU applied to each output row as it is finished (mq_conv_silu_s8);
    /// `silu(forward(x))` is its reference.
    public func forwardSiLU(_ x: Tensor, state: inout [Float], _ parallelism: Parallelism) -> Tensor {
        run(x, state: &state, silu: true, parallelism)
    }

    private func run(_ x: Tensor, state: inout [Float], silu: Bool, _ parallelism: Parallelism) -> Tensor {
        let (l, e, k) = (x.rows, x.cols, kernelSize)
        precondition(e == channels && state.count == (k - 1) * e, "int8 conv expects \(channels) channels and a state of \(k - 1) rows")
        let qmax = MambaQuantization.qmax(bits: bits)
        if l == 1 && k * qmax * qmax < 1 << 24 {   // a decode step: mq_conv_step_s8's float sums are exact
            return Tensor(shape: [1, e]) { o in
                x.storage.withUnsafeBufferPointer { xp in
                    state.withUnsafeMutableBufferPointer { sp in
                        mq_conv_step_s8(sp.baseAddress, xp.baseAddress!, Int32(e), Int32(k), inverseScale, Int32(qmax),
                                        weightKE, outScale, bias, o.baseAddress!, silu ? 1 : 0)
                    }
                }
            }
        }
        // [K-1+L, E] integers: the state's rows, then this call's inputs quantized.
        var input = makeInput(rows: l, state: state)
        let inverse = [Float](repeating: input.inverseScale, count: l)
        x.storage.withUnsafeBufferPointer { xp in
            input.values.withUnsafeMutableBufferPointer { qp in
                mq_quantize_rows_s8(xp.baseAddress, Int32(l), Int32(e), Int32(e), inverse, Int32(qmax),
                                    qp.baseAddress! + (k - 1) * e, Int32(e))
            }
        }
        return convolve(input, state: &state, silu: silu, parallelism)
    }

    /// A prompt's input for in_proj's epilogue to fill (decode's one row keeps mq_conv_step_s8,
    /// which quantizes inline and needs no int8 copy of the state).
    public func quantizedInput(rows: Int, state: [Float]) -> QuantizedConvInput? {
        rows > 1 ? makeInput(rows: rows, state: state) : nil
    }

    public func forwardSiLU(_ input: QuantizedConvInput, state: inout [Float], _ parallelism: Parallelism) -> Tensor {
        precondition(input.channels == channels && input.historyRows == kernelSize - 1 && input.qmax == MambaQuantization.qmax(bits: bits)
                     && input.inverseScale == inverseScale, "a conv input quantized for another conv")
        return convolve(input, state: &state, silu: true, parallelism)
    }

    /// [K-1+L, E] integers, the state's K-1 rows filled and the L rows zero.
    private func makeInput(rows l: Int, state: [Float]) -> QuantizedConvInput {
        let (e, k, qmax) = (channels, kernelSize, MambaQuantization.qmax(bits: bits))
        precondition(state.count == (k - 1) * e, "int8 conv expects a state of \(k - 1) rows of \(e)")
        var q = [Int8](repeating: 0, count: (k - 1 + l) * e)
        q.withUnsafeMutableBufferPointer { qp in
            // The state holds integers in [-qmax, qmax] as floats, so quantizing them with
            // scale 1 is an exact copy, and a vector one (Swift's checked Int8(Float) is a
            // scalar loop with a trap per value).
            let one: Float = 1
            state.withUnsafeBufferPointer { sp in
                mq_quantize_rows_s8(sp.baseAddress, 1, Int32((k - 1) * e), Int32((k - 1) * e), [one], Int32(qmax),
                                    qp.baseAddress!, Int32((k - 1) * e))
            }
        }
        return QuantizedConvInput(rows: l, channels: e, historyRows: k - 1, inverseScale: inverseScale, qmax: qmax, values: q)
    }

    /// The conv (and SiLU) over a filled input; the state takes its last K-1 rows.
    private func convolve(_ input: QuantizedConvInput, state: inout [Float], silu: Bool, _ parallelism: Parallelism) -> Tensor {
        let (l, e, k) = (input.rows, channels, kernelSize)
        let q = input.values
        let out = Tensor(shape: [l, e]) { o in
            q.withUnsafeBufferPointer { qp in
                weightKE.withUnsafeBufferPointer { w in
                    outScale.withUnsafeBufferPointer { os in
                        bias.withUnsafeBufferPointer { b in
                            let (qv, wv, osv, bv, ov) = (UncheckedSendable(qp.baseAddress!), UncheckedSendable(w.baseAddress!),
                                                         UncheckedSendable(os.baseAddress!), UncheckedSendable(b.baseAddress!),
                                                         UncheckedSendable(o.baseAddress!))
                            parallelism.forEachChunk(l, minimumChunk: 32) { t in
                                let conv = silu ? mq_conv_silu_s8 : mq_conv_s8
                                conv(qv.value, Int32(t.lowerBound), Int32(t.upperBound), Int32(e), Int32(k), wv.value, osv.value, bv.value, ov.value)
                            }
                        }
                    }
                }
            }
        }
        q.withUnsafeBufferPointer { qp in
            state.withUnsafeMutableBufferPointer { sp in for i in 0..<((k - 1) * e) { sp[i] = Float(qp[l * e + i]) } }
        }
        return out
    }
}

/// Base addresses of the GEMM's read-only inputs, wrapped for the worker threads (which only read).
private func withPointers<R>(
    _ a: [Int8], _ aScale: [Float], _ packed: [Int8], _ sums: [Int32], _ wScale: [Float], _ bias: [Float]?,
    _ body: (UncheckedSendable<UnsafePointer<Int8>>, UncheckedSendable<UnsafePointer<Float>>, UncheckedSendable<UnsafePointer<Int8>>,
             UncheckedSendable<UnsafePointer<Int32>>, UncheckedSendable<UnsafePointer<Float>>, UncheckedSendable<UnsafePointer<Float>>?) -> R
) -> R {
    a.withUnsafeBufferPointer { ap in
        aScale.withUnsafeBufferPointer { asp in
            packed.withUnsafeBufferPointer { pp in
                sums.withUnsafeBufferPointer { sp in
                    wScale.withUnsafeBufferPointer { wsp in
                        func run(_ b: UnsafePointer<Float>?) -> R {
                            body(UncheckedSendable(ap.baseAddress!), UncheckedSendable(asp.baseAddress!), UncheckedSendable(pp.baseAddress!),
                                 UncheckedSendable(sp.baseAddress!), UncheckedSendable(wsp.baseAddress!), b.map { UncheckedSendable($0) })
                        }
                        guard let bias else { return run(nil) }
                        return bias.withUnsafeBufferPointer { run($0.baseAddress!) }
                    }
                }
            }
        }
    }
}

extension QuantizedRuntime: CustomStringConvertible {
    /// What runs, for reports: the int8 kernel path this CPU takes.
    public var description: String {
        switch self {
        case .reference: return "reference (dequantized float32)"
        case .int8:
            switch mq_s8_level() {
            case 3: return "int8 (AMX; AVX-512 VNNI below 8 rows)"
            case 2: return "int8 (AVX-512 VNNI)"
            case 1: return "int8 (AVX2)"
            default: return "int8 (scalar)"
            }
        }
    }
}
