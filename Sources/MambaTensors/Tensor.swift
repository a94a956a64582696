/// A dense row-major float32 tensor: the one activation and weight type of the float model.
/// Activations are [L, channels]; weights are [out, in] (docs/DESIGN.md section 1).
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var storage: [Float]

    public init(shape: [Int], storage: [Float]) {
        precondition(shape.reduce(1, *) == storage.count, "shape \(shape) does not hold \(storage.count) values")
        self.shape = shape
        self.storage = storage
    }

    public init(zeros shape: [Int]) {
        self.shape = shape
        self.storage = [Float](repeating: 0, count: shape.reduce(1, *))
    }

    /// A tensor whose every element `initialize` writes (a GEMM's output): no zero-filling pass,
    /// which at prefill sizes (the head's [512, 50280] is 103 MB) costs as much as the page faults.
    public init(shape: [Int], initializingWith initialize: (UnsafeMutableBufferPointer<Float>) -> Void) {
        self.shape = shape
        self.storage = [Float](unsafeUninitializedCapacity: shape.reduce(1, *)) { buffer, count in
            initialize(buffer)
            count = buffer.count
        }
    }

    public init(repeating value: Float, shape: [Int]) {
        self.shape = shape
        self.storage = [Float](repeating: value, count: shape.reduce(1, *))
    }

    public var count: Int { storage.count }
    public var rank: Int { shape.count }
    /// Rows of a matrix (the first axis); columns are everything after it.
    public var rows: Int { shape.first ?? 1 }
    public var cols: Int { shape.count <= 1 ? (shape.first ?? 1) : shape.dropFirst().reduce(1, *) }

    public subscript(row r: Int) -> ArraySlice<Float> {
        storage[(r * cols)..<((r + 1) * cols)]
    }

    /// Rows `range` of a matrix as a new tensor.
    public func rows(_ range: Range<Int>) -> Tensor {
        let c = cols
        return Tensor(shape: [range.count] + shape.dropFirst(), storage: Array(storage[(range.lowerBound * c)..<(range.upperBound * c)]))
    }

    /// Columns `range` of a 2-D tensor overwritten with `part` [rows, range.count].
    public mutating func setColumns(_ range: Range<Int>, from part: Tensor) {
        precondition(rank == 2 && part.rows == rows && part.cols == range.count && range.upperBound <= cols)
        let (r, c, w) = (rows, cols, range.count)
        part.storage.withUnsafeBufferPointer { src in
            storage.withUnsafeMutableBufferPointer { dst in
                for i in 0..<r { (dst.baseAddress! + i * c + range.lowerBound).update(from: src.baseAddress! + i * w, count: w) }
            }
        }
    }

    /// Columns `range` of a 2-D tensor, copied to a contiguous [rows, range.count].
    public func columns(_ range: Range<Int>) -> Tensor {
        precondition(rank == 2)
        let (r, c, w) = (rows, cols, range.count)
        var out = [Float](repeating: 0, count: r * w)
        storage.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<r {
                    let s = src.baseAddress! + i * c + range.lowerBound
                    (dst.baseAddress! + i * w).update(from: s, count: w)
                }
            }
        }
        return Tensor(shape: [r, w], storage: out)
    }

    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, storage: storage)
    }

    /// Largest absolute value (0 for an empty tensor).
    public var absMax: Float {
        storage.reduce(0) { max($0, abs($1)) }
    }
}

extension Tensor {
    /// Every value rounded to the nearest IEEE half (what an F16 tensor on disk holds), widened back;
    /// past half's range a value becomes infinite, which the caller checks.
    public func roundedToHalf() -> Tensor { Tensor(shape: shape, storage: storage.map { Float(Float16($0)) }) }
}
