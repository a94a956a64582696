import MambaTensors

// Where a family's checkpoint keeps the tensors that the tool names "backbone.…" (docs/DESIGN.md
// section 1, "Hybrids"). Inside the tool a layer is one norm and one mixer
// (backbone.layers.N.norm.weight, backbone.layers.N.mixer.KEY); a Bamba or Granite-4.0-H decoder
// layer holds two of them (the Mamba-2 or attention mixer behind input_layernorm, then the MLP
// behind pre_ff_layernorm / post_attention_layernorm), so its tool layers 2i and 2i + 1 map to
// file layer i. Upstream names: transformers models/bamba/modeling_bamba.py (BambaDecoderLayer),
// models/granitemoehybrid/modeling_granitemoehybrid.py (GraniteMoeHybridDecoderLayer).

/// One tool layer's names in the file, after the root: its mixer's prefix and its norm's weight.
public struct LayerFileNames: Sendable, Equatable {
    public var mixer: String
    public var norm: String

    public init(mixer: String, norm: String) {
        self.mixer = mixer
        self.norm = norm
    }
}

/// A family's tensor names in the file.
public struct CheckpointLayout: Sendable, Equatable {
    /// The prefixes the family's files put before the model's own tensors, the first found wins
    /// (Mamba and the hub's Nemotron-H use "backbone.", transformers 5 writes "model.").
    public var roots: [String]
    /// The embedding's and the final norm's names after the root.
    public var embedding: String
    public var normF: String
    /// Each tool layer's names after the root (nil: layers.N.mixer. and layers.N.norm.weight).
    public var layers: [LayerFileNames]?

    public init(roots: [String], embedding: String, normF: String, layers: [LayerFileNames]?) {
        (self.roots, self.embedding, self.normF, self.layers) = (roots, embedding, normF, layers)
    }

    /// Mamba-1, Falcon-Mamba, Mamba-2 and Nemotron-H: the tool's own names.
    public static let mamba = CheckpointLayout(roots: ["backbone.", "model."], embedding: "embeddings.weight", normF: "norm_f.weight", layers: nil)

    /// A family whose decoder layers hold a mixer and an MLP each (`mixers[i]` is file layer i's
    /// mixer module: "mamba" or "self_attn", "" where the mixer's tensors sit in several modules
    /// of the layer, as Falcon-H1's parallel mamba and self_attn do; `mlps[i]` its MLP's, "" for
    /// Granite's experts and shared MLP), under "model.".
    static func twoBlocks(mixers: [String], mlps: [String], mlpNorm: String, normF: String) -> CheckpointLayout {
        precondition(mixers.count == mlps.count)
        var layers: [LayerFileNames] = []
        for (i, (m, mlp)) in zip(mixers, mlps).enumerated() {
            let prefix = { (module: String) in "layers.\(i)." + (module.isEmpty ? "" : module + ".") }
            layers.append(LayerFileNames(mixer: prefix(m), norm: "layers.\(i).input_layernorm.weight"))
            layers.append(LayerFileNames(mixer: prefix(mlp), norm: "layers.\(i).\(mlpNorm).weight"))
        }
        return CheckpointLayout(roots: ["model."], embedding: "embed_tokens.weight", normF: normF, layers: layers)
    }

    /// The file's name for a tool-side name under `root`.
    public func fileName(_ canonical: String, root: String) -> String {
        let tool = "backbone."
        guard canonical.hasPrefix(tool) else { return canonical }          // lm_head.weight
        let rest = canonical.dropFirst(tool.count)
        if rest == CheckpointLayout.mamba.embedding { return root + embedding }
        if rest == CheckpointLayout.mamba.normF { return root + normF }
        if let layers, rest.hasPrefix("layers.") {
            let afterLayers = rest.dropFirst("layers.".count)
            if let dot = afterLayers.firstIndex(of: "."), let i = Int(afterLayers[..<dot]), layers.indices.contains(i) {
                let tail = afterLayers[afterLayers.index(after: dot)...]
                if tail == "norm.weight" { return root + layers[i].norm }
                if tail.hasPrefix("mixer.") { return root + layers[i].mixer + tail.dropFirst("mixer.".count) }
            }
        }
        return root + rest
    }
}

extension MambaConfig {
    /// How the tool's layers map to the file's and the scalars around the blocks, for `inspect`
    /// (nothing for a Mamba config).
    public var structureNotes: [String] {
        var notes: [String] = []
        if let layers = layout.layers {
            notes.append("\(layers.count / 2) decoder layers of two blocks each (mixer, then MLP): tool layer 2i is the file's layers.i mixer, 2i + 1 its MLP; layer numbers in stats, --keep-float and reports are the tool's")
        }
        let scalars = [("embedding_multiplier", embeddingMultiplier), ("residual_multiplier", residualMultiplier), ("logits_scaling", logitsScaling)]
            .filter { $0.1 != 1 }.map { "\($0.0) \($0.1)" }
        if !scalars.isEmpty { notes.append(scalars.joined(separator: ", ")) }
        return notes
    }
}
