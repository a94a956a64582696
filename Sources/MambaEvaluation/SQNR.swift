import Foundation
import MambaModel
import MambaTensors

/// Signal-to-quantization-noise ratio per site and layer: 10 log10(sum x^2 / sum (x - x_q)^2),
/// x from the transformed float model (same rotations and smoothing, no rounding) and x_q from the
/// quantized model on the same tokens. The error at a site includes what earlier sites let through,
/// so a drop from one site to the next shows where error enters.
public struct SiteSQNR: Sendable, Equatable, Codable {
    public let layer: Int?
    public let site: String
    public let sqnrDB: Double
}

final class ActivationRecorder: ActivationObserver {
    struct Key: Hashable { let layer: Int?; let site: Site }
    var seen: [Key: Tensor] = [:]
    var order: [Key] = []

    func observe(_ activation: Tensor, site: Site, layer: Int?) {
        let k = Key(layer: layer, site: site)
        if seen[k] == nil { order.append(k) }
        seen[k] = activation
    }
}

/// SQNR of `quantized` against `transformedFloat` over `windows`, in forward order.
public func siteSQNR(transformedFloat: MambaLM, quantized: MambaLM, windows: [[Int]], parallelism: Parallelism) throws -> [SiteSQNR] {
    try siteSQNR(units: windows.count) { i, float, quant in
        var sa = transformedFloat.makeState(), sb = quantized.makeState()
        _ = try transformedFloat.forward(windows[i], state: &sa, logits: .none, parallelism: parallelism, observer: float)
        _ = try quantized.forward(windows[i], state: &sb, logits: .none, parallelism: parallelism, observer: quant)
    }
}

/// The same for a Vision Mamba over images [n, C, H, W] (each image's blocks and head input).
public func siteSQNR(transformedFloat: VisionMamba, quantized: VisionMamba, images: Tensor, parallelism: Parallelism) throws -> [SiteSQNR] {
    try siteSQNR(units: images.shape[0]) { i, float, quant in
        _ = transformedFloat.mapImages(images.rows(i..<(i + 1))) { _, image in
            for (model, observer) in [(transformedFloat, float), (quantized, quant)] {
                _ = model.classify(model.encode(model.embed(image, parallelism), parallelism, observer: observer), parallelism, observer: observer)
            }
        }
    }
}

/// Signal and noise summed per (layer, site) over `units` runs of the two models, each run
/// reporting the float model's activations to the first recorder and the quantized one's to the
/// second.
func siteSQNR(units: Int, run: (Int, ActivationRecorder, ActivationRecorder) throws -> Void) throws -> [SiteSQNR] {
    var signal: [ActivationRecorder.Key: Double] = [:], noise: [ActivationRecorder.Key: Double] = [:]
    var order: [ActivationRecorder.Key] = []
    for i in 0..<units {
        let (a, b) = (ActivationRecorder(), ActivationRecorder())
        try run(i, a, b)
        if order.isEmpty { order = a.order }
        for k in a.order {
            guard let x = a.seen[k], let y = b.seen[k], x.storage.count == y.storage.count else { continue }
            var s = 0.0, n = 0.0
            for (p, q) in zip(x.storage, y.storage) {
                s += Double(p) * Double(p)
                n += Double(p - q) * Double(p - q)
            }
            signal[k, default: 0] += s
            noise[k, default: 0] += n
        }
    }
    return order.compactMap { k in
        guard let s = signal[k], let n = noise[k] else { return nil }
        let db = n > 0 ? 10 * log10(s / n) : Double.infinity
        return SiteSQNR(layer: k.layer, site: k.site.rawValue, sqnrDB: db.isFinite ? db : 999)
    }
}
