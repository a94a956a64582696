import Foundation
import MambaTensors
import TestSupport
import XCTest

/// A reader of the quantized format written from FORMAT.md ("The forward, exactly") alone: raw
/// tensors from the file, plain loops, none of the library's model, ops, Hadamard or quantizers.
/// It must give the committed fixture's logits, so FORMAT.md says everything needed to run a
/// checkpoint (the online Hadamard's construction and side, where each scale applies).
final class FormatReaderTests: XCTestCase {
    /// Format 1 (w8a8, untied head), format 3 (w4a8 in groups of 8, GPTQ, one tied table) and
    /// format 3 at 8 bits with x_proj and lm_head kept float (tied_head false: an int8 embedding of
    /// its own, an F32 head after the head-input matrix; the float x_proj reads the scan's
    /// fake-quantized x; int4_storage "one value per byte").
    /// Mamba-2 (biases, a finite dt clamp, an untied head, dynamic scales) and a state-spaces source
    /// (its own config keys, V padded) too, written by FormatFixtureWriter.
    let fixtures = ["tiny-tied-mambaquant-w8a8", "tiny-tied-mambaquant-w4a8-g8", "tiny-tied-mambaquant-w8a8-keepfloat",
                    "tiny-mamba2-mambaquant-w8a8-dynamic", "tiny-statespaces-mambaquant-w8a8"]
    let tokens = [5, 17, 200, 3, 99, 42, 7, 130, 64, 250, 1, 18]

    struct Reader {
        let file: SafeTensorsFile
        /// group_size (nil: per output channel).
        let group: Int?
        /// activation_scale "dynamic": one scale per row, absmax / qmax, none stored.
        var dynamic = false
        func floats(_ name: String) throws -> [Float] { try file.view(name).floats() }
        func shape(_ name: String) throws -> [Int] { try file.view(name).shape }
        func scalar(_ name: String) throws -> Float { try floats(name)[0] }

        /// A weight's integers [rows, cols] (FORMAT.md "Numbers": I8, or U8 two per byte, low
        /// nibble first, 4-bit two's complement) and its scale for (row, column).
        func weights(_ module: String, cols: Int) throws -> (values: [Int], scale: (Int, Int) -> Float) {
            let v = try file.view(module + ".weight"), scales = try floats(module + ".weight_scale")
            var values: [Int]
            if v.dtype == .u8 {
                let bytes = Array(v.bytes.bindMemory(to: UInt8.self)), perRow = (cols + 1) / 2
                values = []
                for r in 0..<(bytes.count / perRow) {
                    for j in 0..<cols {
                        let nibble = Int(j % 2 == 0 ? bytes[r * perRow + j / 2] & 0x0F : bytes[r * perRow + j / 2] >> 4)
                        values.append(nibble >= 8 ? nibble - 16 : nibble)
                    }
                }
            } else {
                values = try v.int8s().map(Int.init)
            }
            let perRow = scales.count / (values.count / cols)
            return (values, { r, j in scales[r * perRow + (perRow == 1 ? 0 : j / group!)] })
        }
    }

    // FORMAT.md "Quantizing an activation" (static scale).
    static func quantize(_ x: [Float], scale: Float, qmax: Float) -> [Float] {
        let inverse: Float = scale > 0 ? 1 / scale : 0
        return x.map { min(max(($0 * inverse).rounded(.toNearestOrAwayFromZero), -qmax), qmax) }
    }

    /// x [L, C] quantized with the stored scale `name`, or with one scale per row when dynamic:
    /// the integers and each row's scale.
    static func quantizeRows(_ r: Reader, _ x: [Float], cols c: Int, scale name: String, qmax: Float) throws -> (q: [Float], scales: [Float]) {
        let rows = x.count / max(c, 1)
        let scales = r.dynamic ? (0..<rows).map { t in (0..<c).reduce(Float(0)) { max($0, abs(x[t * c + $1])) } / qmax }
            : [Float](repeating: try r.scalar(name), count: rows)
        var q = [Float](repeating: 0, count: x.count)
        for t in 0..<rows { for (j, v) in quantize(Array(x[(t * c)..<((t + 1) * c)]), scale: scales[t], qmax: qmax).enumerated() { q[t * c + j] = v } }
        return (q, scales)
    }

    /// A fake-quantized activation (the scan's inputs): q * scale, row by row.
    static func fakeQuantize(_ r: Reader, _ x: [Float], cols c: Int, scale name: String, qmax: Float) throws -> [Float] {
        let (q, s) = try quantizeRows(r, x, cols: c, scale: name, qmax: qmax)
        return q.enumerated().map { $1 * s[$0 / c] }
    }

    // FORMAT.md "A quantized linear": x [L, in] -> [L, out]; the weights under `module` (the
    // embedding's table for a tied head), the input scale under `inputScale`.
    static func linear(_ r: Reader, _ module: String, _ x: [Float], rows l: Int, cols inn: Int, qmax: Float, bias: Bool = false,
                       inputScale: String? = nil) throws -> [Float] {
        // Kept float (FORMAT.md, kept_float): an F32 weight, applied to the input as it comes.
        if try r.file.view(module + ".weight").dtype == .f32 {
            let w = try r.floats(module + ".weight"), out = w.count / inn
            let b = bias ? try r.floats(module + ".bias") : [Float](repeating: 0, count: out)
            return (0..<(l * out)).map { j in
                let (t, o) = (j / out, j % out)
                return (0..<inn).reduce(Float(0)) { $0 + x[t * inn + $1] * w[o * inn + $1] } + b[o]
            }
        }
        let (w, ws) = try r.weights(module, cols: inn)
        let out = w.count / inn
        let b = bias ? try r.floats(module + ".bias") : [Float](repeating: 0, count: out)
        let (q, rowScales) = try quantizeRows(r, x, cols: inn, scale: (inputScale ?? module) + ".input_scale", qmax: qmax)
        let g = r.group ?? inn
        var y = [Float](repeating: 0, count: l * out)
        for t in 0..<l {
            let sx = rowScales[t]
            for o in 0..<out {
                if r.group == nil {
                    var acc = 0
                    for i in 0..<inn { acc += Int(q[t * inn + i]) * w[o * inn + i] }
                    y[t * out + o] = Float(acc) * sx * ws(o, 0) + b[o]
                    continue
                }
                // Groups: each group's integer sum scaled by its own scale, added in order.
                var acc: Float = 0
                for g0 in stride(from: 0, to: inn, by: g) {
                    var isum = 0
                    for i in g0..<min(inn, g0 + g) { isum += Int(q[t * inn + i]) * w[o * inn + i] }
                    acc = acc + Float(isum) * (sx * ws(o, g0))
                }
                y[t * out + o] = acc + b[o]
            }
        }
        return y
    }

    /// Step 2: the causal depthwise conv on its quantized input [L, C] (one input scale per row when
    /// dynamic), weights per channel (never grouped), plus the bias; before SiLU.
    static func conv(_ r: Reader, _ m: String, _ input: [Float], channels c: Int, k: Int, qmax: Float) throws -> [Float] {
        let l = input.count / c
        let (q, rowScale) = try quantizeRows(r, input, cols: c, scale: m + "conv1d.input_scale", qmax: qmax)
        let (w, ws) = try r.weights(m + "conv1d", cols: k)
        let b = try r.floats(m + "conv1d.bias")
        return (0..<(l * c)).map { i in
            let (t, ch) = (i / c, i % c)
            var acc: Float = 0
            for j in 0..<k where t - k + 1 + j >= 0 { acc += Float(w[ch * k + j]) * ws(ch, 0) * q[(t - k + 1 + j) * c + ch] * rowScale[t - k + 1 + j] }
            return b[ch] + acc
        }
    }

    static func rmsNorm(_ u: [Float], rows l: Int, weight: [Float], eps: Float) -> [Float] {
        let d = weight.count
        var out = u
        for t in 0..<l {
            var ss: Float = 0
            for j in 0..<d { ss += u[t * d + j] * u[t * d + j] }
            let inv = 1 / (ss / Float(d) + eps).squareRoot()
            for j in 0..<d { out[t * d + j] = weight[j] * (u[t * d + j] * inv) }
        }
        return out
    }

    // FORMAT.md step 8: chi, Paley I and II, Sylvester W, R = (F ⊗ W)^T / sqrt(n).
    static func chi(_ a: Int, _ q: Int) -> Double {
        let r = ((a % q) + q) % q
        if r == 0 { return 0 }
        return (1..<q).contains { ($0 * $0) % q == r } ? 1 : -1
    }

    static func kron(_ a: [[Double]], _ b: [[Double]]) -> [[Double]] {
        let (na, nb) = (a.count, b.count)
        return (0..<(na * nb)).map { i in (0..<(na * nb)).map { j in a[i / nb][j / nb] * b[i % nb][j % nb] } }
    }

    static func factor(_ m: Int) -> [[Double]] {
        switch m {
        case 1: return [[1]]
        case 12, 20:
            let q = m - 1
            var f = [[Double]](repeating: [Double](repeating: 0, count: m), count: m)
            for j in 1..<m { f[0][j] = 1; f[j][0] = -1 }
            for i in 0..<q { for j in 0..<q { f[i + 1][j + 1] = chi(j - i, q) } }
            for i in 0..<m { f[i][i] += 1 }
            return f
        default:   // 28: Paley II, q = 13
            let q = 13, c1 = q + 1
            var c = [[Double]](repeating: [Double](repeating: 0, count: c1), count: c1)
            for j in 1..<c1 { c[0][j] = 1; c[j][0] = 1 }
            for i in 0..<q { for j in 0..<q { c[i + 1][j + 1] = chi(j - i, q) } }
            let identity = (0..<c1).map { i in (0..<c1).map { j in i == j ? 1.0 : 0 } }
            let (a, b) = (kron(c, [[1, 1], [1, -1]]), kron(identity, [[1, -1], [-1, -1]]))
            return zip(a, b).map { zip($0, $1).map { $0 + $1 } }
        }
    }

    static func rotation(_ n: Int) -> [[Double]] {
        let m = [1, 12, 20, 28].first { n % $0 == 0 && (n / $0) & (n / $0 - 1) == 0 }!
        var w: [[Double]] = [[1]]
        while w.count < n / m { w = kron(w, [[1, 1], [1, -1]]) }
        let h = kron(factor(m), w)
        let norm = 1 / Double(n).squareRoot()
        return (0..<n).map { i in (0..<n).map { j in h[j][i] * norm } }   // (F ⊗ W)^T / sqrt(n)
    }

    func testAReaderWrittenFromFormatMDGivesTheToolsLogits() throws {
        for name in fixtures { try checkReader(name) }
    }

    func checkReader(_ name: String) throws {
        let directory = Fixtures.root + "/quantized/" + name
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/config.json"))) as! [String: Any]
        let q = config["quantization"] as! [String: Any]
        let qmax = Float((1 << ((q["activation_bits"] as! Int) - 1)) - 1)
        let tied = q["tied_head"] as? Bool ?? false
        var r = Reader(file: try SafeTensorsFile(path: directory + "/model.safetensors"), group: q["group_size"] as? Int)
        r.dynamic = q["activation_scale"] as? String == "dynamic"
        // The source config as FORMAT.md maps it ("The source config"): transformers' keys or a
        // state-spaces config's, with their defaults; V padded to pad_vocab_size_multiple.
        let ssm = config["ssm_cfg"] as? [String: Any] ?? [:]
        let mamba2 = config["model_type"] as? String == "mamba2" || ssm["layer"] as? String == "Mamba2"
        let d = (config["hidden_size"] ?? config["d_model"]) as! Int
        let layers = (config["num_hidden_layers"] ?? config["n_layer"]) as! Int
        let n = (config["state_size"] ?? ssm["d_state"]) as? Int ?? (mamba2 ? 128 : 16)
        let k = (config["conv_kernel"] ?? ssm["d_conv"]) as? Int ?? 4
        let e = ((config["expand"] ?? ssm["expand"]) as? Int ?? 2) * d
        let rank = (config["time_step_rank"] ?? ssm["dt_rank"]) as? Int ?? (d + 15) / 16
        let eps = Float((config["layer_norm_epsilon"] ?? config["norm_epsilon"]) as? Double ?? 1e-5)
        var v = config["vocab_size"] as! Int
        if let m = config["pad_vocab_size_multiple"] as? Int, v % m != 0 { v += m - v % m }
        let tokens = name.hasPrefix("tiny-tied") ? self.tokens : [5, 17, 20, 3, 9, 42, 7, 13, 44, 25, 1, 18]
        let l = tokens.count
        func silu(_ x: Float) -> Float { x / (1 + exp(-x)) }
        func columns(_ x: [Float], _ width: Int, _ range: Range<Int>) -> [Float] {
            (0..<(x.count / width)).flatMap { t in x[(t * width + range.lowerBound)..<(t * width + range.upperBound)] }
        }

        // Embedding (a tied table has the head's bits and groups).
        let (emb, embScale) = try r.weights("backbone.embeddings", cols: d)
        XCTAssertEqual(emb.count, v * d, "\(name): the table has V (padded) rows")
        var u = [Float](repeating: 0, count: l * d)
        for (t, id) in tokens.enumerated() { for j in 0..<d { u[t * d + j] = Float(emb[id * d + j]) * embScale(id, j) } }

        for i in 0..<layers {
            let p = "backbone.layers.\(i).", m = p + "mixer."
            let h = Self.rmsNorm(u, rows: l, weight: try r.floats(p + "norm.weight"), eps: eps)
            let bias = r.file.names.contains(m + "in_proj.bias")
            let out = mamba2 ? try mamba2Mixer(r, m, h, config: config, d: d, e: e, n: n, k: k, eps: eps, qmax: qmax, bias: bias)
                : try mamba1Mixer(r, m, h, d: d, e: e, n: n, k: k, rank: rank, qmax: qmax, silu: silu, columns: columns)
            for j in 0..<(l * d) { u[j] += out[j] }
        }
        // Head: norm_f, the head-input matrix when present (h M), then lm_head or the tied table.
        var h = Self.rmsNorm(u, rows: l, weight: try r.floats("backbone.norm_f.weight"), eps: eps)
        if r.file.names.contains("lm_head.input_transform") {
            let mat = try r.floats("lm_head.input_transform")
            h = (0..<(l * d)).map { o in (0..<d).reduce(Float(0)) { $0 + h[(o / d) * d + $1] * mat[$1 * d + o % d] } }
        }
        let logits = try Self.linear(r, tied ? "backbone.embeddings" : "lm_head", h, rows: l, cols: d, qmax: qmax, inputScale: "lm_head")
        let committed = try SafeTensorsFile(path: directory + "-logits.safetensors").view("logits").tensor()
        XCTAssertEqual(logits.count, committed.count)
        let err = maxAbsDifference(logits, committed.storage)
        XCTAssertLessThanOrEqual(err, 1e-3 * committed.absMax, "\(name): max |Δlogit| \(err) of \(committed.absMax)")
    }

    /// The Mamba-1 mixer, steps 1 to 9 of "The forward, exactly".
    func mamba1Mixer(_ r: Reader, _ m: String, _ h: [Float], d: Int, e: Int, n: Int, k: Int, rank: Int, qmax: Float,
                     silu: (Float) -> Float, columns: ([Float], Int, Range<Int>) -> [Float]) throws -> [Float] {
        let l = h.count / d
        let xz = try Self.linear(r, m + "in_proj", h, rows: l, cols: d, qmax: qmax)               // [L, 2E]
        // Conv (step 2) on x = columns 0..<E.
        let xc = try Self.conv(r, m, columns(xz, 2 * e, 0..<e), channels: e, k: k, qmax: qmax).map(silu)
        // Step 3: fake-quantized x; x_proj (kept float or not) reads these values.
        let xq = try Self.fakeQuantize(r, xc, cols: e, scale: m + "x_scale", qmax: qmax)
        // Step 4.
        let width = rank + 2 * n
        let xdbl = try Self.linear(r, m + "x_proj", xq, rows: l, cols: e, qmax: qmax)             // [L, R + 2N]
        let dtLow = columns(xdbl, width, 0..<rank)
        let b = try Self.fakeQuantize(r, columns(xdbl, width, rank..<(rank + n)), cols: n, scale: m + "B_scale", qmax: qmax)
        let c = try Self.fakeQuantize(r, columns(xdbl, width, (rank + n)..<width), cols: n, scale: m + "C_scale", qmax: qmax)
        // Step 5.
        let dt = try Self.fakeQuantize(r, try Self.linear(r, m + "dt_proj", dtLow, rows: l, cols: rank, qmax: qmax, bias: true), cols: e,
                                       scale: m + "dt_scale", qmax: qmax)
        // Step 6, in Double.
        let aLog = try r.floats(m + "A_log"), dSkip = try r.floats(m + "D")
        var state = [Double](repeating: 0, count: e * n)
        var y = [Float](repeating: 0, count: l * e)
        for t in 0..<l {
            for ch in 0..<e {
                let v = Double(dt[t * e + ch])
                let delta = v > 20 ? v : log1p(exp(v))
                let xv = Double(xq[t * e + ch])
                var acc = 0.0
                for s in 0..<n {
                    let a = -exp(Double(aLog[ch * n + s]))
                    state[ch * n + s] = exp(delta * a) * state[ch * n + s] + delta * Double(b[t * n + s]) * xv
                    acc += state[ch * n + s] * Double(c[t * n + s])
                }
                y[t * e + ch] = Float(acc + Double(dSkip[ch]) * xv)
            }
        }
        // Step 7: the gate, S-SiLU where gate_smooth is present.
        let s = r.file.names.contains(m + "gate_smooth") ? try r.floats(m + "gate_smooth") : [Float](repeating: 1, count: e)
        var g = (0..<(l * e)).map { j -> Float in
            let z = xz[(j / e) * 2 * e + e + j % e], sc = s[j % e]
            return y[j] * z / (1 + exp(-sc * z))
        }
        try rotate(r, m, &g, width: e)
        return try Self.linear(r, m + "out_proj", g, rows: l, cols: e, qmax: qmax)            // step 9
    }

    /// Step 8: the online Hadamard where hadamard_signs are present.
    func rotate(_ r: Reader, _ m: String, _ g: inout [Float], width e: Int) throws {
        guard r.file.names.contains(m + "out_proj.hadamard_signs") else { return }
        let signs = try r.floats(m + "out_proj.hadamard_signs")
        let rot = Self.rotation(e)
        for t in 0..<(g.count / e) {
            let row = (0..<e).map { Double(g[t * e + $0] * signs[$0]) }
            for j in 0..<e { g[t * e + j] = Float((0..<e).reduce(0.0) { $0 + row[$1] * rot[$1][j] }) }
        }
    }

    /// The Mamba-2 mixer as "The forward, exactly" gives it: E = expand x hidden_size, H heads of
    /// P (num_heads, head_dim), G groups, X = E + 2 G N; x, B, C and dt each quantized on their own.
    func mamba2Mixer(_ r: Reader, _ m: String, _ h: [Float], config: [String: Any], d: Int, e: Int, n: Int, k: Int, eps: Float, qmax: Float,
                     bias: Bool) throws -> [Float] {
        let l = h.count / d
        let heads = config["num_heads"] as? Int ?? e / (config["head_dim"] as! Int)
        let (p, groups) = (e / heads, config["n_groups"] as! Int)
        let (gn, x) = (groups * n, e + 2 * groups * n)
        let width = e + x + heads
        let limit = config["time_step_limit"] as? [Double] ?? [0, .infinity]
        func silu(_ v: Float) -> Float { v / (1 + exp(-v)) }
        func cols(_ a: [Float], _ w: Int, _ range: Range<Int>) -> [Float] { (0..<l).flatMap { t in a[(t * w + range.lowerBound)..<(t * w + range.upperBound)] } }
        let proj = try Self.linear(r, m + "in_proj", h, rows: l, cols: d, qmax: qmax, bias: bias)  // [L, E + X + H]
        let z = cols(proj, width, 0..<e)
        // The conv over x, B and C: its input one module input, quantized as a whole.
        let conv = try Self.conv(r, m, cols(proj, width, e..<(e + x)), channels: x, k: k, qmax: qmax).map(silu)
        // The scan's inputs, each split quantized on its own.
        let xs = try Self.fakeQuantize(r, cols(conv, x, 0..<e), cols: e, scale: m + "x_scale", qmax: qmax)
        let b = try Self.fakeQuantize(r, cols(conv, x, e..<(e + gn)), cols: gn, scale: m + "B_scale", qmax: qmax)
        let c = try Self.fakeQuantize(r, cols(conv, x, (e + gn)..<x), cols: gn, scale: m + "C_scale", qmax: qmax)
        let dtRaw = try Self.fakeQuantize(r, cols(proj, width, (e + x)..<width), cols: heads, scale: m + "dt_scale", qmax: qmax)
        let (dtBias, aLog, dSkip) = (try r.floats(m + "dt_bias"), try r.floats(m + "A_log"), try r.floats(m + "D"))
        var state = [Double](repeating: 0, count: e * n)
        var y = [Float](repeating: 0, count: l * e)
        for t in 0..<l {
            for hd in 0..<heads {
                let v = Double(dtRaw[t * heads + hd] + dtBias[hd])
                let delta = min(max(v > 20 ? v : log1p(exp(v)), limit[0]), limit[1])
                let (a, g) = (-exp(Double(aLog[hd])), hd / (heads / groups))
                for pp in 0..<p {
                    let ch = hd * p + pp, xv = Double(xs[t * e + ch])
                    var acc = 0.0
                    for s in 0..<n {
                        state[ch * n + s] = exp(delta * a) * state[ch * n + s] + delta * Double(b[t * gn + g * n + s]) * xv
                        acc += state[ch * n + s] * Double(c[t * gn + g * n + s])
                    }
                    y[t * e + ch] = Float(acc + Double(dSkip[hd]) * xv)
                }
            }
        }
        // The gate, then the group RMSNorm over groups of E / G with its weight.
        let w = try r.floats(m + "norm.weight"), size = e / groups
        var g = (0..<(l * e)).map { j in y[j] * silu(z[j]) }
        for t in 0..<l {
            for grp in 0..<groups {
                let base = t * e + grp * size
                var ss: Float = 0
                for j in 0..<size { ss += g[base + j] * g[base + j] }
                let inv = 1 / (ss / Float(size) + eps).squareRoot()
                for j in 0..<size { g[base + j] = w[grp * size + j] * (g[base + j] * inv) }
            }
        }
        try rotate(r, m, &g, width: e)
        return try Self.linear(r, m + "out_proj", g, rows: l, cols: e, qmax: qmax, bias: bias)
    }

    /// FORMAT.md's tensor order ("Files hold them in this order"): the file order of every
    /// fixture is the documented one.
    func testTensorsAreInTheDocumentedOrder() throws {
        let mamba1 = ["in_proj", "conv1d", "x_proj", "dt_proj", "A_log", "D", "out_proj", "x_scale", "dt_scale", "B_scale", "C_scale",
                      "gate_smooth", "out_proj.hadamard_signs"]
        let suffixes = ["weight", "weight_scale", "input_scale", "bias"]
        for name in fixtures {
            let directory = Fixtures.root + "/quantized/" + name
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/config.json"))) as! [String: Any]
            let tied = (config["quantization"] as! [String: Any])["tied_head"] as? Bool ?? false
            let layers = (config["num_hidden_layers"] ?? config["n_layer"]) as! Int
            let mixer = config["model_type"] as? String == "mamba2"
                ? ["in_proj", "conv1d", "dt_bias", "A_log", "D", "norm.weight", "out_proj", "x_scale", "dt_scale", "B_scale", "C_scale", "out_proj.hadamard_signs"]
                : mamba1
            // (part, position within it): part 0 the embedding, 1...L the layers, then a tied table, then the head's tensors.
            func rank(_ n: String) -> [Int] {
                if n.hasPrefix("backbone.embeddings.") { return [tied ? layers + 1 : 0, suffixes.firstIndex(of: String(n.split(separator: ".").last!))!] }
                if n == "backbone.norm_f.weight" { return [layers + 2, 0] }
                if n == "lm_head.input_transform" { return [layers + 2, 1] }
                if n.hasPrefix("lm_head.") { return [layers + 2, 2 + suffixes.firstIndex(of: String(n.dropFirst("lm_head.".count)))!] }
                let parts = n.split(separator: ".").map(String.init)   // backbone.layers.L.(norm.weight | mixer.REST)
                let layer = Int(parts[2])!
                if parts[3] == "norm" { return [1 + layer, 0] }
                let rest = parts[4...].joined(separator: ".")
                if let i = mixer.firstIndex(of: rest) { return [1 + layer, 1 + 10 * i] }
                let module = parts[4], suffix = parts[5...].joined(separator: ".")
                return [1 + layer, 1 + 10 * mixer.firstIndex(of: module)! + suffixes.firstIndex(of: suffix)!]
            }
            let names = try SafeTensorsFile(path: directory + "/model.safetensors").names
            XCTAssertEqual(names, names.sorted { rank($0).lexicographicallyPrecedes(rank($1)) }, name)
        }
    }

    /// The Paley factors FORMAT.md defines are Hadamard matrices (F F^T = m I) and R is orthogonal.
    func testTheDefinedRotationIsOrthogonal() {
        for m in [12, 20, 28] {
            let f = Self.factor(m)
            for i in 0..<m { for j in 0..<m { XCTAssertEqual((0..<m).reduce(0.0) { $0 + f[i][$1] * f[j][$1] }, i == j ? Double(m) : 0, "m \(m)") } }
        }
        let r = Self.rotation(24)
        for i in 0..<24 { for j in 0..<24 { XCTAssertEqual((0..<24).reduce(0.0) { $0 + r[i][$1] * r[j][$1] }, i == j ? 1 : 0, accuracy: 1e-12) } }
    }

    /// FORMAT.md's rotation is the tool's, side included, for every factor (the fixture's E = 64 is a
    /// pure power of two, where the side cannot show; the bundled model's 768 = 12 x 64 is not).
    func testTheDefinedRotationIsTheTools() throws {
        for n in [64, 24, 40, 56, 768] {
            let tool = try XCTUnwrap(Hadamard(size: n)).matrix, doc = Self.rotation(n)
            let err = (0..<(n * n)).map { abs(tool[$0] - doc[$0 / n][$0 % n]) }.max()!
            XCTAssertLessThan(err, 1e-12, "n \(n)")
        }
    }
}
