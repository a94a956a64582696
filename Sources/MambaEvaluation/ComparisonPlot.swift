import Foundation

/// A self-contained SVG of a comparison report: left, the weakest site's SQNR per layer, one line
/// per quantized model; right, bits per token of every model over all text (lower is better),
/// the float model's level drawn across.
public enum ComparisonPlot {
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#393b79", "#637939"]

    public static func svg(_ r: ComparisonReport) -> String {
        let (w, h) = (1100.0, 460.0)
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += text(20, 24, "mambaquant compare: \(escape(r.model))", size: 15, bold: true)

        // Left panel: SQNR lines.
        let models = r.sites.map { "\($0.method) \($0.bits)" }.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let layers = Set(r.sites.compactMap(\.layer)).sorted()
        let (lx, ly, lw, lh) = (60.0, 60.0, 440.0, 320.0)
        s += text(lx, ly - 12, "weakest-site SQNR per layer (dB, higher is better)", size: 13, bold: true)
        s += axes(lx, ly, lw, lh)
        if !layers.isEmpty {
            var perModel: [String: [Double]] = [:]
            for m in models {
                perModel[m] = layers.map { l in r.sites.filter { "\($0.method) \($0.bits)" == m && $0.layer == l }.map(\.sqnrDb).min() ?? 0 }
            }
            let all = perModel.values.flatMap { $0 }
            let (lo, hi) = (floor((all.min() ?? 0) / 5) * 5, ceil((all.max() ?? 1) / 5) * 5 + (all.isEmpty ? 5 : 0))
            let span = max(hi - lo, 1)
            func px(_ i: Int) -> Double { lx + (layers.count == 1 ? lw / 2 : lw * Double(i) / Double(layers.count - 1)) }
            func py(_ v: Double) -> Double { ly + lh - lh * (v - lo) / span }
            for k in 0...4 {
                let v = lo + span * Double(k) / 4
                s += line(lx - 4, py(v), lx + lw, py(v), "#ddd") + text(lx - 8, py(v) + 4, String(format: "%.0f", v), anchor: "end")
            }
            for (i, l) in layers.enumerated() { s += text(px(i), ly + lh + 16, "\(l)", anchor: "middle") }
            s += text(lx + lw / 2, ly + lh + 34, "layer", anchor: "middle")
            for (k, m) in models.enumerated() {
                let color = palette[k % palette.count]
                let pts = perModel[m]!.enumerated().map { String(format: "%.1f,%.1f", px($0.offset), py($0.element)) }.joined(separator: " ")
                s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(pts)\"/>\n"
                s += "<rect x=\(q(lx + lw + 12)) y=\(q(ly + Double(k) * 16)) width=\"10\" height=\"10\" fill=\"\(color)\"/>"
                s += text(lx + lw + 26, ly + Double(k) * 16 + 9, escape(m))
            }
        } else {
            s += text(lx + lw / 2, ly + lh / 2, "no per-site SQNR (quantized on the fly only)", anchor: "middle")
        }

        // Right panel: bits per token, all text.
        let lastFile = r.results.last?.file
        let rows = r.results.filter { $0.file == lastFile }
        let (rx, ry, rw, rh) = (690.0, 60.0, 380.0, 320.0)
        s += text(rx, ry - 12, "bits per token, all text (lower is better)", size: 13, bold: true)
        s += axes(rx, ry, rw, rh)
        if let floatRow = rows.first(where: { $0.method == "none" }) {
            let values = rows.map(\.bitsPerToken)
            let lo = max(0, (values.min() ?? 0) - 0.02 * (values.max() ?? 1)), hi = (values.max() ?? 1) * 1.005
            let span = max(hi - lo, 1e-9)
            let bw = rw / Double(max(rows.count, 1))
            func py(_ v: Double) -> Double { ry + rh - rh * (v - lo) / span }
            for (i, row) in rows.enumerated() {
                let color = row.method == "none" ? "#555" : palette[(models.firstIndex(of: "\(row.method) \(row.bits)") ?? i) % palette.count]
                let x = rx + Double(i) * bw + bw * 0.15
                s += "<rect x=\(q(x)) y=\(q(py(row.bitsPerToken))) width=\(q(bw * 0.7)) height=\(q(ry + rh - py(row.bitsPerToken))) fill=\"\(color)\"><title>\(escape(row.name)) \(row.bits): \(String(format: "%.4f", row.bitsPerToken))</title></rect>\n"
                // Inside an attribute the numbers go unquoted (translate("1","2") was not XML).
                s += "<text transform=\"translate(\(number(x + bw * 0.35)),\(number(ry + rh + 10))) rotate(45)\" font-size=\"10\">\(escape(row.name)) \(escape(row.bits))</text>\n"
            }
            s += line(rx, py(floatRow.bitsPerToken), rx + rw, py(floatRow.bitsPerToken), "#555", dash: true)
            s += text(rx - 8, py(lo) + 4, String(format: "%.3f", lo), anchor: "end") + text(rx - 8, py(hi) + 4, String(format: "%.3f", hi), anchor: "end")
        }
        return s + "</svg>\n"
    }

    static func number(_ v: Double) -> String { String(format: "%.1f", v) }
    /// A quoted attribute value.
    static func q(_ v: Double) -> String { "\"" + number(v) + "\"" }
    static func text(_ x: Double, _ y: Double, _ t: String, size: Int = 12, bold: Bool = false, anchor: String = "start") -> String {
        "<text x=\(q(x)) y=\(q(y)) font-size=\"\(size)\" text-anchor=\"\(anchor)\"\(bold ? " font-weight=\"bold\"" : "")>\(t)</text>\n"
    }
    static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, _ color: String, dash: Bool = false) -> String {
        "<line x1=\(q(x1)) y1=\(q(y1)) x2=\(q(x2)) y2=\(q(y2)) stroke=\"\(color)\"\(dash ? " stroke-dasharray=\"5,4\"" : "")/>\n"
    }
    static func axes(_ x: Double, _ y: Double, _ w: Double, _ h: Double) -> String {
        line(x, y, x, y + h, "#333") + line(x, y + h, x + w, y + h, "#333")
    }
    static func escape(_ t: String) -> String {
        t.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }
}
