/// Normalized Hadamard transforms of size m * 2^k, m in {1, 12, 20, 28} (40 * 2^k = 20 * 2^(k+1)):
/// H_n = H_m (x) H_{2^k} / sqrt(n), applied as a fast Walsh-Hadamard transform over the 2^k factor
/// and a small dense product over the m factor (QuaRot's hadamard_utils does the same with
/// tabulated matrices; here the small factors are constructed, never pasted).
public struct Hadamard: Sendable, Equatable {
    public let size: Int
    /// The small factor (m x m, entries +-1, row-major), m = 1 for a pure power of two.
    public let factor: [Double]
    public let factorSize: Int
    public var powerOfTwo: Int { size / factorSize }

    /// The Hadamard matrix of `size`, or nil when no construction here covers it.
    public init?(size n: Int) {
        guard n > 0 else { return nil }
        for m in [1, 12, 20, 28] where n % m == 0 {
            let p = n / m
            if p & (p - 1) == 0, let f = Hadamard.smallFactor(m) {
                size = n
                factor = f
                factorSize = m
                return
            }
        }
        return nil
    }

    /// Applies H_n / sqrt(n) to `x` in place (length n).
    public func apply(_ x: UnsafeMutablePointer<Double>) {
        var scratch = [Double](repeating: 0, count: size)
        scratch.withUnsafeMutableBufferPointer { apply(x, product: $0.baseAddress!) }
    }

    /// The same with caller-owned scratch of at least n values (many rows, one allocation).
    public func apply(_ x: UnsafeMutablePointer<Double>, scratch: UnsafeMutablePointer<Double>) {
        apply(x, product: scratch)
    }

    /// H_{m * 2^k} = H_m (x) H_{2^k}: a fast transform on each of the m blocks of 2^k, then the m x m
    /// factor applied across blocks as whole-block axpys (contiguous, so they vectorize).
    private func apply(_ x: UnsafeMutablePointer<Double>, product: UnsafeMutablePointer<Double>) {
        let (m, p) = (factorSize, powerOfTwo)
        for a in 0..<m { fwht(x + a * p, p) }
        if m > 1 {
            factor.withUnsafeBufferPointer { f in
                for i in 0..<m {
                    let out = product + i * p
                    out.update(repeating: 0, count: p)
                    for j in 0..<m where f[i * m + j] != 0 {
                        let (c, src) = (f[i * m + j], x + j * p)
                        for b in 0..<p { out[b] += c * src[b] }
                    }
                }
            }
            x.update(from: product, count: size)
        }
        let norm = 1 / Double(size).squareRoot()
        for i in 0..<size { x[i] *= norm }
    }

    /// The same for float activations (the online rotation), in double; `scratch` grows to 2n.
    public func apply(_ x: UnsafeMutablePointer<Float>, scratch: inout [Double]) {
        if scratch.count < 2 * size { scratch = [Double](repeating: 0, count: 2 * size) }
        scratch.withUnsafeMutableBufferPointer { s in
            let v = s.baseAddress!
            for i in 0..<size { v[i] = Double(x[i]) }
            apply(v, product: v + size)
            for i in 0..<size { x[i] = Float(v[i]) }
        }
    }

    /// The orthogonal matrix R (row-major) with x R = apply(x) for a row vector x: row j of R is
    /// apply(e_j). (R = H^T / sqrt(n); the Paley I factors are not symmetric, so the side matters.)
    public var matrix: [Double] {
        var out = [Double](repeating: 0, count: size * size)
        var e = [Double](repeating: 0, count: size)
        for j in 0..<size {
            for i in 0..<size { e[i] = i == j ? 1 : 0 }
            e.withUnsafeMutableBufferPointer { apply($0.baseAddress!) }
            for i in 0..<size { out[j * size + i] = e[i] }
        }
        return out
    }

    private func fwht(_ x: UnsafeMutablePointer<Double>, _ n: Int) {
        var h = 1
        while h < n {
            var i = 0
            while i < n {
                for j in i..<(i + h) {
                    let (a, b) = (x[j], x[j + h])
                    x[j] = a + b
                    x[j + h] = a - b
                }
                i += 2 * h
            }
            h *= 2
        }
    }

    // MARK: small factors

    static func smallFactor(_ m: Int) -> [Double]? {
        switch m {
        case 1: return [1]
        case 12: return paleyI(q: 11)
        case 20: return paleyI(q: 19)
        case 28: return paleyII(q: 13)
        default: return nil
        }
    }

    /// Quadratic character of GF(q), q prime: 0, 1 for squares, -1 otherwise.
    static func chi(_ a: Int, _ q: Int) -> Double {
        let r = ((a % q) + q) % q
        if r == 0 { return 0 }
        for x in 1..<q where (x * x) % q == r { return 1 }
        return -1
    }

    /// Paley construction I (q prime, q = 3 mod 4): H = I + S, S = [[0, 1^T], [-1, Q]] with the
    /// Jacobsthal matrix Q[i][j] = chi(j - i). Order q + 1.
    static func paleyI(q: Int) -> [Double] {
        let n = q + 1
        var h = [Double](repeating: 0, count: n * n)
        for j in 1..<n { h[j] = 1; h[j * n] = -1 }
        for i in 0..<q { for j in 0..<q { h[(i + 1) * n + (j + 1)] = chi(j - i, q) } }
        for i in 0..<n { h[i * n + i] += 1 }
        return h
    }

    /// Paley construction II (q prime, q = 1 mod 4): the symmetric conference matrix
    /// C = [[0, 1^T], [1, Q]], then H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]]. Order 2(q + 1).
    static func paleyII(q: Int) -> [Double] {
        let c1 = q + 1
        var c = [Double](repeating: 0, count: c1 * c1)
        for j in 1..<c1 { c[j] = 1; c[j * c1] = 1 }
        for i in 0..<q { for j in 0..<q { c[(i + 1) * c1 + (j + 1)] = chi(j - i, q) } }
        var identity = [Double](repeating: 0, count: c1 * c1)
        for i in 0..<c1 { identity[i * c1 + i] = 1 }
        let a = kronecker(c, c1, [1, 1, 1, -1], 2)
        let b = kronecker(identity, c1, [1, -1, -1, -1], 2)
        return zip(a, b).map { $0 + $1 }
    }

    static func kronecker(_ a: [Double], _ na: Int, _ b: [Double], _ nb: Int) -> [Double] {
        let n = na * nb
        var out = [Double](repeating: 0, count: n * n)
        for i in 0..<na { for j in 0..<na { for k in 0..<nb { for l in 0..<nb {
            out[(i * nb + k) * n + (j * nb + l)] = a[i * na + j] * b[k * nb + l]
        } } } }
        return out
    }
}

/// A randomized Hadamard rotation: x -> (x * signs) H / sqrt(n), i.e. R = diag(signs) H (QuaRot's
/// random_hadamard_matrix). Orthogonal; `signs` drawn from the seed.
public struct RandomizedHadamard: Sendable, Equatable {
    public let hadamard: Hadamard
    public let signs: [Double]

    public init?(size: Int, seed: UInt64) {
        guard let h = Hadamard(size: size) else { return nil }
        hadamard = h
        var rng = SeededRandom(seed: seed)
        signs = (0..<size).map { _ in rng.next() & 1 == 0 ? 1 : -1 }
    }

    public init(hadamard: Hadamard, signs: [Double]) {
        self.hadamard = hadamard
        self.signs = signs
    }

    /// x -> x R = (x * signs) H for each of `rows` rows of n values (row-major, in place): a fast
    /// transform per row, O(n log n), where a product with `matrix` costs O(n^2) a row. The rows
    /// are independent, so `parallelism` splits them and the result does not depend on it.
    public func rotateRows(_ x: UnsafeMutablePointer<Double>, rows: Int, parallelism: Parallelism? = nil) {
        let n = hadamard.size
        let rotate = { (range: Range<Int>) in
            var scratch = [Double](repeating: 0, count: n)
            scratch.withUnsafeMutableBufferPointer { s in
                signs.withUnsafeBufferPointer { d in
                    for r in range {
                        let row = x + r * n
                        for i in 0..<n { row[i] *= d[i] }
                        hadamard.apply(row, scratch: s.baseAddress!)
                    }
                }
            }
        }
        guard let parallelism else { return rotate(0..<rows) }
        // A row is n log n additions: a few rows are worth a thread.
        parallelism.forEachChunk(rows, minimumChunk: max(1, (1 << 16) / max(1, n)), rotate)
    }

    /// The matrix R (row-major) with x R = (x * signs) H.
    public var matrix: [Double] {
        let n = hadamard.size
        var h = hadamard.matrix
        for i in 0..<n { for j in 0..<n { h[i * n + j] *= signs[i] } }
        return h
    }
}
