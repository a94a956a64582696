import Foundation
import MambaTensors

/// A BPE tokenizer read from a Hugging Face tokenizer.json (docs/DESIGN.md section 5), in the two
/// spellings the checkpoints ship: byte-level (GPT-NeoX's NFC + ByteLevel with the GPT-2 split;
/// Llama-3 style Split on a regex, then ByteLevel; the byte models' 256 byte tokens, no merges) and
/// SentencePiece style (tokens in characters, "▁" for spaces from a Prepend + Replace normalizer or
/// a Metaspace pre-tokenizer, byte fallback to <0xXX> tokens). Pipeline as in huggingface/tokenizers:
/// added tokens that are not normalized are split out of the raw text; the rest is normalized, then
/// split on normalized added tokens; the pieces are pre-tokenized into words and each word is
/// merged by rank (TokenizerPipeline.swift holds the steps, BPEMerges the merging).
public struct Tokenizer: Sendable {
    struct AddedToken: Sendable {
        let id: Int
        let bytes: [UInt8]
        let special: Bool
        let normalized: Bool
    }

    /// How the vocabulary spells text.
    enum Alphabet: Sendable {
        /// GPT-2's byte-to-character map (ByteLevelAlphabet): a word's symbols are its bytes.
        case byteLevel
        /// Unicode characters: a word's symbols are its scalars, unknown ones by byte fallback.
        case characters
    }

    public let vocabSize: Int
    /// UTF-8 bytes each id decodes to.
    let tokenBytes: [[UInt8]]
    let specialIDs: Set<Int>
    let added: [AddedToken]
    let normalizer: [NormalizerStep]
    let preTokenizer: [PreTokenizerStep]
    let alphabet: Alphabet
    let idOf: [String: Int]
    /// Id of each single byte's token (byte-level alphabet), or of its <0xXX> token (byte fallback).
    let byteIDs: [Int]
    let byteFallback: Bool
    let unknownID: Int?
    let fuseUnknown: Bool
    /// A word that is a vocabulary entry is that token, merges or not (tokenizers' ignore_merges).
    let ignoreMerges: Bool
    let merges: BPEMerges
    /// Leading spaces the decoder strips from the text (SentencePiece's Strip decoder).
    let decodeStripsLeading: Int
    public let endOfText: Int?
    /// The special tokens the post-processor puts around a single text (TemplateProcessing's
    /// "single" template: Llama-3's <|begin_of_text|>, SentencePiece conversions' <s>); empty for
    /// GPT-NeoX's, whose post-processor only trims offsets.
    public let specialPrefix: [Int], specialSuffix: [Int]

    public static let fileName = "tokenizer.json"

    public init(contentsOf path: String) throws {
        guard let data = try contentsOfRegularFile(atPath: path) else {
            throw MambaError(.missingFile, "tokenizer file \(path) not found")
        }
        try self.init(data: data, source: path)
    }

    public init(data: Data, source: String) throws {
        guard let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let model = json["model"] as? [String: Any] else {
            throw MambaError(.badFile, "\(source) is not a tokenizer.json (no model object)")
        }
        func fail(_ what: String) -> MambaError {
            MambaError(.badFile, "\(source): \(what); byte-level BPE (GPT-NeoX, Llama-3 style) and SentencePiece-style BPE tokenizers are supported")
        }
        guard (model["type"] as? String) == "BPE", let vocab = model["vocab"] as? [String: Any] else {
            throw fail("model type \(model["type"] ?? "none") is not BPE")
        }
        for option in ["continuing_subword_prefix", "end_of_word_suffix"] where !((model[option] is NSNull) || model[option] == nil || (model[option] as? String) == "") {
            throw fail("BPE option \(option) is set")
        }
        if let dropout = model["dropout"], !(dropout is NSNull), (dropout as? Double) != 0 { throw fail("BPE dropout is set") }
        normalizer = try NormalizerStep.parse(json["normalizer"], fail: fail)
        preTokenizer = try PreTokenizerStep.parse(json["pre_tokenizer"], fail: fail)
        let byteLevelSteps = preTokenizer.filter { if case .byteLevel = $0 { true } else { false } }.count
        guard byteLevelSteps <= 1 else { throw fail("the pre_tokenizer has \(byteLevelSteps) ByteLevel steps") }
        alphabet = byteLevelSteps == 1 ? .byteLevel : .characters
        byteFallback = (model["byte_fallback"] as? Bool) ?? false
        fuseUnknown = (model["fuse_unk"] as? Bool) ?? false
        ignoreMerges = (model["ignore_merges"] as? Bool) ?? false
        decodeStripsLeading = try Self.decoderStrip(json["decoder"], fail: fail)
        (specialPrefix, specialSuffix) = try Self.template(json["post_processor"], fail: fail)

        // Ids index a table of the vocabulary's size: a negative, fractional or far-out id (2^62
        // would allocate exabytes) is refused, allowing gaps up to a few times the entry count.
        let addedEntries = json["added_tokens"] as? [[String: Any]] ?? []
        let idLimit = 4 * (vocab.count + addedEntries.count) + 1024
        func tokenID(_ value: Any?, _ token: String) throws -> Int {
            guard let value, let id = exactInteger(value) else { throw fail("token \(token) has no integer id") }
            guard id >= 0 && id < idLimit else { throw fail("token \(token) has id \(id), outside [0, \(idLimit)) for \(vocab.count + addedEntries.count) tokens") }
            return id
        }
        var idOf: [String: Int] = [:]
        var maxID = -1
        for (token, value) in vocab {
            let id = try tokenID(value, token)
            idOf[token] = id
            maxID = max(maxID, id)
        }
        var added: [AddedToken] = []
        var specials = Set<Int>()
        for entry in addedEntries {
            guard let content = entry["content"] as? String else { continue }
            let id = try tokenID(entry["id"], content)
            let special = (entry["special"] as? Bool) ?? false
            added.append(AddedToken(id: id, bytes: Array(content.utf8), special: special, normalized: (entry["normalized"] as? Bool) ?? !special))
            if special { specials.insert(id) }
            maxID = max(maxID, id)
        }
        vocabSize = maxID + 1
        var tokenBytes = [[UInt8]](repeating: [], count: maxID + 1)
        var byteIDs = [Int](repeating: -1, count: 256)
        switch alphabet {
        case .byteLevel:
            for (token, id) in idOf {
                // A byte-level token decodes through the alphabet; one with a character outside it
                // (an added token of literal spaces) decodes as its own UTF-8, as tokenizers does.
                let scalars = token.unicodeScalars.map { ByteLevelAlphabet.scalarToByte[$0] }
                tokenBytes[id] = scalars.contains(nil) ? Array(token.utf8) : scalars.map { $0! }
            }
            for b in 0..<256 {
                if let id = idOf[String(Character(ByteLevelAlphabet.byteToScalar[b]))] {
                    byteIDs[b] = id
                } else if !(b == 0xC0 || b == 0xC1 || b >= 0xF5) {
                    // Bytes that never occur in UTF-8 (GPT-NeoX's vocabulary omits them) may be absent;
                    // encode() only sees Strings, so they are never looked up.
                    throw fail("the vocabulary lacks the byte-level token for byte \(b)")
                }
            }
        case .characters:
            // "▁" (the Prepend/Replace normalizers' and Metaspace's space) decodes to a space, a
            // <0xXX> token to its byte (the Replace and ByteFallback decoders).
            let space = Self.metaspace(normalizer, preTokenizer)
            for (token, id) in idOf {
                if token.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">"), let b = UInt8(token.dropFirst(3).prefix(2), radix: 16) {
                    tokenBytes[id] = [b]
                    byteIDs[Int(b)] = id
                } else {
                    tokenBytes[id] = Array((space.map { token.replacingOccurrences(of: $0, with: " ") } ?? token).utf8)
                }
            }
            if byteFallback, let missing = byteIDs.firstIndex(of: -1) {
                throw fail("byte_fallback is set but the vocabulary lacks <0x\(String(format: "%02X", missing))>")
            }
        }
        for a in added { tokenBytes[a.id] = a.bytes }
        self.tokenBytes = tokenBytes
        self.added = added
        self.specialIDs = specials
        self.byteIDs = byteIDs
        self.idOf = idOf
        if let unk = model["unk_token"] as? String {
            guard let id = idOf[unk] ?? added.first(where: { $0.bytes == Array(unk.utf8) })?.id else { throw fail("unk_token \(unk) is not in the vocabulary") }
            unknownID = id
        } else {
            unknownID = nil
        }
        merges = try BPEMerges(model["merges"] as? [Any] ?? [], idOf: idOf, fail: fail)
        endOfText = idOf["<|endoftext|>"] ?? added.first { $0.bytes == Array("<|endoftext|>".utf8) }?.id
    }

    /// The character a SentencePiece-style tokenizer spells spaces with (nil: none).
    static func metaspace(_ normalizer: [NormalizerStep], _ preTokenizer: [PreTokenizerStep]) -> String? {
        for step in preTokenizer { if case .metaspace(let r, _, _) = step { return r } }
        for step in normalizer { if case .replace(" ", let r) = step { return r } }
        return nil
    }

    /// The leading spaces the decoder strips (its Strip step's start), refusing decoders not implemented.
    static func decoderStrip(_ json: Any?, fail: (String) -> MambaError) throws -> Int {
        guard let d = json as? [String: Any], let type = d["type"] as? String else { return 0 }
        switch type {
        case "Sequence": return try (d["decoders"] as? [Any] ?? []).reduce(0) { $0 + (try decoderStrip($1, fail: fail)) }
        case "Strip":
            guard (d["content"] as? String) == " ", (exactInteger(d["stop"] ?? 0) ?? 0) == 0 else { throw fail("decoder Strip other than of leading spaces is not implemented") }
            return exactInteger(d["start"] ?? 0) ?? 0
        case "Metaspace":
            let scheme = d["prepend_scheme"] as? String ?? ((d["add_prefix_space"] as? Bool) == false ? "never" : "always")
            return scheme == "never" ? 0 : 1
        case "ByteLevel", "Replace", "ByteFallback", "Fuse": return 0
        default: throw fail("decoder \(type) is not implemented")
        }
    }

    /// The special tokens around a single text (TemplateProcessing, alone or in a Sequence beside
    /// ByteLevel, whose offset trimming changes no id), refusing other post-processors by name.
    static func template(_ json: Any?, fail: (String) -> MambaError) throws -> (prefix: [Int], suffix: [Int]) {
        guard let d = json as? [String: Any], let type = d["type"] as? String else { return ([], []) }
        switch type {
        case "ByteLevel": return ([], [])
        case "Sequence":
            return try (d["processors"] as? [Any] ?? []).reduce(into: ([Int](), [Int]())) { sum, p in
                let t = try template(p, fail: fail)
                sum.0 += t.prefix
                sum.1 = t.suffix + sum.1
            }
        case "TemplateProcessing":
            let specials = d["special_tokens"] as? [String: Any] ?? [:]
            var (prefix, suffix, seen) = ([Int](), [Int](), false)
            for item in d["single"] as? [Any] ?? [] {
                guard let piece = item as? [String: Any] else { throw fail("post_processor template item \(item) is not an object") }
                if piece["Sequence"] != nil { seen = true; continue }
                guard let name = (piece["SpecialToken"] as? [String: Any])?["id"] as? String,
                      let ids = (specials[name] as? [String: Any])?["ids"] as? [Any] else {
                    throw fail("post_processor template item \(item) names no special token with ids")
                }
                let values = ids.compactMap { exactInteger($0) }
                guard values.count == ids.count, values.allSatisfy({ $0 >= 0 }) else { throw fail("post_processor special token \(name) has ids \(ids)") }
                if seen { suffix += values } else { prefix += values }
            }
            guard seen else { throw fail("post_processor template has no $A sequence") }
            return (prefix, suffix)
        default: throw fail("post_processor \(type) is not implemented")
        }
    }

    /// Token ids of `text` with the post-processor's special tokens around it (what transformers'
    /// tokenizer(text) gives: a prompt for generation), or without them (a corpus to score).
    public func encode(_ text: String, addSpecialTokens: Bool) -> [Int] {
        addSpecialTokens ? specialPrefix + encode(text) + specialSuffix : encode(text)
    }

    /// Token ids of `text` (no special tokens added around it).
    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        var cache: [String: [Int]] = [:]
        var first = true
        for piece in splitAdded(Array(text.utf8), normalized: false) {
            switch piece {
            case .token(let id): ids.append(id); first = false
            case .text(let raw):
                let normalized = normalizer.reduce(String(decoding: raw, as: UTF8.self)) { $1.apply($0) }
                for inner in splitAdded(Array(normalized.utf8), normalized: true) {
                    switch inner {
                    case .token(let id): ids.append(id)
                    case .text(let bytes):
                        var words = [String(decoding: bytes, as: UTF8.self)]
                        for step in preTokenizer { words = words.enumerated().flatMap { k, w in step.apply(w, first: first && k == 0) } }
                        for word in words where !word.isEmpty {
                            if let hit = cache[word] { ids.append(contentsOf: hit); continue }
                            let out = tokenize(word)
                            if word.utf8.count < 256 { cache[word] = out }
                            ids.append(contentsOf: out)
                        }
                    }
                    first = false
                }
            }
        }
        return ids
    }

    private enum Piece { case text([UInt8]), token(Int) }

    /// Splits out the added tokens of one kind, leftmost-longest (tokenizers' AddedVocabulary).
    private func splitAdded(_ bytes: [UInt8], normalized: Bool) -> [Piece] {
        let candidates = added.filter { $0.normalized == normalized && !$0.bytes.isEmpty }
        guard !candidates.isEmpty, !bytes.isEmpty else { return bytes.isEmpty ? [] : [.text(bytes)] }
        var out: [Piece] = []
        var start = 0, i = 0
        while i < bytes.count {
            var best: AddedToken? = nil
            for c in candidates where c.bytes.count <= bytes.count - i && (best == nil || c.bytes.count > best!.bytes.count) {
                if bytes[i..<(i + c.bytes.count)].elementsEqual(c.bytes) { best = c }
            }
            if let best {
                if start < i { out.append(.text(Array(bytes[start..<i]))) }
                out.append(.token(best.id))
                i += best.bytes.count
                start = i
            } else {
                i += 1
            }
        }
        if start < bytes.count { out.append(.text(Array(bytes[start...]))) }
        return out
    }

    /// One word's ids: the word itself where ignore_merges finds it in the vocabulary, else its
    /// symbols (bytes, or characters with byte fallback and unknowns) merged by rank.
    func tokenize(_ word: String) -> [Int] {
        switch alphabet {
        case .byteLevel:
            let bytes = Array(word.utf8)
            if ignoreMerges {
                var spelled = String.UnicodeScalarView()
                for b in bytes { spelled.append(ByteLevelAlphabet.byteToScalar[Int(b)]) }
                if let id = idOf[String(spelled)] { return [id] }
            }
            return merges.merge(bytes.map { byteIDs[Int($0)] })
        case .characters:
            if ignoreMerges, let id = idOf[word] { return [id] }
            var symbols: [Int] = []
            var lastUnknown = false
            for scalar in word.unicodeScalars {
                if let id = idOf[String(scalar)] {
                    symbols.append(id); lastUnknown = false
                } else if byteFallback {
                    for b in String(scalar).utf8 { symbols.append(byteIDs[Int(b)]) }
                    lastUnknown = false
                } else if let unk = unknownID {
                    if !(fuseUnknown && lastUnknown) { symbols.append(unk) }
                    lastUnknown = true
                }
            }
            return merges.merge(symbols)
        }
    }

    /// UTF-8 bytes of `ids`; special tokens are skipped unless asked for.
    public func decodeBytes(_ ids: [Int], skipSpecial: Bool = true) -> [UInt8] {
        var out: [UInt8] = []
        for id in ids where id >= 0 && id < tokenBytes.count {
            if skipSpecial && specialIDs.contains(id) { continue }
            out.append(contentsOf: tokenBytes[id])
        }
        return out
    }

    /// Text of `ids` (invalid UTF-8 replaced by U+FFFD, as tokenizers does), without the leading
    /// spaces a SentencePiece-style decoder strips.
    public func decode(_ ids: [Int], skipSpecial: Bool = true) -> String {
        var bytes = decodeBytes(ids, skipSpecial: skipSpecial)[...]
        for _ in 0..<decodeStripsLeading where bytes.first == 0x20 { bytes = bytes.dropFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }
}
