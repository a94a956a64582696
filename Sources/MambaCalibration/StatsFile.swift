import Foundation
import MambaModel
import MambaTensors

/// The stats file of `calibrate` (docs/DESIGN.md section 5, format version 1): safetensors with
/// `layers.{i}.{site}.{stat}` and `{site}.{stat}` tensors, the pooled residual moments as
/// `residual.{sum,sumsq_matrix,count}`, the token windows as `calibration.tokens` I32
/// [samples, seq_len] (a Vision Mamba's: its calibration images as `calibration.images` F32
/// [n, C, H, W], which quantize's second pass replays), and metadata tying it to the checkpoint and
/// data it came from.
public struct StatsFile: Sendable, Equatable {
    public static let formatVersion = "1"
    public static let kind = "mambaquant-calibration"

    public struct Provenance: Sendable, Equatable {
        public var checkpointSHA256: String
        public var dataSHA256: String
        public var dataFiles: [String]
        public var seed: UInt64

        public init(checkpointSHA256: String, dataSHA256: String, dataFiles: [String], seed: UInt64) {
            self.checkpointSHA256 = checkpointSHA256; self.dataSHA256 = dataSHA256; self.dataFiles = dataFiles; self.seed = seed
        }
    }

    public var stats: CalibrationStats
    public var windows: CalibrationWindows
    /// A Vision Mamba's calibration images [n, C, H, W] (nil for a language model).
    public var images: Tensor?
    public var provenance: Provenance
    /// SHA-256 of the file's bytes as read (nil for statistics not read from a file).
    public var fileSHA256: String?

    public init(stats: CalibrationStats, windows: CalibrationWindows, images: Tensor? = nil, provenance: Provenance, fileSHA256: String? = nil) {
        self.stats = stats; self.windows = windows; self.images = images; self.provenance = provenance; self.fileSHA256 = fileSHA256
    }

    static let pooledPrefix = "residual"
    static let tokensName = "calibration.tokens"
    static let imagesName = "calibration.images"

    public func write(to path: String) throws {
        var w = SafeTensorsWriter()
        for key in stats.sites.keys.sorted() {
            let s = stats.sites[key]!
            let p = key.description
            w.add("\(p).absmax", shape: [s.channels], floats: s.range.absmax)
            w.add("\(p).min", shape: [s.channels], floats: s.range.min)
            w.add("\(p).max", shape: [s.channels], floats: s.range.max)
            w.add("\(p).hist", shape: [MagnitudeHistogram.bins], doubles: s.histogram.counts)
            w.add("\(p).sum", shape: [s.channels], doubles: s.sum)
            w.add("\(p).count", shape: [], int64s: [Int64(s.count)])
            if let m = s.moments {
                w.add("\(p).sumsq_matrix", shape: [m.channels, m.channels], doubles: m.symmetrized.sumOfProducts)
            }
        }
        let m = stats.pooledResidual
        w.add("\(Self.pooledPrefix).sum", shape: [m.channels], doubles: m.sum)
        w.add("\(Self.pooledPrefix).sumsq_matrix", shape: [m.channels, m.channels], doubles: m.symmetrized.sumOfProducts)
        w.add("\(Self.pooledPrefix).count", shape: [], int64s: [Int64(m.count)])
        if let images {
            w.add(Self.imagesName, images)
        } else {
            w.add(Self.tokensName, shape: [windows.windows.count, windows.seqLength], int32s: windows.windows.flatMap { $0.map { Int32($0) } })
        }
        let sites = stats.sites.keys.sorted().map(\.description)
        w.metadata = [
            "format": Self.kind, "format_version": Self.formatVersion, "tool_version": MambaQuantVersion.current,
            "checkpoint_sha256": provenance.checkpointSHA256, "data_sha256": provenance.dataSHA256,
            "data_files": jsonArray(provenance.dataFiles), "samples": String(images?.shape[0] ?? windows.windows.count),
            "seq_len": String(windows.seqLength), "seed": String(provenance.seed), "sites": jsonArray(sites),
            "histogram": "4096 bins of |x| by float exponent and top 4 mantissa bits (16 per octave)",
        ]
        try w.write(to: path)
    }

    public static func read(path: String) throws -> StatsFile {
        guard FileManager.default.fileExists(atPath: path) else { throw MambaError(.missingFile, "stats file \(path) not found") }
        // Read into memory (a few MB) and hashed from the same bytes: the hash a checkpoint
        // records is of what was parsed, even if the file changes meanwhile.
        let f = try SafeTensorsFile(path: path, copy: true)
        guard f.metadata["format"] == kind else {
            throw MambaError(.badFile, "\(path) is not a mambaquant stats file (made by `mambaquant calibrate`)")
        }
        guard f.metadata["format_version"] == formatVersion else {
            throw MambaError(.badFile, "\(path) has stats format version \(f.metadata["format_version"] ?? "none"); this mambaquant reads version \(formatVersion)")
        }
        func need(_ key: String) throws -> String {
            guard let v = f.metadata[key] else { throw MambaError(.badFile, "\(path): metadata lacks \(key)") }
            return v
        }
        // Every tensor is checked before use: a forged or corrupt file must be named, not trap
        // (a count of shape [0], a sumsq_matrix of the wrong size) or feed Inf into the scales.
        func finite<T: BinaryFloatingPoint>(_ name: String, _ values: [T]) throws -> [T] {
            if let i = values.firstIndex(where: { !$0.isFinite }) {
                throw MambaError(.badFile, "\(path): \(name) holds \(values[i]) at index \(i); statistics must be finite")
            }
            return values
        }
        func view(_ name: String, _ shape: [Int]) throws -> TensorView {
            guard f.contains(name) else { throw MambaError(.badFile, "\(path) lacks \(name)") }
            let v = try f.view(name)
            guard v.shape == shape else { throw MambaError(.shapeMismatch, "\(path): \(name) has shape \(shapeString(v.shape)), expected \(shapeString(shape))") }
            return v
        }
        func floats(_ name: String, _ shape: [Int]) throws -> [Float] { try finite(name, try view(name, shape).floats()) }
        func doubles(_ name: String, _ shape: [Int]) throws -> [Double] { try finite(name, try view(name, shape).doubles()) }
        func count(_ name: String) throws -> Int {
            guard f.contains(name), case let v = try f.view(name), v.count == 1, let c = try v.integers().first, c >= 0 else {
                throw MambaError(.badFile, "\(path): \(name) must hold one non-negative integer")
            }
            return c
        }
        var sites: [SiteKey: SiteStatistics] = [:]
        for name in f.names where name.hasSuffix(".absmax") {
            let p = String(name.dropLast(".absmax".count))
            guard let key = SiteKey(prefix: p) else { throw MambaError(.badFile, "\(path): unknown site \(p)") }
            let absmaxView = try f.view(name)
            guard absmaxView.shape.count == 1, absmaxView.count > 0 else {
                throw MambaError(.shapeMismatch, "\(path): \(name) has shape \(shapeString(absmaxView.shape)), expected [channels]")
            }
            let c = absmaxView.count
            let absmax = try floats(name, [c])
            var moments: Moments?
            if f.contains("\(p).sumsq_matrix") {
                moments = Moments(sum: try doubles("\(p).sum", [c]), sumOfProducts: try doubles("\(p).sumsq_matrix", [c, c]), count: try count("\(p).count"))
            }
            sites[key] = SiteStatistics(
                range: ChannelRange(absmax: absmax, min: try floats("\(p).min", [c]), max: try floats("\(p).max", [c])),
                histogram: MagnitudeHistogram(counts: try doubles("\(p).hist", [MagnitudeHistogram.bins])),
                sum: try doubles("\(p).sum", [c]), count: try count("\(p).count"), moments: moments)
        }
        let pooledChannels = try f.contains("\(pooledPrefix).sum") ? f.view("\(pooledPrefix).sum").count : 0
        let pooled = Moments(
            sum: try doubles("\(pooledPrefix).sum", [pooledChannels]),
            sumOfProducts: try doubles("\(pooledPrefix).sumsq_matrix", [pooledChannels, pooledChannels]),
            count: try count("\(pooledPrefix).count"))
        var windows = CalibrationWindows(seqLength: 0, windows: [])
        var images: Tensor? = nil
        if f.contains(imagesName) {
            let v = try f.view(imagesName)
            guard v.shape.count == 4, v.shape[0] > 0, v.dtype == .f32 else {
                throw MambaError(.badFile, "\(path): \(imagesName) is not F32 [n, C, H, W] with n > 0")
            }
            images = Tensor(shape: v.shape, storage: try finite(imagesName, try v.floats()))
        } else {
            guard f.contains(tokensName) else { throw MambaError(.badFile, "\(path) lacks \(tokensName) (the calibration windows)") }
            let tokens = try f.view(tokensName)
            guard tokens.shape.count == 2 else { throw MambaError(.badFile, "\(path): \(tokensName) is not [samples, seq_len]") }
            let ids = try tokens.integers()
            let (n, l) = (tokens.shape[0], tokens.shape[1])
            windows = CalibrationWindows(seqLength: l, windows: (0..<n).map { Array(ids[($0 * l)..<(($0 + 1) * l)]) })
        }
        let dataFiles = (try? JSONSerialization.jsonObject(with: Data(try need("data_files").utf8))) as? [String] ?? []
        return StatsFile(
            stats: CalibrationStats(sites: sites, pooledResidual: pooled), windows: windows, images: images,
            provenance: Provenance(checkpointSHA256: try need("checkpoint_sha256"), dataSHA256: try need("data_sha256"),
                                   dataFiles: dataFiles, seed: UInt64(try need("seed")) ?? 0),
            fileSHA256: f.sha256)
    }

    /// Refuses statistics gathered on another checkpoint.
    public func checkBelongs(toCheckpointSHA256 sha: String, checkpoint: String) throws {
        guard provenance.checkpointSHA256 == sha else {
            throw MambaError(.mismatchedInputs, "the stats file was made from another checkpoint (sha256 \(provenance.checkpointSHA256.prefix(12))…), not \(checkpoint) (sha256 \(sha.prefix(12))…): run `mambaquant calibrate` on this model")
        }
    }
}

extension SiteKey {
    /// Parses `layers.{i}.{site}` or `{site}`.
    init?(prefix: String) {
        let parts = prefix.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 3, parts[0] == "layers", let i = Int(parts[1]), Site.isValidName(parts[2]), parts[2] != Site.lmHeadInput.rawValue {
            // Any name here; whether layer i's kind has the site is the model's to say (MethodPlan.checkWidths).
            self.init(layer: i, site: Site(String(parts[2])))
        } else if parts.count == 1, prefix == Site.lmHeadInput.rawValue {
            self.init(layer: nil, site: .lmHeadInput)
        } else {
            return nil
        }
    }
}

/// The sha256 of a checkpoint's weight files in index order (docs/DESIGN.md section 5).
public func checkpointSHA256(directory: String) throws -> String {
    let store = try TensorStore(directory: directory)
    return try SHA256.hex(ofFiles: store.files.map(\.path))
}

private func jsonArray(_ items: [String]) -> String {
    let data = try! JSONSerialization.data(withJSONObject: items, options: [.sortedKeys, .withoutEscapingSlashes])
    return String(decoding: data, as: UTF8.self)
}
