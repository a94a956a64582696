import MambaModel
import MambaTensors

// The quantized model's ops on the reference path: the integer weights and static scales of the
// checkpoint, computed as quantize-dequantize in float32 (what the int8 kernels must reproduce up
// to float rounding: they accumulate the same integers exactly).

public struct ReferenceQuantizedLinear: LinearOp {
    public let weight: QuantizedMatrix
    public let bias: Tensor?
    public let input: ActivationQuantizer
    let dequantized: FloatLinear

    public init(weight: QuantizedMatrix, bias: Tensor?, input: ActivationQuantizer) {
        self.weight = weight
        self.bias = bias
        self.input = input
        dequantized = FloatLinear(weight: weight.dequantized(), bias: bias)
    }

    public var inFeatures: Int { weight.cols }
    public var outFeatures: Int { weight.rows }

    public func forward(_ x: Tensor, _ parallelism: Parallelism) -> Tensor {
        var q = x
        input.fakeQuantize(&q)
        return dequantized.forward(q, parallelism)
    }
}

public struct ReferenceQuantizedConv: ConvOp {
    public let weight: QuantizedMatrix     // [E, K], one scale per channel
    public let bias: Tensor?
    public let input: ActivationQuantizer
    let dequantized: FloatConv

    public init(weight: QuantizedMatrix, bias: Tensor?, input: ActivationQuantizer) {
        self.weight = weight
        self.bias = bias
        self.input = input
        dequantized = FloatConv(weight: weight.dequantized(), bias: bias)
    }

    public var kernelSize: Int { weight.cols }

    public func forward(_ x: Tensor, state: inout [Float], _ parallelism: Parallelism) -> Tensor {
        var q = x
        input.fakeQuantize(&q)            // the state keeps the quantized inputs, as int8 would
        return dequantized.forward(q, state: &state, parallelism)
    }
}

/// The SSM inputs x, dt (before softplus), B and C, each with its own static scale.
public struct ReferenceQuantizedScanInput: ScanInputOp {
    public let quantizers: [Site: ActivationQuantizer]

    public init(quantizers: [Site: ActivationQuantizer]) { self.quantizers = quantizers }

    public func forward(_ activation: inout Tensor, site: Site) {
        quantizers[site]?.fakeQuantize(&activation)
    }

    public func forward(_ activation: inout Tensor, columns: Range<Int>, site: Site) {
        quantizers[site]?.fakeQuantize(&activation, columns: columns)
    }
}

/// int8 rows with one scale each: a lookup, dequantized on the way out.
public struct QuantizedEmbedding: EmbeddingOp {
    public let table: QuantizedMatrix      // [V, D], scales per row (or per row and group: a tied head's table)

    public init(table: QuantizedMatrix) { self.table = table }
    public var vocabSize: Int { table.rows }

    public func forward(_ tokens: [Int]) -> Tensor {
        let d = table.cols
        return Tensor(shape: [tokens.count, d]) { out in
            table.values.withUnsafeBufferPointer { v in
                for (i, t) in tokens.enumerated() {
                    dequantizeRow(v.baseAddress! + t * d, row: t, cols: d, scales: table.scales, groupSize: table.groupSize, into: out.baseAddress! + i * d)
                }
            }
        }
    }
}

/// Row `t` of a table (its integers `q` [cols]) times its scales, one per row or per row and group:
/// the embedding lookup of both runtimes (QuantizedEmbedding, PackedTableEmbedding).
func dequantizeRow(_ q: UnsafePointer<Int8>, row t: Int, cols d: Int, scales: [Float], groupSize: Int?, into out: UnsafeMutablePointer<Float>) {
    let group = groupSize ?? d
    let groups = (d + group - 1) / group
    for j in 0..<d { out[j] = Float(q[j]) * scales[t * groups + j / group] }
}
