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
    /// returns y [L, H P]. Heads split between threads (each computes its groups' C Bᵀ once per
    /// chunk), OpenBLAS single-threaded inside each.
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
                    // Scratch, allocated once per thread: C Bᵀ of one group, the masked decayed C Bᵀ,
                    // dt ⊙ X, the decays, the decayed C rows.
                    let cbt = UnsafeMutableBufferPointer<Float>.allocate(capacity: q * q)
                    let m = UnsafeMutableBufferPointer<Float>.allocate(capacity: q * q)
                    let xdt = UnsafeMutableBufferPointer<Float>.allocate(capacity: q * p)
                    let cum = UnsafeMutableBufferPointer<Float>.allocate(capacity: q)
                    let decay = UnsafeMutableBufferPointer<Float>.allocate(capacity: q)
                    let scaledC = UnsafeMutableBufferPointer<Float>.allocate(capacity: q * n)
                    defer { for buffer in [cbt, m, xdt, cum, decay, scaledC] { buffer.deallocate() } }
                    for t0 in stride(from: 0, to: l, by: q) {
                        let rows = min(q, l - t0)
                        var cbtGroup = -1                                 // C Bᵀ is shared by a group's heads
                        for head in headRange {
                            let group = head / perGroup
                            if group != cbtGroup {
                                BLAS.gemm(m: rows, n: rows, k: n, cp.value + t0 * gn + group * n, lda: gn,
                                          bp.value + t0 * gn + group * n, ldb: gn, transposeB: true, into: cbt.baseAddress!, ldc: q)
                                cbtGroup = group
                            }
                            let (a, d) = (self.a[head], dSkip[head])
                            var running: Float = 0
                            for t in 0..<rows {
                                let step = dp.value[(t0 + t) * h + head]
                                running += step * a
                                cum[t] = running
                                let xrow = xp.value + (t0 + t) * e + head * p
                                for i in 0..<p { xdt[t * p + i] = step * xrow[i] }
                            }
                            // M = C Bᵀ ∘ L, L[i, j] = exp(cum_i - cum_j) below the diagonal (vector exp per row).
                            for i in 0..<rows {
                                let row = m.baseAddress! + i * q
                                for j in 0...i { row[j] = cum[i] - cum[j] }
                                Self.decays(row, i + 1)
                                for j in 0...i { row[j] *= cbt[i * q + j] }
                                for j in (i + 1)..<q { row[j] = 0 }
                            }
                            let state = sp.value + head * p * n                      // [P, N]
                            let out = yp.value + t0 * e + head * p
                            let cGroup = cp.value + t0 * gn + group * n
                            // Intra-chunk: y = M (dt ⊙ X).
                            BLAS.gemm(m: rows, n: p, k: rows, m.baseAddress!, lda: q, xdt.baseAddress!, ldb: p, transposeB: false, into: out, ldc: e)
                            // Inter-chunk: y += (diag(exp(cum)) C) s_inᵀ.
                            for t in 0..<rows { decay[t] = cum[t] }
                            Self.decays(decay.baseAddress!, rows)
                            for t in 0..<rows {
                                for k in 0..<n { scaledC[t * n + k] = decay[t] * cGroup[t * gn + k] }
                            }
                            BLAS.gemm(m: rows, n: p, k: n, scaledC.baseAddress!, lda: n, state, ldb: n, transposeB: true, beta: 1, into: out, ldc: e)
                            // The D skip.
                            for t in 0..<rows {
                                let xrow = xp.value + (t0 + t) * e + head * p
                                for i in 0..<p { out[t * e + i] += d * xrow[i] }
                            }
                            // The state: s = exp(cum_last) s + (exp(cum_last - cum) ⊙ dt ⊙ X)ᵀ B.
                            let last = cum[rows - 1]
                            for t in 0..<rows { decay[t] = last - cum[t] }
                            Self.decays(decay.baseAddress!, rows)
                            for t in 0..<rows {
                                for i in 0..<p { xdt[t * p + i] *= decay[t] }
                            }
                            BLAS.gemmAccumulate(m: p, n: n, k: rows, xdt.baseAddress!, lda: p, transposeA: true, bp.value + t0 * gn + group * n, ldb: gn,
                                                beta: last <= Self.negligibleExponent ? 0 : Foundation.exp(last), into: state, ldc: n)
                        }
                    }
                }
            }
        }}}}}}
        return y
    }
}
