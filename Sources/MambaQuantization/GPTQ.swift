import Dispatch
import MambaTensors
import MambaTransforms

/// GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
/// Pre-trained Transformers", arXiv 2210.17323, Algorithm 1): the weights of a linear are rounded
/// one input column at a time, and each column's rounding error is spread over the columns not yet
/// rounded through the inverse Hessian of the layer's input, H = Xᵀ X, so that ||W Xᵀ - Q Xᵀ|| is
/// small rather than ||W - Q||. With the paper's refinements: the Cholesky form of H⁻¹, lazy
/// updates in blocks of columns, dampening, and optional act-order (columns in descending order of
/// H's diagonal).
///
/// Scales are fixed before rounding ("static groups" in the authors' code): per row, or per row and
/// contiguous group of the original column order, so that act-order changes only the order in
/// which columns are rounded, never which group a column's scale belongs to. The int8 kernels
/// need that (a group is a contiguous block of K, docs/DESIGN.md section 3).
/// `scripts/reference/gptq_reference.py` is the reference the tests compare with.
public enum GPTQ {
    public struct Options: Sendable, Equatable {
        /// Added to H's diagonal: this fraction of its mean (the paper's 1%).
        public var dampening: Double
        /// Columns per lazy block update.
        public var blockSize: Int
        /// Round columns in descending order of H's diagonal.
        public var actOrder: Bool

        public init(dampening: Double = 0.01, blockSize: Int = 128, actOrder: Bool = false) {
            self.dampening = dampening; self.blockSize = blockSize; self.actOrder = actOrder
        }
    }

    /// The integers of `w` [n, k] on `scales` ([n], or [n, ceil(k / groupSize)]), rounded by GPTQ
    /// against `hessian` ([k, k], row-major, any positive multiple of Xᵀ X). Rows run in parallel
    /// (each row's updates involve only itself); the result does not depend on `threads`.
    public static func round(
        _ w: Matrix, hessian: [Double], bits: Int, groupSize: Int?, scales: [Float], options: Options = .init(), threads: Int = 1
    ) throws -> [Int8] {
        let (n, k) = (w.rows, w.cols)
        precondition(hessian.count == k * k, "GPTQ: a [\(k), \(k)] Hessian for \(k) input columns")
        let groups = groupSize.map { (k + $0 - 1) / $0 } ?? 1
        precondition(scales.count == n * groups, "GPTQ: \(n * groups) scales for [\(n), \(k)] in groups of \(groupSize ?? k)")
        var h = hessian
        var weights = w.data
        // A column no calibration token reached: rounding it costs nothing, and H must stay invertible.
        for j in 0..<k where h[j * k + j] == 0 {
            h[j * k + j] = 1
            for r in 0..<n { weights[r * k + j] = 0 }
        }
        // Position -> original column.
        let order: [Int] = options.actOrder ? (0..<k).sorted { a, b in
            let (da, db) = (h[a * k + a], h[b * k + b])
            return da != db ? da > db : a < b   // stable: ties keep the original order
        } : Array(0..<k)
        if options.actOrder {
            var ph = [Double](repeating: 0, count: k * k), pw = [Double](repeating: 0, count: n * k)
            for a in 0..<k { for b in 0..<k { ph[a * k + b] = h[order[a] * k + order[b]] } }
            for r in 0..<n { for a in 0..<k { pw[r * k + a] = weights[r * k + order[a]] } }
            (h, weights) = (ph, pw)
        }
        let meanDiagonal = (0..<k).reduce(0.0) { $0 + h[$1 * k + $1] } / Double(k)
        // Dampening grows tenfold until H is positive definite (a near-singular H from few tokens).
        var damp = options.dampening, upper: [Double]? = nil
        for _ in 0..<6 {
            var dh = h
            for j in 0..<k { dh[j * k + j] += damp * meanDiagonal }
            upper = BLAS.singleThreaded { Eigen.inverseCholeskyUpper(dh, n: k) }
            if upper != nil { break }
            damp *= 10
        }
        guard let u = upper else {
            throw MambaError(.badInput, "GPTQ: the input's Hessian [\(k), \(k)] is not positive definite even with dampening \(damp / 10); the statistics may hold NaN or Inf")
        }
        let q = Double(qmax(bits: bits))
        // The scale of the column at position a, row r.
        let scaleIndex: [Int] = order.map { column in groupSize.map { column / $0 } ?? 0 }
        var values = [Int8](repeating: 0, count: n * k)
        let block = max(1, options.blockSize)
        weights.withUnsafeMutableBufferPointer { wp in
            u.withUnsafeBufferPointer { up in
                values.withUnsafeMutableBufferPointer { vp in
                    scales.withUnsafeBufferPointer { sp in
                        scaleIndex.withUnsafeBufferPointer { gp in
                            let (W, U, V, S, G) = (UncheckedSendable(wp.baseAddress!), UncheckedSendable(up.baseAddress!),
                                                   UncheckedSendable(vp.baseAddress!), UncheckedSendable(sp.baseAddress!), UncheckedSendable(gp.baseAddress!))
                            var i1 = 0
                            while i1 < k {
                                let i2 = min(k, i1 + block), b = i2 - i1
                                var errors = [Double](repeating: 0, count: n * b)
                                errors.withUnsafeMutableBufferPointer { ep in
                                    let E = UncheckedSendable(ep.baseAddress!)
                                    // Algorithm 1's inner loop, one row at a time: round column a,
                                    // divide its error by U[a, a], spread it over the block's later columns.
                                    Parallelism(threads: threads).forEachChunk(n, minimumChunk: 16) { rows in
                                        for r in rows {
                                            let row = W.value + r * k
                                            for a in i1..<i2 {
                                                let s = Double(S.value[r * groups + G.value[a]])
                                                let x = row[a]
                                                let v = s > 0 ? min(max((x / s).rounded(.toNearestOrAwayFromZero), -q), q) : 0
                                                V.value[r * k + order[a]] = Int8(v)
                                                let err = (x - v * s) / U.value[a * k + a]
                                                E.value[r * b + (a - i1)] = err
                                                let ua = U.value + a * k
                                                for c in (a + 1)..<max(a + 1, i2) { row[c] -= err * ua[c] }
                                            }
                                        }
                                    }
                                    // The lazy update of every later column at once: W[:, i2:] -= E U[i1:i2, i2:].
                                    BLAS.dgemmSubtract(E.value, lda: b, U.value + i1 * k + i2, ldb: k, into: W.value + i2, ldc: k, m: n, k: b, n: k - i2)
                                }
                                i1 = i2
                            }
                        }
                    }
                }
            }
        }
        return values
    }

    /// ||(W - Q) Xᵀ||² = trace((W - Q) H (W - Q)ᵀ), Q = values * scales dequantized: the error GPTQ
    /// minimizes, for tests and reports.
    public static func outputError(_ w: Matrix, values: [Int8], scales: [Float], groupSize: Int?, hessian: [Double]) -> Double {
        let (n, k) = (w.rows, w.cols)
        let groups = groupSize.map { (k + $0 - 1) / $0 } ?? 1
        var d = Matrix(rows: n, cols: k, data: w.data)
        for r in 0..<n { for j in 0..<k { d.data[r * k + j] -= Double(values[r * k + j]) * Double(scales[r * groups + (groupSize.map { j / $0 } ?? 0)]) } }
        let dh = d.times(Matrix(rows: k, cols: k, data: hessian))
        var total = 0.0
        for i in 0..<(n * k) { total += dh.data[i] * d.data[i] }
        return total
    }
}
