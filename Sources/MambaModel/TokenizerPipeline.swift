import Foundation
import MambaTensors

// The steps of a tokenizer.json around its BPE model (huggingface/tokenizers: normalizers/,
// pre_tokenizers/, decoders/), the ones the Mamba and hybrid checkpoints ship:
// - GPT-NeoX (Mamba): NFC, ByteLevel with the GPT-2 split;
// - Llama-3 style (Bamba, Granite-4.0-H, Nemotron-H, Falcon-H1): Split on a regex (isolated), then
//   ByteLevel without its own split;
// - SentencePiece style (Llama-2, Jamba): Prepend("▁") + Replace(" ", "▁") normalizers or a
//   Metaspace pre-tokenizer, tokens spelled in characters with byte fallback (<0xXX>).
// Anything else is refused by name when the file is read.

/// A normalizer step, applied to each piece of text between added tokens.
enum NormalizerStep: Sendable {
    case nfc
    /// Prepends the string to a non-empty piece.
    case prepend(String)
    /// Replaces every occurrence of a literal string.
    case replace(String, String)

    static func parse(_ json: Any?, fail: (String) -> MambaError) throws -> [NormalizerStep] {
        guard let json, !(json is NSNull) else { return [] }
        guard let n = json as? [String: Any], let type = n["type"] as? String else { throw fail("the normalizer is not an object with a type") }
        switch type {
        case "NFC": return [.nfc]
        case "Sequence": return try (n["normalizers"] as? [Any] ?? []).flatMap { try parse($0, fail: fail) }
        case "Prepend":
            guard let s = n["prepend"] as? String else { throw fail("normalizer Prepend has no prepend string") }
            return [.prepend(s)]
        case "Replace":
            guard let pattern = (n["pattern"] as? [String: Any])?["String"] as? String, let content = n["content"] as? String else {
                throw fail("normalizer Replace has a pattern other than a literal String")
            }
            return [.replace(pattern, content)]
        default: throw fail("normalizer \(type) is not implemented")
        }
    }

    func apply(_ s: String) -> String {
        switch self {
        case .nfc: s.precomposedStringWithCanonicalMapping
        case .prepend(let p): s.isEmpty ? s : p + s
        case .replace(let a, let b): s.replacingOccurrences(of: a, with: b)
        }
    }
}

/// A pre-tokenizer step: splits each piece of text into smaller pieces (words).
enum PreTokenizerStep: @unchecked Sendable {   // NSRegularExpression is immutable and thread-safe
    /// ByteLevel: the GPT-2 split when `useRegex`; the byte-level alphabet is the model's spelling.
    case byteLevel(useRegex: Bool)
    /// Split on a regex, each match and each gap its own piece (behavior Isolated).
    case split(NSRegularExpression)
    /// Metaspace: spaces become `replacement`, prepended per `prependScheme` ("always", "first",
    /// "never"), then split before each replacement when `split`.
    case metaspace(replacement: String, prependScheme: String, split: Bool)

    static func parse(_ json: Any?, fail: (String) -> MambaError) throws -> [PreTokenizerStep] {
        guard let json, !(json is NSNull) else { return [] }
        guard let p = json as? [String: Any], let type = p["type"] as? String else { throw fail("the pre_tokenizer is not an object with a type") }
        switch type {
        case "Sequence": return try (p["pretokenizers"] as? [Any] ?? []).flatMap { try parse($0, fail: fail) }
        case "ByteLevel":
            if (p["add_prefix_space"] as? Bool) == true { throw fail("pre_tokenizer ByteLevel with add_prefix_space true is not implemented") }
            return [.byteLevel(useRegex: (p["use_regex"] as? Bool) ?? true)]
        case "Split":
            guard (p["behavior"] as? String) == "Isolated" else { throw fail("pre_tokenizer Split with behavior \(p["behavior"] ?? "none") is not implemented (Isolated is)") }
            if (p["invert"] as? Bool) == true { throw fail("pre_tokenizer Split with invert true is not implemented") }
            let pattern = p["pattern"] as? [String: Any]
            if let regex = pattern?["Regex"] as? String {
                do { return [.split(try NSRegularExpression(pattern: regex))] } catch { throw fail("pre_tokenizer Split's regex does not compile (\(error))") }
            }
            if let literal = pattern?["String"] as? String, !literal.isEmpty {
                return [.split(try NSRegularExpression(pattern: NSRegularExpression.escapedPattern(for: literal)))]
            }
            throw fail("pre_tokenizer Split has no Regex or String pattern")
        case "Metaspace":
            let replacement = p["replacement"] as? String ?? "▁"
            // Older files spell the scheme as add_prefix_space (true: always).
            let scheme = p["prepend_scheme"] as? String ?? ((p["add_prefix_space"] as? Bool) == false ? "never" : "always")
            guard ["always", "first", "never"].contains(scheme) else { throw fail("pre_tokenizer Metaspace prepend_scheme \(scheme) is not implemented") }
            return [.metaspace(replacement: replacement, prependScheme: scheme, split: (p["split"] as? Bool) ?? true)]
        default: throw fail("pre_tokenizer \(type) is not implemented")
        }
    }

    /// Splits one piece. `first`: the piece starts the input (Metaspace's "first" scheme).
    func apply(_ piece: String, first: Bool) -> [String] {
        switch self {
        case .byteLevel(let useRegex):
            guard useRegex else { return [piece] }
            let scalars = Array(piece.unicodeScalars)
            return GPT2Split.split(scalars).map { r in
                var s = String.UnicodeScalarView()
                s.append(contentsOf: scalars[r])
                return String(s)
            }
        case .split(let regex):
            var out: [String] = []
            let ns = piece as NSString
            var last = 0
            for m in regex.matches(in: piece, range: NSRange(location: 0, length: ns.length)) where m.range.length > 0 {
                if m.range.location > last { out.append(ns.substring(with: NSRange(location: last, length: m.range.location - last))) }
                out.append(ns.substring(with: m.range))
                last = m.range.location + m.range.length
            }
            if last < ns.length { out.append(ns.substring(from: last)) }
            return out
        case .metaspace(let r, let scheme, let split):
            var s = piece.replacingOccurrences(of: " ", with: r)
            if (scheme == "always" || (scheme == "first" && first)) && !s.hasPrefix(r) { s = r + s }
            guard split else { return [s] }
            var out: [String] = []
            var current = ""
            for ch in s {
                if String(ch) == r && !current.isEmpty { out.append(current); current = "" }
                current.append(ch)
            }
            if !current.isEmpty { out.append(current) }
            return out
        }
    }
}
