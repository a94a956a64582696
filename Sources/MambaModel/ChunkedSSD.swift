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
// Every exponent is <= 0 (A < 0, dt >= 0), so nothing overflows. The products run as sgemm; C Bᵀ is
// shared by a group's heads. Same function as the recurrence; only float32 summation order differs
// (tested against it and the Double reference). Shapes: Q chunk, P head dim, N state, L tokens.

extension SSDScan {
    /// Tokens per chunk of the chunked form (the config's chunk_size only changes upstream's
    /// summation order; this is the tool's).
    static let chunkTokens = 64

    /// Decays below exp(-60) (about 1e-26) are taken as 0: smaller ones end in subnormal floats,
    /// which the products then crawl through (measured: a 128-token chunk took 3.6x the time).
    static let negligibleExponent: Float = -60
    static let negligibleDecay = Foundation.exp(negligibleExponent) * 1.0001

    /// x[i] = exp(x[i]) for i < count (the vector exp), 0 where x[i] <= negligibleExponent.
    static func decays(_ x: UnsafeMutablePointer<Float>, _ count: Int) {
        for i in 0..<count { x[i] = max(x[i], negligibleExponent) }
        mq_exp_f32(x, x, count)
        for i in 0..<count where x[i] <= negligibleDecay { x[i] = 0 }
    }

    /// The chunked scan: x [L, H P], dt [L, H] (discretized), b, c [L, G N], s [H, P, N] updated;
    /// returns y [L, H P]. Heads split between threads, OpenBLAS single-threaded inside each.
    ///
    /// Within a thread, a group's heads share C and B, so the two products with the state run once
    /// for all of them: C s_inᵀ as one [Q, N] x [N, heads P] product and the state update as one
    /// [heads P, Q] x [Q, N], each head's decays applied around them (diag(exp(cum)) on the rows of
    /// the first, exp(cum_last) on the state before the second). Only the masked intra-chunk product
    /// is per head. Per head and chunk, the three products were 72 small sgemm calls a chunk at the
    /// mamba2-130m shape; batched, the two state products are each one call of 24 times the width.
    func chunkedForward(x: Tensor, dt: [Float], b: Tensor, c: Tensor, s: inout [Float], _ parallelism: Parallelism) -> Tensor {
        let (l, h, p, n, g) = (x.rows, heads, headDim, stateSize, groups)
        let (e, gn, perGroup, q) = (h * p, g * n, h / g, Self.chunkTokens)
        var y = Tensor(zeros: [l, e])
        x.storage.withUnsafeBufferPointer { xb in
        dt.withUnsafeBufferPointer { db in
        b.storage.withUnsafeBufferPointer { bb in
        c.storage.withUnsafeBufferPointer { cb in
        s.withUnsafeMutableBufferPointer { sb in
        y.storage.withUnsafeMutableBufferPointer { yb in
            let (xp, dp, bp, cp, sp, yp) = (UncheckedSendable(xb.baseAddress!), UncheckedSendable(db.baseAddress!), UncheckedSendable(bb.baseAddress!),
                                            UncheckedSendable(cb.baseAddress!), UncheckedSendable(sb.baseAddress!), UncheckedSendable(yb.baseAddress!))
            BLAS.withThreads(1) {
                parallelism.forEachChunk(h) { headRange in
                    let (h0, width) = (headRange.lowerBound, headRange.count * p)   // this thread's heads, P columns each
                    // Scratch, allocated once per thread: C Bᵀ of one group, one head's masked decayed
                    // C Bᵀ, each head's cumulative dt A, dt ⊙ X and a [Q, heads P] work area for the
                    // state products, the decays of one head.
                    let cbt = UnsafeMutableBufferPointer<Float>.allocate(capacity: q * q)
                    let m = UnsafeMutableBufferPointer<Float>.allocate(capacity: q * q)
                    let cum = UnsafeMutableBufferPointer<Float>.allocate(capacity: headRange.count * q)
                    let xdt = UnsafeMutableBufferPointer<Float>.allocate(capacity: q * width)
                    let work = UnsafeMutableBufferPointer<Float>.allocate(capacity: q * width)
                    let decay = UnsafeMutableBufferPointer<Float>.allocate(capacity: q)
                    defer { for buffer in [cbt, m, cum, xdt, work, decay] { buffer.deallocate() } }
                    for t0 in stride(from: 0, to: l, by: q) {
                        let rows = min(q, l - t0)
                        // cum_t = sum of dt_τ A up to t, and dt ⊙ X, for every head of the thread.
                        for head in headRange {
                            let (k, a) = (head - h0, self.a[head])
                            var running: Float = 0
                            for t in 0..<rows {
                                let step = dp.value[(t0 + t) * h + head]
                                running += step * a
                                cum[k * q + t] = running
                                let (src, dst) = (xp.value + (t0 + t) * e + head * p, xdt.baseAddress! + t * width + k * p)
                                for i in 0..<p { dst[i] = step * src[i] }
                            }
                        }
                        // The heads of one group at a time (a thread's range may start or end inside a group).
                        var first = h0
                        while first < headRange.upperBound {
                            let group = first / perGroup
                            let last = min(headRange.upperBound, (group + 1) * perGroup)
                            let (cols, k0) = ((last - first) * p, (first - h0) * p)
                            let cGroup = cp.value + t0 * gn + group * n, bGroup = bp.value + t0 * gn + group * n
                            let state = sp.value + first * p * n                       // [heads P, N]
                            BLAS.gemm(m: rows, n: rows, k: n, cGroup, lda: gn, bGroup, ldb: gn, transposeB: true, into: cbt.baseAddress!, ldc: q)
                            // Intra-chunk, per head: y = (C Bᵀ ∘ L) (dt ⊙ X), L[i, j] = exp(cum_i - cum_j) below the diagonal.
                            for head in first..<last {
                                let hc = cum.baseAddress! + (head - h0) * q
                                for i in 0..<rows {
                                    let row = m.baseAddress! + i * q
                                    for j in 0...i { row[j] = hc[i] - hc[j] }
                                    Self.decays(row, i + 1)
                                    for j in 0...i { row[j] *= cbt[i * q + j] }
                                    for j in (i + 1)..<rows { row[j] = 0 }
                                }
                                BLAS.gemm(m: rows, n: p, k: rows, m.baseAddress!, lda: q, xdt.baseAddress! + (head - h0) * p, ldb: width,
                                          transposeB: false, into: yp.value + t0 * e + head * p, ldc: e)
                            }
                            // Inter-chunk, all the group's heads at once: work = C s_inᵀ, then
                            // y += diag(exp(cum)) work + D x, head by head.
                            BLAS.gemm(m: rows, n: cols, k: n, cGroup, lda: gn, state, ldb: n, transposeB: true, into: work.baseAddress!, ldc: cols)
                            for head in first..<last {
                                let (hc, col, d) = (cum.baseAddress! + (head - h0) * q, (head - first) * p, dSkip[head])
                                for t in 0..<rows { decay[t] = hc[t] }
                                Self.decays(decay.baseAddress!, rows)
                                for t in 0..<rows {
                                    let (out, src, w) = (yp.value + (t0 + t) * e + head * p, xp.value + (t0 + t) * e + head * p, work.baseAddress! + t * cols + col)
                                    let scale = decay[t]
                                    for i in 0..<p { out[i] += scale * w[i] + d * src[i] }
                                }
                            }
                            // The state, all the group's heads at once: s = exp(cum_last) s + (exp(cum_last - cum) ⊙ dt ⊙ X)ᵀ B,
                            // with each head's exp(cum_last) applied to its rows of s first.
                            for head in first..<last {
                                let (hc, col) = (cum.baseAddress! + (head - h0) * q, (head - first) * p)
                                let end = hc[rows - 1]
                                for t in 0..<rows { decay[t] = end - hc[t] }
                                Self.decays(decay.baseAddress!, rows)
                                for t in 0..<rows {
                                    let (src, dst, scale) = (xdt.baseAddress! + t * width + k0 + col, work.baseAddress! + t * cols + col, decay[t])
                                    for i in 0..<p { dst[i] = scale * src[i] }
                                }
                                let keep = end <= Self.negligibleExponent ? 0 : Foundation.exp(end)
                                let rowsOfHead = state + (head - first) * p * n
                                for i in 0..<(p * n) { rowsOfHead[i] *= keep }
                            }
                            BLAS.gemmAccumulate(m: cols, n: n, k: rows, work.baseAddress!, lda: cols, transposeA: true, bGroup, ldb: gn,
                                                beta: 1, into: state, ldc: n)
                            first = last
                        }
                    }
                }
            }
        }}}}}}
        return y
    }
}
