import MambaTensors

/// How a rotation of size n was built (reported in the quantize output).
public enum RotationKind: String, Sendable, Codable {
    case hadamard = "hadamard"
    case kltHadamard = "klt+hadamard"
    case kltRandomOrthogonal = "klt+random-orthogonal"
    case randomOrthogonal = "random-orthogonal"
}

/// The KLT of a second-moment matrix: its eigenvectors as columns, largest eigenvalue first.
/// Rotating by K decorrelates the channels; a Hadamard after it equalizes their mean squares.
public func kltBasis(secondMoment: [Double], n: Int) throws -> (vectors: Matrix, values: [Double]) {
    let (values, vectors) = try Eigen.symmetric(secondMoment, n: n)
    return (Matrix(rows: n, cols: n, data: vectors), values)
}

/// The offline rotation of size n: K * H (KLT-enhanced, when a second moment is given) or H, with
/// H a seeded randomized Hadamard; a seeded random orthogonal matrix stands in for H at sizes with
/// no Hadamard construction.
public func offlineRotation(n: Int, secondMoment: [Double]?, seed: UInt64) throws -> (Matrix, RotationKind) {
    let h: Matrix
    let hasHadamard: Bool
    if let rh = RandomizedHadamard(size: n, seed: seed) {
        h = Matrix(rows: n, cols: n, data: rh.matrix)
        hasHadamard = true
    } else {
        h = Matrix(rows: n, cols: n, data: try Eigen.randomOrthogonal(n: n, seed: seed))
        hasHadamard = false
    }
    guard let secondMoment else { return (h, hasHadamard ? .hadamard : .randomOrthogonal) }
    let k = try kltBasis(secondMoment: secondMoment, n: n).vectors
    return (k.times(h), hasHadamard ? .kltHadamard : .kltRandomOrthogonal)
}
