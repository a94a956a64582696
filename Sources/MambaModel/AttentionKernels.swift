import CMambaKernels
import Foundation
import MambaTensors

// Causal grouped-query attention over a KV cache (docs/DESIGN.md section 1, "Hybrids"): the plain
// loop (the reference, and decode's path) and the sgemm form a prefill runs. Shapes: L query rows,
// T = start + L keys, H query heads, KV key/value heads, P head size; q [L, H P], keys and values
// [T, KV P], row t attends to keys 0...start + t.

/// The heads and the scores' scale.
struct AttentionShape {
    let heads: Int, kvHeads: Int, headDim: Int
    let scale: Float
}

/// softmax over row[0..<n] in place, the sum in Double (both forms below). The exponentials go
/// through the SIMD exp the scan uses (mq_exp_f32): one libm call per score was most of a
/// prefill's attention time.
@inline(__always)
func softmaxInPlace(_ row: UnsafeMutablePointer<Float>, _ n: Int) {
    var m = -Float.infinity
    for j in 0..<n { m = max(m, row[j]) }
    for j in 0..<n { row[j] -= m }
    mq_exp_f32(row, row, n)
    var sum = 0.0
    for j in 0..<n { sum += Double(row[j]) }
    let inv = Float(1 / sum)
    for j in 0..<n { row[j] *= inv }
}

/// The loop: per (row, head) scores, their softmax, weighted values; jobs split over threads.
func attentionReference(_ q: Tensor, keys: [Float], values: [Float], start: Int, _ s: AttentionShape, _ par: Parallelism) -> Tensor {
    let (l, p, heads, group, scale) = (q.rows, s.headDim, s.heads, s.heads / s.kvHeads, s.scale)
    let (qw, kvw) = (heads * p, s.kvHeads * p)
    return Tensor(shape: [l, qw]) { out in
        q.storage.withUnsafeBufferPointer { qb in
            keys.withUnsafeBufferPointer { kb in
                values.withUnsafeBufferPointer { vb in
                    let (qp, kp, vp, op) = (UncheckedSendable(qb.baseAddress!), UncheckedSendable(kb.baseAddress!),
                                            UncheckedSendable(vb.baseAddress!), UncheckedSendable(out.baseAddress!))
                    par.forEachChunk(l * heads) { range in
                        var scores = [Float](repeating: 0, count: start + l)
                        for job in range {
                            let (t, h) = (job / heads, job % heads)
                            let (qrow, kvOffset, n) = (qp.value + t * qw + h * p, (h / group) * p, start + t + 1)
                            for j in 0..<n {
                                let krow = kp.value + j * kvw + kvOffset
                                var dot: Float = 0
                                for i in 0..<p { dot += qrow[i] * krow[i] }
                                scores[j] = dot * scale
                            }
                            scores.withUnsafeMutableBufferPointer { softmaxInPlace($0.baseAddress!, n) }
                            let orow = op.value + t * qw + h * p
                            for i in 0..<p { orow[i] = 0 }
                            for j in 0..<n {
                                let (w, vrow) = (scores[j], vp.value + j * kvw + kvOffset)
                                for i in 0..<p { orow[i] += w * vrow[i] }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The same with the products as sgemm: per block of query rows and head, the scores
/// S = scale Q_h K_gᵀ over the keys the block's last row sees, the causal tail of each row zeroed
/// after its softmax, then O_h = S V_g, written in place in the output's rows. OpenBLAS threads
/// each product; blocks of 256 rows bound the scores to 256 x T floats.
func attentionBLAS(_ q: Tensor, keys: [Float], values: [Float], start: Int, _ s: AttentionShape) -> Tensor {
    let (l, p, heads, group) = (q.rows, s.headDim, s.heads, s.heads / s.kvHeads)
    let (qw, kvw) = (heads * p, s.kvHeads * p)
    let block = 256
    return Tensor(shape: [l, qw]) { out in
        var scores = [Float](repeating: 0, count: min(block, l) * (start + l))
        q.storage.withUnsafeBufferPointer { qb in
            keys.withUnsafeBufferPointer { kb in
                values.withUnsafeBufferPointer { vb in
                    scores.withUnsafeMutableBufferPointer { sb in
                        for r0 in stride(from: 0, to: l, by: block) {
                            let rows = min(block, l - r0)
                            let seen = start + r0 + rows                 // keys the block's last row sees
                            for h in 0..<heads {
                                let kvOffset = (h / group) * p
                                BLAS.gemm(m: rows, n: seen, k: p, alpha: s.scale, qb.baseAddress! + r0 * qw + h * p, lda: qw,
                                          kb.baseAddress! + kvOffset, ldb: kvw, transposeB: true, into: sb.baseAddress!, ldc: seen)
                                for r in 0..<rows {
                                    let row = sb.baseAddress! + r * seen
                                    let n = start + r0 + r + 1
                                    softmaxInPlace(row, n)
                                    for j in n..<seen { row[j] = 0 }
                                }
                                BLAS.gemm(m: rows, n: p, k: seen, sb.baseAddress!, lda: seen, vb.baseAddress! + kvOffset, ldb: kvw,
                                          transposeB: false, into: out.baseAddress! + r0 * qw + h * p, ldc: qw)
                            }
                        }
                    }
                }
            }
        }
    }
}
