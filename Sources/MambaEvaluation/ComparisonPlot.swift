import Foundation

/// A self-contained SVG of a comparison report. Left: the weakest site's SQNR per layer for one
/// bit width (w8a8 when compared), one line per method. Right: every quantized row's change from
/// float (bits per byte over all text for a language model, top-1 points for an image model) with
/// its 95% paired-bootstrap interval, one row per model. Below: KL against bits per weight, with
/// another tool's points when given (SizePlot.swift).
public enum ComparisonPlot {
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#393b79", "#637939"]

    /// One quantized model's row in the interval panel: its change from float with an interval.
    struct DeltaRow {
        var label: String
        var method: String
        var value: Double
        var interval: Interval?
    }

    /// One quantized model's point in the size panel.
    struct SizePoint {
        var label: String
        var method: String
        var bitsPerWeight: Double
        var kl: Double
    }

    public static func svg(_ r: ComparisonReport, reference: ReferencePoints? = nil) -> String {
        let lastFile = r.results.last?.file
        let rows = r.results.filter { $0.file == lastFile && $0.method != "none" }
        let floatBPB = r.results.first { $0.file == lastFile && $0.method == "none" }?.bitsPerByte
        let deltas = rows.map { DeltaRow(label: "\($0.name) \($0.bits)", method: $0.method, value: $0.bitsPerByte - (floatBPB ?? $0.bitsPerByte),
                                         interval: $0.confidenceIntervals.bitsPerByteDelta) }
        let points = rows.filter { $0.kl > 0 }.compactMap { row in
            row.bitsPerWeight.map { SizePoint(label: "\(row.name) \(row.bits)", method: row.method, bitsPerWeight: $0, kl: row.kl) }
        }
        return page(title: r.model, sites: r.sites, deltaTitle: "Δ bits per byte vs float, all text, 95% interval (lower is better)",
                    deltaFormat: "%+.4f", deltaUnit: "bits/byte", deltas: deltas, points: points, reference: reference)
    }

    /// The image model's page: the same SQNR and size panels, Δ top-1 (points, 95% paired
    /// bootstrap over images) in the middle.
    public static func svg(_ r: VisionComparisonReport, reference: ReferencePoints? = nil) -> String {
        let quantized = r.rows.filter { $0.method != "none" }
        let floatTop1 = r.rows.first { $0.method == "none" }?.accuracy
        let deltas = quantized.compactMap { row -> DeltaRow? in
            guard let a = row.accuracy, let f = floatTop1 else { return nil }
            return DeltaRow(label: "\(row.name) \(row.bits)", method: row.method, value: 100 * (a - f),
                            interval: row.accuracyDeltaInterval.map { Interval(low: 100 * $0.low, high: 100 * $0.high) })
        }
        let points = quantized.filter { $0.kl > 0 }.map { SizePoint(label: "\($0.name) \($0.bits)", method: $0.method, bitsPerWeight: $0.bitsPerWeight, kl: $0.kl) }
        return page(title: r.model, sites: r.sites, deltaTitle: "Δ top-1 vs float (points), 95% paired interval (higher is better)",
                    deltaFormat: "%+.2f", deltaUnit: "points", deltas: deltas, points: points, reference: reference)
    }

    static func page(title: String, sites: [ComparisonReport.SiteRow], deltaTitle: String, deltaFormat: String, deltaUnit: String,
                     deltas: [DeltaRow], points: [SizePoint], reference: ReferencePoints?) -> String {
        let methods = (sites.map(\.method) + deltas.map(\.method)).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let rowHeight = 22.0
        let methodsShown = Set(sites.map(\.method)).count
        // Below the taller of the left panel's legend (one line per method) and the right panel's rows.
        let top = max(400 + 16 * Double(methodsShown), 110 + rowHeight * Double(deltas.count))
        let (w, h) = (1100.0, top + 380)
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += text(20, 24, "mambaquant compare: \(escape(title))", size: 15, bold: true)
        s += sqnrPanel(sites, methods: methods, x: 60, y: 60)
        s += deltaPanel(deltas, title: deltaTitle, format: deltaFormat, unit: deltaUnit, methods: methods, rowHeight: rowHeight)
        s += sizePanel(points, reference: reference, x: 60, y: top + 60, methods: methods)
        return s + "</svg>\n"
    }

    /// Left panel: the weakest site's SQNR per layer for one bit width (w8a8 when present), one
    /// line per method.
    static func sqnrPanel(_ sites: [ComparisonReport.SiteRow], methods: [String], x lx: Double, y ly: Double) -> String {
        let bitWidths = sites.map(\.bits).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let shownBits = bitWidths.contains("w8a8") ? "w8a8" : bitWidths.first
        let layers = Set(sites.compactMap(\.layer)).sorted()
        let (lw, lh) = (380.0, 320.0)
        var s = text(lx, ly - 12, "weakest-site SQNR per layer, \(escape(shownBits ?? "-")) (dB, higher is better)", size: 13, bold: true)
        s += axes(lx, ly, lw, lh)
        guard let bits = shownBits, !layers.isEmpty else {
            return s + text(lx + lw / 2, ly + lh / 2, "no per-site SQNR (quantized on the fly only)", anchor: "middle")
        }
        let shown = methods.filter { m in sites.contains { $0.method == m } }
        var perMethod: [String: [Double]] = [:]
        for m in shown {
            perMethod[m] = layers.map { l in sites.filter { $0.method == m && $0.bits == bits && $0.layer == l }.map(\.sqnrDb).min() ?? 0 }
        }
        let all = perMethod.values.flatMap { $0 }
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
        for (k, m) in shown.enumerated() {
            let color = palette[(methods.firstIndex(of: m) ?? k) % palette.count]
            let pts = perMethod[m]!.enumerated().map { "\(number(px($0.offset))),\(number(py($0.element)))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(pts)\"/>\n"
            s += "<rect x=\(q(lx + 10)) y=\(q(ly + lh + 46 + Double(k) * 16)) width=\"10\" height=\"10\" fill=\"\(color)\"/>"
            s += text(lx + 24, ly + lh + 55 + Double(k) * 16, escape(m))
        }
        return s
    }

    /// Right panel: one row per quantized model, its change from float and 95% interval (labels
    /// left of the axis, never rotated or clipped); the panel grows with the rows.
    static func deltaPanel(_ rows: [DeltaRow], title: String, format: String, unit: String, methods: [String], rowHeight: Double) -> String {
        let (labelX, rx, ry, rw) = (520.0, 760.0, 60.0, 310.0)
        var s = text(labelX, ry - 12, title, size: 13, bold: true)
        let values: [Double] = rows.flatMap { [$0.interval?.low ?? $0.value, $0.interval?.high ?? $0.value, $0.value] } + [0]
        let (lo, hi) = (values.min()!, values.max()!)
        let pad = max((hi - lo) * 0.05, 1e-6)
        func px(_ v: Double) -> Double { rx + rw * (v - (lo - pad)) / ((hi + pad) - (lo - pad)) }
        let bottom = ry + rowHeight * Double(max(rows.count, 1)) + 8
        s += line(px(0), ry - 4, px(0), bottom, "#555", dash: true)
        s += line(rx, bottom, rx + rw, bottom, "#333")
        // 0 always; the ends where they stand far enough from 0 for their labels not to touch its.
        for v in [lo, 0, hi] where v == 0 || (abs(v) > pad && abs(px(v) - px(0)) >= 60) {
            s += text(px(v), bottom + 16, String(format: format, v), size: 10, anchor: "middle")
        }
        for (i, row) in rows.enumerated() {
            let y = ry + rowHeight * (Double(i) + 0.5)
            let color = palette[(methods.firstIndex(of: row.method) ?? i) % palette.count]
            s += text(labelX, y + 4, escape(row.label), size: 11)
            if let ci = row.interval {
                s += line(px(ci.low), y, px(ci.high), y, color)
                s += line(px(ci.low), y - 4, px(ci.low), y + 4, color) + line(px(ci.high), y - 4, px(ci.high), y + 4, color)
            }
            s += "<circle cx=\(q(px(row.value))) cy=\(q(y)) r=\"4\" fill=\"\(color)\"><title>\(escape(row.label)): \(String(format: format, row.value)) \(unit)</title></circle>\n"
        }
        return s
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
