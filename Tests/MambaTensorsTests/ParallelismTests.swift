import MambaTensors
import XCTest

final class ParallelismTests: XCTestCase {
    func testChunksCoverTheRangeOnceEach() {
        for threads in [1, 2, 3] {
            for count in [0, 1, 5, 64, 1000] {
                var seen = [Int](repeating: 0, count: count)
                seen.withUnsafeMutableBufferPointer { p in
                    let base = UncheckedSendable(p)
                    Parallelism(threads: threads).forEachChunk(count) { range in
                        for i in range { base.value[i] += 1 }
                    }
                }
                XCTAssertEqual(seen, [Int](repeating: 1, count: count), "threads \(threads) count \(count)")
            }
        }
    }

    /// `overlapping` runs both jobs and returns main's value; beside's error comes back before
    /// main's, and main runs to its end even when beside fails.
    func testOverlappingRunsBothAndRethrowsBesidesErrorFirst() throws {
        struct Failure: Error, Equatable { let job: String }
        var side = 0, ran = false
        XCTAssertEqual(try overlapping({ side = 7 }) { 42 }, 42)
        XCTAssertEqual(side, 7)
        XCTAssertThrowsError(try overlapping({ throw Failure(job: "beside") }) { throw Failure(job: "main") }) {
            XCTAssertEqual($0 as? Failure, Failure(job: "beside"))
        }
        XCTAssertThrowsError(try overlapping({}) { throw Failure(job: "main") }) { XCTAssertEqual($0 as? Failure, Failure(job: "main")) }
        XCTAssertThrowsError(try overlapping({ throw Failure(job: "beside") }) { ran = true })
        XCTAssertTrue(ran)
    }

    func testSeededRandomIsReproducible() {
        var a = SeededRandom(seed: 42), b = SeededRandom(seed: 42), c = SeededRandom(seed: 43)
        let xs = (0..<5).map { _ in a.next() }
        XCTAssertEqual(xs, (0..<5).map { _ in b.next() })
        XCTAssertNotEqual(xs, (0..<5).map { _ in c.next() })
        var g = SeededRandom(seed: 7)
        let samples = (0..<20000).map { _ in g.nextGaussian() }
        let mean = samples.reduce(0, +) / Double(samples.count)
        let variance = samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(samples.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
    }
}

/// The spinning workers of decode steps (SpinWorkers.swift): every part runs once, a part that
/// splits again runs inline, a float product split between them equals OpenBLAS's whole one.
final class SpinWorkersTests: XCTestCase {
    func testChunksCoverTheRangeOnceEachWithWorkers() {
        for threads in [2, 3] {
            Parallelism(threads: threads).withSpinningWorkers { par in
                for count in [0, 1, 2, 5, 64, 1000] {
                    for _ in 0..<200 {   // many jobs in a row, as a decode step's products come
                        var seen = [Int](repeating: 0, count: count)
                        seen.withUnsafeMutableBufferPointer { p in
                            let base = UncheckedSendable(p)
                            par.forEachChunk(count) { range in
                                for i in range { base.value[i] += 1 }
                            }
                        }
                        XCTAssertEqual(seen, [Int](repeating: 1, count: count), "threads \(threads) count \(count)")
                    }
                }
            }
        }
    }

    func testNestedSplitRunsInline() {
        Parallelism(threads: 2).withSpinningWorkers { par in
            var seen = [Int](repeating: 0, count: 100)
            seen.withUnsafeMutableBufferPointer { p in
                let base = UncheckedSendable(p)
                par.forEachChunk(10) { outer in
                    for o in outer {
                        par.forEachChunk(10) { inner in for i in inner { base.value[o * 10 + i] += 1 } }
                    }
                }
            }
            XCTAssertEqual(seen, [Int](repeating: 1, count: 100))
        }
    }

    func testSplitLinearEqualsWholeLinear() {
        var rng = SeededRandom(seed: UInt64.random(in: 0...1_000_000))
        for (m, n, k) in [(1, 517, 301), (3, 1031, 129), (1, 2048, 64)] {
            let x = Tensor(shape: [m, k], storage: (0..<(m * k)).map { _ in Float(rng.nextGaussian()) })
            let w = Tensor(shape: [n, k], storage: (0..<(n * k)).map { _ in Float(rng.nextGaussian()) })
            let whole = BLAS.withThreads(1) { BLAS.linear(x, w) }
            let split = Parallelism(threads: 2).withSpinningWorkers { BLAS.linear(x, w, $0) }
            XCTAssertEqual(split.shape, whole.shape)
            let err = zip(split.storage, whole.storage).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(err, 1e-4 * (whole.storage.map(abs).max() ?? 1), "\(m)x\(n)x\(k)")
        }
    }
}
