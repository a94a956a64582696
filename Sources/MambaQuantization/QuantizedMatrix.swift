import CMambaKernels
import MambaTensors
import MambaTransforms

/// Symmetric integer quantization (docs/DESIGN.md section 2): round half away from zero, then clamp to
/// [-qmax, qmax]; -qmax - 1 (e.g. -128) is never produced.
@inline(__always)
public func quantizeSymmetric(_ x: Float, inverseScale: Float, qmax: Float) -> Float {
    let v = (x * inverseScale).rounded(.toNearestOrAwayFromZero)
    return min(max(v, -qmax), qmax)
}

public func qmax(bits: Int) -> Int { (1 << (bits - 1)) - 1 }

/// A weight matrix [rows, cols] as integers with one scale per row (per output channel) or per
/// group of `groupSize` columns within a row. In memory every value is one byte (int4 values in
/// [-7, 7]); on disk int4 values are packed two per byte (format version 2, `packedInt4`).
public struct QuantizedMatrix: Sendable, Equatable {
    public let rows: Int
    public let cols: Int
    public let bits: Int
    public let groupSize: Int?            // nil: one scale per row
    public var values: [Int8]             // [rows, cols]
    public var scales: [Float]            // [rows] or [rows, cols / groupSize]

    public init(rows: Int, cols: Int, bits: Int, groupSize: Int?, values: [Int8], scales: [Float]) {
        self.rows = rows; self.cols = cols; self.bits = bits; self.groupSize = groupSize; self.values = values; self.scales = scales
    }

    public var groupsPerRow: Int { groupSize.map { (cols + $0 - 1) / $0 } ?? 1 }
    public var scaleShape: [Int] { groupSize == nil ? [rows] : [rows, groupsPerRow] }

    /// Quantizes `w` (Double). At 4 bits or fewer a per-scale clipping search picks the range
    /// (a fraction of the absmax) that minimizes the squared error of that row or group.
    public init(quantizing w: Matrix, bits: Int, groupSize: Int? = nil, threads: Int = 1) {
        precondition(bits >= 2 && bits <= 8)
        if let g = groupSize { precondition(g > 0) }
        let q = Double(qmax(bits: bits))
        let group = groupSize ?? w.cols
        let groups = (w.cols + group - 1) / group
        var values = [Int8](repeating: 0, count: w.rows * w.cols)
        var scales = [Float](repeating: 0, count: w.rows * groups)
        let ratios: [Double] = bits <= 4 ? stride(from: 1.0, through: 0.5, by: -0.025).map { $0 } : [1.0]
        let cols = w.cols
        // Rows through raw pointers (the search touches every value 21 times at 4 bits: it was most
        // of quantize's time on the head, 50280 x 768, through the Matrix subscript), split between
        // threads: rows are independent, so the values are the same on any count.
        w.data.withUnsafeBufferPointer { wp in
            values.withUnsafeMutableBufferPointer { vp in
                scales.withUnsafeMutableBufferPointer { sp in
                    let (x, v, sc) = (UncheckedSendable(wp.baseAddress!), UncheckedSendable(vp.baseAddress!), UncheckedSendable(sp.baseAddress!))
                    Parallelism(threads: threads).forEachChunk(w.rows, minimumChunk: 64) { rows in
                        for r in rows {
                            for gi in 0..<groups {
                                let offset = r * cols + gi * group
                                sc.value[r * groups + gi] = Self.quantizeGroup(x.value + offset, count: min(cols, (gi + 1) * group) - gi * group,
                                                                               ratios: ratios, qmax: q, into: v.value + offset)
                            }
                        }
                    }
                }
            }
        }
        self.init(rows: w.rows, cols: w.cols, bits: bits, groupSize: groupSize, values: values, scales: scales)
    }

    /// One row or group: the scale among `ratios` of the absmax with the least squared error, and
    /// its integers written to `out`. The values are narrowed to float32 once and every candidate
    /// rounded through the int8 kernels' row quantizer (`mq_quantize_rows_s8`: quantizeSymmetric's
    /// rounding and clamp, vectorized) into `out`, which the winner's integers overwrite last; each
    /// candidate's error is summed in Double in column order, as before, so the same scale wins.
    /// Per value in Swift each rounding was a libm roundf call and a checked conversion (7% of
    /// quantize's time at the 1.4B shape in 8 bits, docs/PERFORMANCE.md "Big models: quantize
    /// time"; most of the 4-bit search).
    static func quantizeGroup(_ x: UnsafePointer<Double>, count: Int, ratios: [Double], qmax q: Double, into out: UnsafeMutablePointer<Int8>) -> Float {
        var absmax = 0.0
        for j in 0..<count { absmax = max(absmax, abs(x[j])) }
        return withUnsafeTemporaryAllocation(of: Float.self, capacity: count) { f in
            for j in 0..<count { f[j] = Float(x[j]) }
            func roundValues(on scale: Float) {
                var inverse: Float = scale > 0 ? 1 / scale : 0
                mq_quantize_rows_s8(f.baseAddress, 1, Int32(count), Int32(count), &inverse, Int32(q), out, Int32(count))
            }
            var best = (error: Double.infinity, scale: Float(0))
            for ratio in ratios {
                let scale = Float(absmax * ratio / q)
                guard scale > 0 else { best = (0, 0); break }
                // One candidate (8 bits) needs no error to choose it: a third of the passes over the values.
                if ratios.count == 1 { best = scale.isFinite ? (0, scale) : best; break }
                roundValues(on: scale)
                var err = 0.0
                for j in 0..<count {
                    let v = Double(out[j]) * Double(scale)
                    err += (v - x[j]) * (v - x[j])
                }
                if err < best.error { best = (err, scale) }
            }
            roundValues(on: best.scale)
            return best.scale
        }
    }

    /// Bytes per row when int4 values are packed two per byte.
    public static func packedInt4Columns(_ cols: Int) -> Int { (cols + 1) / 2 }

    /// int4 values two per byte, row by row (FORMAT.md): column 2i in the low nibble, 2i + 1 in the
    /// high one, each as 4-bit two's complement; an odd row ends with a zero high nibble.
    public var packedInt4: [UInt8] {
        precondition(bits <= 4, "only values of at most 4 bits pack two per byte")
        let pc = Self.packedInt4Columns(cols)
        var out = [UInt8](repeating: 0, count: rows * pc)
        for r in 0..<rows {
            for j in 0..<cols {
                let nibble = UInt8(bitPattern: values[r * cols + j]) & 0x0F
                out[r * pc + j / 2] |= j % 2 == 0 ? nibble : nibble << 4
            }
        }
        return out
    }

    /// The inverse of `packedInt4`: nibbles sign-extended back to one value per byte.
    public static func unpackInt4(_ packed: [UInt8], rows: Int, cols: Int) -> [Int8] {
        let pc = packedInt4Columns(cols)
        precondition(packed.count == rows * pc)
        var out = [Int8](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for j in 0..<cols {
                let byte = packed[r * pc + j / 2]
                let nibble = j % 2 == 0 ? byte & 0x0F : byte >> 4
                out[r * cols + j] = Int8(bitPattern: nibble << 4) >> 4   // sign-extend the low 4 bits
            }
        }
        return out
    }

    /// The float matrix the integers stand for.
    public func dequantized() -> Tensor {
        let group = groupSize ?? cols
        let groups = groupsPerRow
        var out = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for j in 0..<cols { out[r * cols + j] = Float(values[r * cols + j]) * scales[r * groups + j / group] }
        }
        return Tensor(shape: [rows, cols], storage: out)
    }
}

/// How a layer's input is quantized: a static per-tensor scale from calibration, or a dynamic
/// scale per token (row) computed at run time.
public enum ActivationScale: Sendable, Equatable {
    case `static`(Float)
    case dynamic
    /// Static, one scale per contiguous group of channels (Mamba-2's scan inputs per head or per
    /// B/C group, as Quamba2 quantizes them); only for activations consumed in float.
    case groups([Float])
    /// Dynamic, one scale per row and block of this many columns (llama.cpp's Q8_0 activations:
    /// blocks of 32 along the input dimension).
    case dynamicBlocks(Int)

    /// The block size of `.dynamicBlocks`.
    public var block: Int? {
        if case .dynamicBlocks(let b) = self { return b }
        return nil
    }

    public var staticScale: Float? {
        if case .static(let s) = self { return s }
        return nil
    }

    /// The stored scales: one for a static scale, one per group, none when dynamic.
    public var storedScales: [Float]? {
        switch self {
        case .static(let s): [s]
        case .groups(let g): g
        case .dynamic, .dynamicBlocks: nil
        }
    }
}

/// Quantize-dequantize of activations (the reference path; the int8 kernels keep the integers).
public struct ActivationQuantizer: Sendable, Equatable {
    public let bits: Int
    public let scale: ActivationScale

    public init(bits: Int, scale: ActivationScale) {
        self.bits = bits
        self.scale = scale
    }

    /// The scale of each row of x [rows, cols]: the static scale, or absmax / qmax per row.
    public func rowScales(_ x: Tensor) -> [Float] {
        switch scale {
        case .groups: preconditionFailure("group scales quantize scan inputs only, not a module's input")
        case .dynamicBlocks: preconditionFailure("block scales are per row and block, not per row: use blockScales")
        case .static(let s): return [Float](repeating: s, count: x.rows)
        case .dynamic:
            var scales = [Float](repeating: 0, count: x.rows)
            mq_absmax_rows_f32(x.storage, Int32(x.rows), Int32(x.cols), Int32(x.cols), &scales)
            let q = Float(qmax(bits: bits))
            for r in scales.indices { scales[r] /= q }
            return scales
        }
    }

    /// x -> clamp(round(x / scale)) * scale in place (CMambaKernels' mq_fake_quantize_rows_f32).
    public func fakeQuantize(_ x: inout Tensor) {
        let (rows, c) = (x.rows, x.cols)
        if case .groups(let g) = scale {
            let size = c / g.count
            precondition(size * g.count == c, "\(g.count) scale groups do not divide \(c) channels")
            x.storage.withUnsafeMutableBufferPointer { p in
                for (k, s) in g.enumerated() {
                    var one = s
                    mq_fake_quantize_rows_f32(p.baseAddress! + k * size, Int32(rows), Int32(size), Int32(c), &one, 0, Int32(qmax(bits: bits)))
                }
            }
            return
        }
        if let block = scale.block {
            let nb = (c + block - 1) / block
            let scales = blockScales(x, block: block)
            x.storage.withUnsafeMutableBufferPointer { p in
                for b in 0..<nb {
                    let width = min(block, c - b * block)
                    let column = (0..<rows).map { scales[$0 * nb + b] }
                    mq_fake_quantize_rows_f32(p.baseAddress! + b * block, Int32(rows), Int32(width), Int32(c), column, 1, Int32(qmax(bits: bits)))
                }
            }
            return
        }
        let scales = rowScales(x)
        x.storage.withUnsafeMutableBufferPointer { p in
            mq_fake_quantize_rows_f32(p.baseAddress, Int32(rows), Int32(c), Int32(c), scales, 1, Int32(qmax(bits: bits)))
        }
    }

    /// fakeQuantize of columns `columns` of x, in place. Static and group scales quantize the block
    /// where it lies (x's row stride; the same bits as on a copy); the kinds whose scales depend on
    /// the values (dynamic, blocks) quantize a copy and write it back.
    public func fakeQuantize(_ x: inout Tensor, columns: Range<Int>) {
        let (rows, c, width, q) = (x.rows, x.cols, columns.count, Int32(qmax(bits: bits)))
        precondition(columns.lowerBound >= 0 && columns.upperBound <= c, "columns \(columns) of \(c)")
        let parts: [(offset: Int, scale: Float)]
        switch scale {
        case .static(let s): parts = [(0, s)]
        case .groups(let g):
            let size = width / g.count
            precondition(size * g.count == width, "\(g.count) scale groups do not divide \(width) channels")
            parts = g.enumerated().map { ($0.offset * size, $0.element) }
        default:
            var part = x.columns(columns)
            fakeQuantize(&part)
            x.setColumns(columns, from: part)
            return
        }
        let size = width / parts.count
        x.storage.withUnsafeMutableBufferPointer { p in
            for (offset, s) in parts {
                var one = s
                mq_fake_quantize_rows_f32(p.baseAddress! + columns.lowerBound + offset, Int32(rows), Int32(size), Int32(c), &one, 0, q)
            }
        }
    }

    /// Scales [rows, ceil(cols / block)]: each block's absmax / qmax (`.dynamicBlocks`).
    public func blockScales(_ x: Tensor, block: Int) -> [Float] {
        let (rows, c) = (x.rows, x.cols)
        let nb = (c + block - 1) / block
        let q = Float(qmax(bits: bits))
        var scales = [Float](repeating: 0, count: rows * nb)
        x.storage.withUnsafeBufferPointer { p in
            for r in 0..<rows {
                for b in 0..<nb {
                    var m: Float = 0
                    mq_absmax_rows_f32(p.baseAddress! + r * c + b * block, 1, Int32(min(block, c - b * block)), Int32(c), &m)
                    scales[r * nb + b] = m / q
                }
            }
        }
        return scales
    }

    /// The plain definition of fakeQuantize (tests compare the kernel with it).
    public func fakeQuantizeReference(_ x: inout Tensor) {
        let q = Float(qmax(bits: bits))
        let (rows, c) = (x.rows, x.cols)
        x.storage.withUnsafeMutableBufferPointer { p in
            for r in 0..<rows {
                let row = p.baseAddress! + r * c
                // One scale per channel: the row's, or its group's.
                let perChannel: [Float]
                switch scale {
                case .static(let v): perChannel = [Float](repeating: v, count: c)
                case .dynamic:
                    var m: Float = 0
                    for j in 0..<c { m = max(m, abs(row[j])) }
                    perChannel = [Float](repeating: m / q, count: c)
                case .groups(let g): perChannel = (0..<c).map { g[$0 / (c / g.count)] }
                case .dynamicBlocks(let b):
                    perChannel = (0..<c).map { j in
                        var m: Float = 0
                        for t in (j / b * b)..<min(c, j / b * b + b) { m = max(m, abs(row[t])) }
                        return m / q
                    }
                }
                for j in 0..<c {
                    let s = perChannel[j]
                    row[j] = s > 0 ? quantizeSymmetric(row[j], inverseScale: 1 / s, qmax: q) * s : 0
                }
            }
        }
    }
}
