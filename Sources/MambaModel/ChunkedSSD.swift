import CMambaKernels
import Foundation
import MambaTensors

// The chunked form of Mamba-2's scan for prefill: the state-space dual (arXiv 2405.21060, section 6;
// upstream transformers models/mamba2/modeling_mamba2.py torch_forward's chunk loop). Within a chunk of
// Q tokens the recurrence s_t = exp(dt_t A) s_{t-1} + dt_t x_t ⊗ B_t, y_t = s_t C_t + D x_t unrolls to
// matrix products, and only the chunk's last state is carried to the next. Per head h (group g),
// with cum_t = sum of dt_τ A over the chunk up to t:
//     y = (C Bᵀ ∘ L) (dt ⊙ X) + diag(exp(cum)) C s_inᵀ + D X       L[i, j] = exp(cum_i - cum_j), j <= i
//     s_out = exp(cum_last) s_in + (exp(cum_last - cum) ⊙ dt ⊙ X)ᵀ B
// L is separable, exp(cum_i - r) exp(r - cum_j) for any r, so where a head's chunk decays by less
// than exp(-80) the first line is, with r = cum_last / 2,
//     y = diag(exp(cum)) C s_inᵀ + diag(exp(cum - r)) (C Bᵀ ∘ causal) (exp(r - cum) ⊙ dt ⊙ X) + D X
// in which the heads differ only in diagonal scalings: C s_inᵀ and the causal product run once for
// all of a group's heads (they share C and B) as products of 24 times a head's width at the
// mamba2-130m shape, with no per-head mask of Q² exps. Factors stay within exp(±40), so nothing
// overflows or goes subnormal; rounding stays relative to the largest term, as in the masked form
// (a j <= i term carries exp(r - cum_j) <= exp(r - cum_i), which the row's exp(cum_i - r) brings
// back to <= 1). A head that decays faster takes the masked product, with every exponent <= 0. The
// products run as sgemm; the elementwise passes around them in C (ssd_chunk.c). Same function as the
// recurrence; only float32 summation order differs (tested against it and the Double reference at
// every kernel path).
// Shapes: Q chunk, P head dim, N state, L tokens.

extension SSDScan {
    /// Tokens per chunk of the chunked form (the config's chunk_size only changes upstream's
    /// summation order; this is the tool's).
    static let chunkTokens = 64

    /// Decays below exp(-60) (about 1e-26) are taken as 0: smaller ones end in subnormal floats,
    /// which the products then crawl through (measured: a 128-token chunk took 3.6x the time).
    static let negligibleExponent: Float = -60
    static let negligibleDecay = Foundation.exp(negligibleExponent) * 1.0001

    /// The largest decay exponent over a chunk, -cum_last, for which a head takes the separable form:
    /// its factors exp(±(cum_j - r)) stay within exp(±40) (about 2e17), far from float32's 3e38 even
    /// times a chunk's sums of products of large activations. (The bundled bard-mamba2's heads span
    /// 0.3 to 79 at their dt_bias over 64 tokens.)
    static let separableSpan: Float = 80

    /// x[i] = exp(x[i]) for i < count (the vector exp), 0 where x[i] <= negligibleExponent.
    static func decays(_ x: UnsafeMutablePointer<Float>, _ count: Int) {
        for i in 0..<count { x[i] = max(x[i], negligibleExponent) }
        mq_exp_f32(x, x, count)
        for i in 0..<count where x[i] <= negligibleDecay { x[i] = 0 }
    }

    /// The chunked scan: x [L, H P], b, c [L, G N] (`inputs`), dt [L, H] (discretized), s [H, P, N]
    /// updated; returns y [L, H P]. Heads split between threads, OpenBLAS single-threaded inside each; within
    /// a thread, a group's heads run each product together (columns side by side).
    func chunkedForward(_ inputs: Inputs, dt: [Float], s: inout [Float], _ parallelism: Parallelism) -> Tensor {
        let (l, h, p, n, g) = (inputs.length, heads, headDim, stateSize, groups)
        let (ldx, ldb, ldc) = (inputs.ldx, inputs.ldb, inputs.ldc)
        let (e, perGroup, q) = (h * p, h / g, Self.chunkTokens)
        // A fresh prompt starts from a zero state: its first chunk has no C s_inᵀ and no state decay.
        let startsFromZero = !s.contains { $0 != 0 }
        return Tensor(shape: [l, e]) { yb in
        dt.withUnsafeBufferPointer { db in
        dSkip.withUnsafeBufferPointer { skip in
        s.withUnsafeMutableBufferPointer { sb in
            let (xp, dp, bp, cp, dsk, sp, yp) = (UncheckedSendable(inputs.x), UncheckedSendable(db.baseAddress!), UncheckedSendable(inputs.b),
                                                 UncheckedSendable(inputs.c), UncheckedSendable(skip.baseAddress!), UncheckedSendable(sb.baseAddress!),
                                                 UncheckedSendable(yb.baseAddress!))
            BLAS.withThreads(1) {
                parallelism.forEachChunk(h) { headRange in
                    let (h0, count, width) = (headRange.lowerBound, headRange.count, headRange.count * p)
                    let scratch = ChunkScratch(q: q, heads: count, headDim: p)
                    defer { scratch.deallocate() }
                    var zeroState = startsFromZero
                    for t0 in stride(from: 0, to: l, by: q) {
                        let rows = min(q, l - t0)
                        scratch.decays(a: a[headRange], dt: dp.value + t0 * h + h0, ldd: h, rows: rows)
                        var scaled = mq_ssd_chunk_inputs_args(
                            rows: Int32(rows), heads: Int32(count), head_dim: Int32(p), q: Int32(q), x: xp.value + t0 * ldx + h0 * p, ldx: Int32(ldx),
                            dt: dp.value + t0 * h + h0, ldd: Int32(h), e_neg: scratch.eNeg, to_end: scratch.toEnd, xs: scratch.xs, xe: scratch.xe)
                        mq_ssd_chunk_inputs_f32(&scaled)
                        // The heads of one group at a time (a thread's range may start or end inside a group).
                        var first = h0
                        while first < headRange.upperBound {
                            let group = first / perGroup
                            let last = min(headRange.upperBound, (group + 1) * perGroup)
                            let (cols, k0) = ((last - first) * p, (first - h0) * p)
                            let cGroup = cp.value + t0 * ldc + group * n, bGroup = bp.value + t0 * ldb + group * n
                            let state = sp.value + first * p * n                       // [heads P, N]
                            let (cbt, inter, intra) = (scratch.cbt, scratch.inter + k0, scratch.intra + k0)
                            // C Bᵀ with the causal mask (zero above the diagonal).
                            BLAS.gemm(m: rows, n: rows, k: n, cGroup, lda: ldc, bGroup, ldb: ldb, transposeB: true, into: cbt, ldc: q)
                            for i in 0..<rows { for j in (i + 1)..<rows { cbt[i * q + j] = 0 } }
                            // inter = C s_inᵀ; intra = (C Bᵀ ∘ causal) xs, in four blocks of rows, each over the
                            // columns up to its last row, so that the zero blocks above the diagonal are skipped
                            // (3/8 of the work; measured 3% faster than two halves in five alternated pairs).
                            if !zeroState {
                                BLAS.gemm(m: rows, n: cols, k: n, cGroup, lda: ldc, state, ldb: n, transposeB: true, into: inter, ldc: width)
                            }
                            for part in 0..<4 {
                                let (r0, r1) = (rows * part / 4, rows * (part + 1) / 4)
                                BLAS.gemm(m: r1 - r0, n: cols, k: r1, cbt + r0 * q, lda: q, scratch.xs + k0, ldb: width, transposeB: false,
                                          into: intra + r0 * width, ldc: width)
                            }
                            // y = diag(exp(cum)) inter + diag(exp(cum - r)) intra + D x.
                            var output = mq_ssd_chunk_output_args(
                                rows: Int32(rows), heads: Int32(last - first), head_dim: Int32(p), q: Int32(q), inter: zeroState ? nil : UnsafePointer(inter),
                                intra: intra, ldw: Int32(width), e_pos: scratch.ePos + (first - h0) * q, e_mid: scratch.eMid + (first - h0) * q,
                                D: dsk.value + first, x: xp.value + t0 * ldx + first * p, ldx: Int32(ldx), y: yp.value + t0 * e + first * p, ldy: Int32(e))
                            mq_ssd_chunk_output_f32(&output)
                            // Heads that decay too fast for the separable form (their xs columns are 0):
                            // y += (C Bᵀ ∘ L) (dt ⊙ X), L[i, j] = exp(cum_i - cum_j) below the diagonal.
                            for head in first..<last where !scratch.separable[head - h0] {
                                scratch.maskedIntraChunk(head: head - h0, rows: rows, x: xp.value + t0 * ldx + head * p, ldx: ldx, dt: dp.value + t0 * h + head, ldd: h)
                                BLAS.gemm(m: rows, n: p, k: rows, scratch.mask, lda: q, scratch.xHead, ldb: p, transposeB: false, beta: 1,
                                          into: yp.value + t0 * e + head * p, ldc: e)
                            }
                            // The state: s = exp(cum_last) s + xeᵀ B, each head's exp(cum_last) applied first.
                            if !zeroState {
                                for head in first..<last { BLAS.scale(state + (head - first) * p * n, count: p * n, by: scratch.keep[head - h0]) }
                            }
                            BLAS.gemmAccumulate(m: cols, n: n, k: rows, scratch.xe + k0, lda: width, transposeA: true, bGroup, ldb: ldb,
                                                beta: zeroState ? 0 : 1, into: state, ldc: n)
                            first = last
                        }
                        zeroState = false
                    }
                }
            }
        }}}}
    }
}

/// One thread's scratch for the chunked scan, allocated once per call: the chunk's C Bᵀ, the
/// per-head decays, the two scaled inputs, the products' outputs, and the masked form's buffers.
private struct ChunkScratch {
    let q, heads, headDim: Int
    let cbt, mask: UnsafeMutablePointer<Float>      // [Q, Q]
    let cum, ePos, eMid, eNeg, toEnd: UnsafeMutablePointer<Float>   // [heads, Q]
    let keep: UnsafeMutablePointer<Float>           // [heads]: exp(cum_last)
    let separable: UnsafeMutablePointer<Bool>       // [heads]
    let xs, xe, inter, intra: UnsafeMutablePointer<Float>   // [Q, heads P]
    let xHead: UnsafeMutablePointer<Float>          // [Q, P]: one masked head's dt ⊙ X

    init(q: Int, heads: Int, headDim: Int) {
        (self.q, self.heads, self.headDim) = (q, heads, headDim)
        func floats(_ count: Int) -> UnsafeMutablePointer<Float> { .allocate(capacity: count) }
        (cbt, mask) = (floats(q * q), floats(q * q))
        (cum, ePos, eMid, eNeg, toEnd) = (floats(heads * q), floats(heads * q), floats(heads * q), floats(heads * q), floats(heads * q))
        (keep, separable) = (floats(heads), .allocate(capacity: heads))
        let wide = q * heads * headDim
        (xs, xe, inter, intra, xHead) = (floats(wide), floats(wide), floats(wide), floats(wide), floats(q * headDim))
    }

    func deallocate() {
        for buffer in [cbt, mask, cum, ePos, eMid, eNeg, toEnd, keep, xs, xe, inter, intra, xHead] { buffer.deallocate() }
        separable.deallocate()
    }

    /// Per head of the thread (a its A values, dt at the chunk's first token and the first head):
    /// cum, exp(cum), exp(cum_last - cum), exp(cum_last), and exp(cum - r), exp(r - cum) (r =
    /// cum_last / 2) where the head takes the separable form (0 where it does not, which leaves its xs
    /// columns 0).
    func decays(a: ArraySlice<Float>, dt: UnsafePointer<Float>, ldd: Int, rows: Int) {
        for (k, ak) in a.enumerated() {
            let (hc, pos, mid, neg, end) = (cum + k * q, ePos + k * q, eMid + k * q, eNeg + k * q, toEnd + k * q)
            var running: Float = 0
            for t in 0..<rows {
                running += dt[t * ldd + k] * ak
                hc[t] = running
            }
            let last = hc[rows - 1]
            separable[k] = last >= -SSDScan.separableSpan
            let r = last / 2
            for t in 0..<rows { (pos[t], end[t], mid[t], neg[t]) = (hc[t], last - hc[t], hc[t] - r, r - hc[t]) }
            SSDScan.decays(pos, rows)
            SSDScan.decays(end, rows)
            if separable[k] {
                mq_exp_f32(mid, mid, rows)
                mq_exp_f32(neg, neg, rows)
            } else {
                mid.update(repeating: 0, count: rows)
                neg.update(repeating: 0, count: rows)
            }
            keep[k] = last <= SSDScan.negligibleExponent ? 0 : Foundation.exp(last)
        }
    }

    /// The masked form's inputs for head k: mask = C Bᵀ ∘ L (from cbt, already causal) and xHead =
    /// dt ⊙ X, x and dt at the chunk's first token and this head.
    func maskedIntraChunk(head k: Int, rows: Int, x: UnsafePointer<Float>, ldx: Int, dt: UnsafePointer<Float>, ldd: Int) {
        let hc = cum + k * q
        for i in 0..<rows {
            let row = mask + i * q
            for j in 0...i { row[j] = hc[i] - hc[j] }
            SSDScan.decays(row, i + 1)
            for j in 0...i { row[j] *= cbt[i * q + j] }
            for j in (i + 1)..<rows { row[j] = 0 }
            let step = dt[i * ldd]
            for u in 0..<headDim { xHead[i * headDim + u] = step * x[i * ldx + u] }
        }
    }
}
