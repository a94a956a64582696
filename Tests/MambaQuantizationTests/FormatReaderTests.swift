import Foundation
import MambaTensors
import TestSupport
import XCTest

/// A reader of the quantized format written from FORMAT.md ("The forward, exactly") alone: raw
/// tensors from the file, plain loops, none of the library's model, ops, Hadamard or quantizers.
/// It must give the committed fixture's logits, so FORMAT.md says everything needed to run a
/// checkpoint (the online Hadamard's construction and side, where each scale applies).
final class FormatReaderTests: XCTestCase {
    let directory = Fixtures.root + "/quantized/tiny-tied-mambaquant-w8a8"
    let tokens = [5, 17, 200, 3, 99, 42, 7, 130, 64, 250, 1, 18]

    struct Reader {
        let file: SafeTensorsFile
        func floats(_ name: String) throws -> [Float] { try file.view(name).floats() }
        func int8s(_ name: String) throws -> [Int8] { try file.view(name).int8s() }
        func shape(_ name: String) throws -> [Int] { try file.view(name).shape }
        func scalar(_ name: String) throws -> Float { try floats(name)[0] }
    }

    // FORMAT.md "Quantizing an activation" (static scale).
    static func quantize(_ x: [Float], scale: Float, qmax: Float) -> [Float] {
        let inverse: Float = scale > 0 ? 1 / scale : 0
        return x.map { min(max(($0 * inverse).rounded(.toNearestOrAwayFromZero), -qmax), qmax) }
    }

    // FORMAT.md "A quantized linear": x [L, in] -> [L, out].
    static func linear(_ r: Reader, _ module: String, _ x: [Float], rows l: Int, qmax: Float, bias: Bool = false) throws -> [Float] {
        let w = try r.int8s(module + ".weight"), shape = try r.shape(module + ".weight")
        let (out, inn) = (shape[0], shape[1])
        let ws = try r.floats(module + ".weight_scale"), sx = try r.scalar(module + ".input_scale")
        let b = bias ? try r.floats(module + ".bias") : [Float](repeating: 0, count: out)
        let q = quantize(x, scale: sx, qmax: qmax)
        var y = [Float](repeating: 0, count: l * out)
        for t in 0..<l {
            for o in 0..<out {
                var acc = 0
                for i in 0..<inn { acc += Int(q[t * inn + i]) * Int(w[o * inn + i]) }
                y[t * out + o] = Float(acc) * sx * ws[o] + b[o]
            }
        }
        return y
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
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/config.json"))) as! [String: Any]
        let q = config["quantization"] as! [String: Any]
        XCTAssertEqual(q["activation_scale"] as? String, "static")
        let qmax = Float((1 << ((q["activation_bits"] as! Int) - 1)) - 1)
        let r = Reader(file: try SafeTensorsFile(path: directory + "/model.safetensors"))
        let (d, layers, n, k) = (config["hidden_size"] as! Int, config["num_hidden_layers"] as! Int, config["state_size"] as! Int, config["conv_kernel"] as! Int)
        let e = (config["expand"] as! Int) * d
        let rank = config["time_step_rank"] as! Int
        let eps = Float(config["layer_norm_epsilon"] as! Double)
        let l = tokens.count
        func silu(_ v: Float) -> Float { v / (1 + exp(-v)) }

        // Embedding.
        let emb = try r.int8s("backbone.embeddings.weight"), embScale = try r.floats("backbone.embeddings.weight_scale")
        var u = [Float](repeating: 0, count: l * d)
        for (t, id) in tokens.enumerated() { for j in 0..<d { u[t * d + j] = Float(emb[id * d + j]) * embScale[id] } }

        for i in 0..<layers {
            let p = "backbone.layers.\(i).", m = p + "mixer."
            let h = Self.rmsNorm(u, rows: l, weight: try r.floats(p + "norm.weight"), eps: eps)
            let xz = try Self.linear(r, m + "in_proj", h, rows: l, qmax: qmax)                        // [L, 2E]
            // Conv (step 2) on x = columns 0..<E.
            let convIn = Self.quantize((0..<(l * e)).map { xz[($0 / e) * 2 * e + $0 % e] }, scale: try r.scalar(m + "conv1d.input_scale"), qmax: qmax)
            let cw = try r.int8s(m + "conv1d.weight"), cs = try r.floats(m + "conv1d.weight_scale"), cb = try r.floats(m + "conv1d.bias")
            let sIn = try r.scalar(m + "conv1d.input_scale")
            var xc = [Float](repeating: 0, count: l * e)
            for t in 0..<l {
                for c in 0..<e {
                    var acc = 0
                    for j in 0..<k where t - k + 1 + j >= 0 { acc += Int(cw[c * k + j]) * Int(convIn[(t - k + 1 + j) * e + c]) }
                    xc[t * e + c] = silu(cb[c] + Float(acc) * sIn * cs[c])
                }
            }
            // Step 3: fake-quantized x.
            let xScale = try r.scalar(m + "x_scale")
            let xq = Self.quantize(xc, scale: xScale, qmax: qmax).map { $0 * xScale }
            // Step 4.
            let xdbl = try Self.linear(r, m + "x_proj", xq, rows: l, qmax: qmax)                      // [L, R + 2N]
            let width = rank + 2 * n
            let dtLow = (0..<(l * rank)).map { xdbl[($0 / rank) * width + $0 % rank] }
            let (bScale, cScale) = (try r.scalar(m + "B_scale"), try r.scalar(m + "C_scale"))
            let b = Self.quantize((0..<(l * n)).map { xdbl[($0 / n) * width + rank + $0 % n] }, scale: bScale, qmax: qmax).map { $0 * bScale }
            let c = Self.quantize((0..<(l * n)).map { xdbl[($0 / n) * width + rank + n + $0 % n] }, scale: cScale, qmax: qmax).map { $0 * cScale }
            // Step 5.
            let dtScale = try r.scalar(m + "dt_scale")
            let dt = Self.quantize(try Self.linear(r, m + "dt_proj", dtLow, rows: l, qmax: qmax, bias: true), scale: dtScale, qmax: qmax).map { $0 * dtScale }
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
            // Step 7: S-SiLU.
            let s = try r.floats(m + "gate_smooth")
            var g = (0..<(l * e)).map { j -> Float in
                let z = xz[(j / e) * 2 * e + e + j % e], sc = s[j % e]
                return y[j] * z / (1 + exp(-sc * z))
            }
            // Step 8: the online Hadamard.
            let signs = try r.floats(m + "out_proj.hadamard_signs")
            let rot = Self.rotation(e)
            for t in 0..<l {
                let row = (0..<e).map { Double(g[t * e + $0] * signs[$0]) }
                for j in 0..<e { g[t * e + j] = Float((0..<e).reduce(0.0) { $0 + row[$1] * rot[$1][j] }) }
            }
            // Step 9 and the residual.
            let out = try Self.linear(r, m + "out_proj", g, rows: l, qmax: qmax)
            for j in 0..<(l * d) { u[j] += out[j] }
        }
        let logits = try Self.linear(r, "lm_head", Self.rmsNorm(u, rows: l, weight: try r.floats("backbone.norm_f.weight"), eps: eps), rows: l, qmax: qmax)
        let committed = try SafeTensorsFile(path: Fixtures.root + "/quantized/tiny-tied-mambaquant-w8a8-logits.safetensors").view("logits").tensor()
        XCTAssertEqual(logits.count, committed.count)
        let err = maxAbsDifference(logits, committed.storage)
        XCTAssertLessThanOrEqual(err, 1e-3 * committed.absMax, "max |Δlogit| \(err) of \(committed.absMax)")
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
