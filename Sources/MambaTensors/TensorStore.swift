import Foundation

/// The weight files of a checkpoint directory: `model.safetensors`, or the shards that
/// `model.safetensors.index.json` names (Hugging Face's sharded layout), seen as one set of tensors.
public final class TensorStore: @unchecked Sendable {
    public let directory: String
    /// Weight files in index order (the order "checkpoint sha256" hashes them in, docs/DESIGN.md section 5).
    public let files: [SafeTensorsFile]
    private let owner: [String: SafeTensorsFile]

    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    public init(directory: String) throws {
        self.directory = directory
        let fm = FileManager.default
        let single = directory + "/" + Self.singleFileName
        let index = directory + "/" + Self.indexFileName
        var files: [SafeTensorsFile] = []
        var owner: [String: SafeTensorsFile] = [:]
        if fm.fileExists(atPath: single) {
            let f = try SafeTensorsFile(path: single)
            files = [f]
            for n in f.names { owner[n] = f }
        } else if fm.fileExists(atPath: index) {
            guard let data = try contentsOfRegularFile(atPath: index),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = json["weight_map"] as? [String: String]
            else {
                throw MambaError(.badFile, "\(index) is not a safetensors index (no weight_map object)")
            }
            let shardNames = Array(Set(map.values)).sorted()
            // A shard is a file of this directory: a name with a path in it would reach outside.
            if let bad = shardNames.first(where: { $0.isEmpty || $0.contains("/") || $0 == "." || $0 == ".." }) {
                throw MambaError(.badFile, "\(index) names shard \"\(bad.prefix(80))\", which is not a file name in \(directory)")
            }
            var byName: [String: SafeTensorsFile] = [:]
            for shard in shardNames {
                let f = try SafeTensorsFile(path: directory + "/" + shard)
                byName[shard] = f
                files.append(f)
            }
            for (tensor, shard) in map {
                guard let f = byName[shard], f.contains(tensor) else {
                    throw MambaError(.missingTensor, "\(index) puts \(tensor) in \(shard), which does not hold it")
                }
                owner[tensor] = f
            }
            for f in files {
                for n in f.names where owner[n] !== f {
                    if let other = owner[n] {
                        throw MambaError(.badFile, "tensor \(n) is in both \(other.path) and \(f.path); \(index) lists it once")
                    }
                    throw MambaError(.unusedTensor, "\(f.path) holds \(n), which \(index) does not list")
                }
            }
        } else {
            throw MambaError(.missingFile, "\(directory) has neither \(Self.singleFileName) nor \(Self.indexFileName)")
        }
        self.files = files
        self.owner = owner
    }

    public var names: [String] { files.flatMap { f in f.names.filter { owner[$0] === f } } }

    public func contains(_ name: String) -> Bool { owner[name] != nil }

    public func view(_ name: String) throws -> TensorView {
        guard let f = owner[name] else {
            throw MambaError(.missingTensor, "checkpoint \(directory) has no tensor \(name)")
        }
        return try f.view(name)
    }

    /// Bytes of the weight files on disk.
    public var bytesOnDisk: Int { files.reduce(0) { $0 + $1.fileSize } }
}
