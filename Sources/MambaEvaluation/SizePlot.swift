import Foundation
import MambaTensors

/// Another tool's points for the size panel: a name, bits per weight (8 x file bytes / the float
/// model's parameters) and the mean KL from float on the same positions (llama.cpp's quantization
/// types measured with llama-perplexity --kl-divergence; README, "4-bit weights").
public struct ReferencePoints: Codable, Sendable {
    public struct Point: Codable, Sendable {
        public var name: String
        public var bitsPerWeight: Double
        public var kl: Double
        enum CodingKeys: String, CodingKey { case name, bitsPerWeight = "bits_per_weight", kl }
    }
    /// Who measured them and how (shown in the legend).
    public var source: String?
    public var points: [Point]

    /// The file's points, or one line naming what is wrong with it.
    public static func load(path: String) throws -> ReferencePoints {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MambaError(.missingFile, "cannot read the reference points \(path)")
        }
        let r: ReferencePoints
        do {
            r = try JSONDecoder().decode(ReferencePoints.self, from: data)
        } catch {
            throw MambaError(.badInput, "\(path): expected {\"source\": ..., \"points\": [{\"name\", \"bits_per_weight\", \"kl\"}, ...]}")
        }
        if let bad = r.points.first(where: { !($0.bitsPerWeight > 0 && $0.bitsPerWeight.isFinite && $0.kl > 0 && $0.kl.isFinite) }) {
            throw MambaError(.badInput, "\(path): point \(bad.name) needs positive finite bits_per_weight and kl")
        }
        return r
    }
}

extension ComparisonPlot {
    /// The size panel: each quantized row's KL from float against its bits per weight (log KL),
    /// and another tool's points beside them; lower left is better.
    static func sizePanel(_ ours: [SizePoint], reference: ReferencePoints?, x: Double, y: Double, methods: [String]) -> String {
        let (w, h) = (640.0, 260.0)
        let theirs = reference?.points ?? []
        var s = text(x, y - 12, "KL from float against bits per weight (lower left is better)", size: 13, bold: true)
        s += axes(x, y, w, h)
        let bits = ours.map(\.bitsPerWeight) + theirs.map(\.bitsPerWeight)
        let kls = ours.map(\.kl) + theirs.map(\.kl)
        guard !bits.isEmpty else { return s + text(x + w / 2, y + h / 2, "no quantized rows with a KL", anchor: "middle") }
        let (bx0, bx1) = (floor(bits.min()!) - 0.5, ceil(bits.max()!) + 0.5)
        let (ky0, ky1) = (floor(log10(kls.min()!)), ceil(log10(kls.max()!)) + (kls.min() == kls.max() ? 1 : 0))
        func px(_ b: Double) -> Double { x + w * (b - bx0) / (bx1 - bx0) }
        func py(_ kl: Double) -> Double { y + h - h * (log10(kl) - ky0) / max(ky1 - ky0, 1e-9) }
        for e in stride(from: ky0, through: ky1, by: 1) {
            s += line(x - 4, py(pow(10, e)), x + w, py(pow(10, e)), "#ddd") + text(x - 8, py(pow(10, e)) + 4, "1e\(Int(e))", size: 10, anchor: "end")
        }
        let step = max(1.0, ((bx1 - bx0) / 8).rounded(.up))
        for b in stride(from: ceil(bx0), through: bx1, by: step) {
            s += text(px(b), y + h + 16, String(format: "%.0f", b), size: 10, anchor: "middle")
        }
        s += text(x + w / 2, y + h + 34, "bits per weight (8 x weight bytes / float parameters)", anchor: "middle")
        // Points that (nearly) coincide, as rtn's and smoothquant's often do, would print their labels
        // over each other: each label goes to the first free line at or below its point.
        let labelY = labelLines(ours.map { (px($0.bitsPerWeight) + 8, py($0.kl) + 4, $0.label) }
                                + theirs.map { (px($0.bitsPerWeight) + 8, py($0.kl) + 4, $0.name) })
        for (i, p) in ours.enumerated() {
            let color = palette[(methods.firstIndex(of: p.method) ?? 0) % palette.count]
            let b = p.bitsPerWeight
            s += "<circle cx=\(q(px(b))) cy=\(q(py(p.kl))) r=\"5\" fill=\"\(color)\"><title>\(escape(p.label)): \(String(format: "%.2f", b)) bits, KL \(String(format: "%.6f", p.kl))</title></circle>\n"
            s += text(px(b) + 8, labelY[i], escape(p.label), size: 10)
        }
        for (i, p) in theirs.enumerated() {
            s += "<rect x=\(q(px(p.bitsPerWeight) - 5)) y=\(q(py(p.kl) - 5)) width=\"10\" height=\"10\" fill=\"#555\"><title>\(escape(p.name)): \(String(format: "%.2f", p.bitsPerWeight)) bits, KL \(String(format: "%.6f", p.kl))</title></rect>\n"
            s += text(px(p.bitsPerWeight) + 8, labelY[ours.count + i], escape(p.name), size: 10)
        }
        if let reference {
            s += "<rect x=\(q(x + w + 20)) y=\(q(y + 4)) width=\"10\" height=\"10\" fill=\"#555\"/>"
            s += text(x + w + 36, y + 13, escape(reference.source ?? "reference"), size: 11)
        }
        return s
    }

    /// Baselines for size-10 labels starting at (x, y), in order: each moved down a line (12 px) at a
    /// time until its box (6 px a character, an estimate for the sans-serif face) overlaps no label
    /// placed before it.
    static func labelLines(_ labels: [(x: Double, y: Double, text: String)]) -> [Double] {
        let (lineHeight, charWidth) = (12.0, 6.0)
        var placed: [(x0: Double, x1: Double, y: Double)] = []
        return labels.map { label in
            let (x0, x1) = (label.x, label.x + charWidth * Double(label.text.count))
            var y = label.y
            while placed.contains(where: { $0.x0 < x1 && x0 < $0.x1 && abs($0.y - y) < lineHeight }) { y += lineHeight }
            placed.append((x0, x1, y))
            return y
        }
    }
}
