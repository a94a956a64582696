import MambaModel
import MambaTensors
import MambaTransforms
import TestSupport
import CMambaKernels
import XCTest

final class HadamardTests: XCTestCase {
    func testSmallFactorsAreHadamard() {
        for m in [12, 20, 28] {
            let h = Hadamard(size: m)!
            XCTAssertEqual(h.factorSize, m)
            // H H^T = m I on the +-1 factor itself.
            for i in 0..<m {
                for j in 0..<m {
                    let dot = (0..<m).reduce(0.0) { $0 + h.factor[i * m + $1] * h.factor[j * m + $1] }
                    XCTAssertEqual(dot, i == j ? Double(m) : 0, "m \(m) rows \(i), \(j)")
                }
                XCTAssertTrue(h.factor[(i * m)..<((i + 1) * m)].allSatisfy { $0 == 1 || $0 == -1 })
            }
        }
    }

    func testFastTransformIsTheOrthogonalMatrix() {
        for n in [1, 2, 16, 24, 40, 48, 80, 112, 160, 384, 768] {
            guard let h = Hadamard(size: n) else { return XCTFail("no Hadamard of size \(n)") }
            let r = Matrix(rows: n, cols: n, data: h.matrix)
            XCTAssertLessThan(r.orthogonalityError, 1e-12, "n \(n)")
            // apply(x) == x R on a random vector.
            var rng = SeededRandom(seed: UInt64(n) &* 7919 &+ freshSeed(in: 0...1000))
            var x = (0..<n).map { _ in rng.nextGaussian() }
            let expected = rowTimes(x, r)
            x.withUnsafeMutableBufferPointer { h.apply($0.baseAddress!) }
            XCTAssertLessThan(zip(x, expected).map { abs($0 - $1) }.max()!, 1e-12)
            // Every entry has magnitude 1/sqrt(n): it spreads every channel over all of them.
            XCTAssertTrue(r.data.allSatisfy { abs(abs($0) - 1 / Double(n).squareRoot()) < 1e-12 })
        }
    }

    func testSizesWithoutConstructionAreNil() {
        for n in [0, 3, 5, 7, 36, 44] { XCTAssertNil(Hadamard(size: n), "\(n)") }
    }

    func testRandomizedHadamardIsSeededAndOrthogonal() {
        let a = RandomizedHadamard(size: 48, seed: 1)!, b = RandomizedHadamard(size: 48, seed: 1)!, c = RandomizedHadamard(size: 48, seed: 2)!
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a.signs, c.signs)
        XCTAssertLessThan(Matrix(rows: 48, cols: 48, data: a.matrix).orthogonalityError, 1e-12)
    }

    /// Rows through the fast transform (how quantize applies R2 to a weight) equal the dense
    /// product W R, on random rows and sizes of each construction.
    func testRotateRowsEqualsTheDenseProduct() {
        var rng = SeededRandom(seed: freshSeed())
        for (n, rows) in [(1, 3), (12, 5), (20, 7), (56, 3), (96, 11), (640, 9)] {
            let r = RandomizedHadamard(size: n, seed: rng.next())!
            let w = Matrix(rows: rows, cols: n, data: (0..<(rows * n)).map { _ in rng.nextGaussian() })
            let dense = w.times(Matrix(rows: n, cols: n, data: r.matrix))
            var fast = w.data
            fast.withUnsafeMutableBufferPointer { r.rotateRows($0.baseAddress!, rows: rows) }
            XCTAssertLessThan(zip(fast, dense.data).map { abs($0 - $1) }.max()!, 1e-12, "n \(n)")
        }
    }

    /// Rows split over threads (quantize's R2 on a big out_proj) give the one-thread bits: 311
    /// rows of 640 are enough rows for two and three threads to take some each.
    func testRotateRowsIsTheSameOnAnyThreadCount() {
        let seed = freshSeed()
        var rng = SeededRandom(seed: seed)
        for (n, rows) in [(640, 311), (1024, 129)] {
            let r = RandomizedHadamard(size: n, seed: rng.next())!
            let w = (0..<(rows * n)).map { _ in rng.nextGaussian() }
            var one = w
            one.withUnsafeMutableBufferPointer { r.rotateRows($0.baseAddress!, rows: rows) }
            XCTAssertNotEqual(one, w)
            for threads in [2, 3] {
                var split = w
                split.withUnsafeMutableBufferPointer { r.rotateRows($0.baseAddress!, rows: rows, parallelism: Parallelism(threads: threads)) }
                XCTAssertEqual(split, one, "n \(n), \(rows) rows on \(threads) threads, seed \(seed)")
            }
        }
    }
}

/// The float32 online rotation (CMambaKernels/hadamard.c) against its double definition.
final class OnlineHadamardTests: XCTestCase {
    override func tearDown() { mq_force_scalar(0) }

    func testFloatKernelMatchesTheDoubleDefinition() {
        var rng = SeededRandom(seed: freshSeed())
        for n in [1, 8, 28, 40, 64, 96, 384, 1536, 1792] {
            let h = Hadamard(size: n)!
            let signs = (0..<n).map { _ in Float(rng.next() % 2 == 0 ? 1 : -1) }
            let op = OnlineHadamard(signs: signs, hadamard: h)
            let rows = 3
            let x = Tensor(shape: [rows, n], storage: (0..<(rows * n)).map { _ in Float(rng.nextGaussian()) })
            let want = op.rotateReference(x)
            for scalar in [Int32(0), 1] {
                mq_force_scalar(scalar)
                let got = op.rotate(x)
                XCTAssertLessThanOrEqual(maxAbsDifference(got.storage, want.storage), 1e-5 * max(1, want.absMax), "n \(n) scalar \(scalar)")
            }
        }
    }

    /// The AVX2 path's in-register butterflies (distances 1, 2, 4) do the scalar loop's sums in its
    /// order, the AVX-512 path's (and 8) the AVX2 path's sums in its order, and rows split between
    /// threads are rotated alike: the same floats every way (within rounding against the scalar
    /// loop where a factor's mix runs with FMAs).
    func testPathsAndThreadsGiveTheSameFloats() {
        var rng = SeededRandom(seed: freshSeed())
        for n in [8, 16, 40, 80, 96, 384, 1024, 1536, 1792, 2560] {
            let op = OnlineHadamard(signs: (0..<n).map { _ in Float(rng.next() % 2 == 0 ? 1 : -1) }, hadamard: Hadamard(size: n)!)
            let rows = 21
            let x = Tensor(shape: [rows, n], storage: (0..<(rows * n)).map { _ in Float(rng.nextGaussian()) })
            var byLevel: [Int32: Tensor] = [:]
            KernelPaths.forEachFloatLevel { level in
                for threads in [1, 2] {
                    let got = op.rotate(x, Parallelism(threads: threads))
                    if let first = byLevel[level] { XCTAssertEqual(got, first, "n \(n) level \(level): threads changed the result") }
                    byLevel[level] = got
                }
            }
            guard let scalar = byLevel[0] else { return XCTFail("no scalar path") }
            if let avx2 = byLevel[1] {
                let tolerance: Float = n % 8 == 0 && Hadamard(size: n)!.factorSize == 1 ? 0 : 1e-6 * max(1, scalar.absMax)
                XCTAssertLessThanOrEqual(maxAbsDifference(avx2.storage, scalar.storage), tolerance, "n \(n) AVX2 against the scalar loop")
            }
            if let avx512 = byLevel[2] { XCTAssertEqual(avx512, byLevel[1], "n \(n): AVX-512 against AVX2") }
        }
    }
}
