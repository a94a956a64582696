import Foundation
import MambaModel
import MambaTensors

/// What a layer-streamed job will hold at its peak, estimated from the shapes, the window count
/// and the thread count before any of it is allocated, and checked against MemAvailable: a job
/// that cannot fit is refused in one line naming both numbers and what to lower, never left to
/// die in an allocation. Memory-mapped weights are not counted: their pages are file-backed and
/// the kernel can drop them.
public struct MemoryEstimate: Sendable, CustomStringConvertible {
    /// (what, bytes) of the parts alive together at the peak.
    public let parts: [(String, Double)]
    public var bytes: Double { parts.reduce(0) { $0 + $1.1 } }

    public init(parts: [(String, Double)]) { self.parts = parts }

    public var description: String {
        parts.filter { $0.1 >= 1e6 }.sorted { $0.1 > $1.1 }.map { "\($0.0) \(gigabytes($0.1))" }.joined(separator: ", ")
    }

    /// The second-pass (and calibration) peak: every window's residual stream, the largest layer widened
    /// to float32 (plus `doubleCopies` of it in Double while it is transformed), the activations
    /// of `threads` windows inside a layer, and the statistics.
    /// `residualMoments`: whether the pooled residual moments are gathered (calibration; not
    /// quantize's second pass, WindowStreams.kltMoments).
    public static func layerStreamed(_ c: MambaConfig, windows: Int, seqLength: Int, threads: Int, doubleCopies: Double = 0,
                                     residualMoments: Bool = true) -> MemoryEstimate {
        let (d, e, v) = (Double(c.hiddenSize), Double(c.innerSize), Double(c.vocabSize))
        let (w, l, t) = (Double(windows), Double(seqLength), Double(max(1, threads)))
        let layer = 4 * Double(c.largestLayerParameterCount)
        var parts: [(String, Double)] = [
            ("residual streams (\(windows) x \(seqLength) tokens x D \(c.hiddenSize), float32)", 4 * w * l * d),
            // xz, x, z, conv out, dt, y, gate and the block output: about 12 [L, E] float32 per window in flight,
            // plus the observed copies in Double for the moments.
            ("activations of \(threads) windows in flight", t * l * (12 * 4 * e + 2 * 8 * d)),
            ("one layer in float32", layer),
        ]
        // The pooled residual moments: the total and its symmetrized copy, D x D Double each
        // (a window in flight keeps its [L, D] activations, counted above, not a D x D sum).
        if residualMoments { parts.append(("residual moments", 2 * 8 * d * d)) }
        if doubleCopies > 0 { parts.append(("one layer in Double while transformed", doubleCopies * 2 * layer)) }
        // The embedding table widened to float32 to start the residual streams.
        parts.append(("embedding table (float32)", 4 * v * d))
        return MemoryEstimate(parts: parts)
    }

    /// `quantize`: the larger of the head/embedding phase (a V x D Double matrix that R1 rotates in
    /// place through float32 blocks, Matrix.rotateInputsFloat32, and as much again that the
    /// allocator keeps for reuse, SystemMemory.keepFreedMemoryForReuse: measured at the 7B shape,
    /// 4.00 GB peak without it, 5.26 GB with it) and the layer phase (the second pass with a layer
    /// in Double, quantized weights).
    /// With `gptq`, the layer phase also holds the x xᵀ sums (Double) at each linear's input, per
    /// window in flight and merged, and GPTQ's working copies of the largest.
    public static func quantize(_ c: MambaConfig, windows: Int, seqLength: Int, threads: Int, gptq: Bool = false) -> MemoryEstimate {
        let (d, v) = (Double(c.hiddenSize), Double(c.vocabSize))
        let outside = MemoryEstimate(parts: [
            ("embedding or head in Double (V \(c.vocabSize) x D \(c.hiddenSize)) and its freed predecessor kept for reuse", 2 * 8 * v * d),
            ("R1's float32 blocks (two per thread)", Double(max(1, threads)) * 2 * 4 * Double(BLAS.float32BlockElements) + 4 * d * d),
            ("R1 and its eigendecomposition (D x D Double)", 6 * 8 * d * d),
            ("embedding table (float32)", 4 * v * d),
        ])
        var layers = layerStreamed(c, windows: windows, seqLength: seqLength, threads: threads, doubleCopies: 3, residualMoments: false)
        // The previous layer's block (8-bit weights at most: a byte a parameter) is written while
        // this one is read and transformed (QuantizedModel.stream).
        layers = MemoryEstimate(parts: layers.parts + [("the previous layer's quantized block while it is written", Double(c.largestLayerParameterCount))])
        if gptq {
            // Input widths of each kind's linears (a weight [out, in]); sites read by two linears count
            // once each: an upper bound. A layer's Hessians are dropped once it is rounded, so the
            // kind with the most is what the peak holds.
            let widths = c.distinctKinds.map { kind in
                let spec = kind.spec
                return spec.presentParameters(c).compactMap { p, shape -> Double? in
                    guard case .weight(let m) = p.role, spec.module(m)?.kind == .linear else { return nil }
                    return Double(shape[shape.count - 1])
                }
            }
            let squares = widths.map { $0.reduce(0) { $0 + $1 * $1 } }.max() ?? 0, largest = widths.joined().max() ?? 0
            layers = MemoryEstimate(parts: layers.parts + [
                ("GPTQ Hessians (x xᵀ in Double at the linears' inputs, \(threads) windows in flight and merged)", 8 * squares * Double(max(1, threads) + 2)),
                ("GPTQ's working copies of the largest Hessian", 4 * 8 * largest * largest),
                ("an untied head in float32 until GPTQ rounds it", 4 * v * d),
            ])
        }
        return outside.bytes > layers.bytes ? outside : layers
    }

    /// Refuses when the estimate exceeds MemAvailable (kept as is where /proc/meminfo is absent).
    public func check(job: String, lower: String, available: Double? = SystemMemory.available()) throws {
        guard let available, bytes > available else { return }
        throw MambaError(.outOfMemory, "\(job) needs about \(gigabytes(bytes)) of memory (\(description)) but \(gigabytes(available)) is available (\(SystemMemory.availableSource())): lower \(lower)")
    }
}

