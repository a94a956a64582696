import Foundation
import MambaTensors

/// A byte-level BPE tokenizer read from a Hugging Face tokenizer.json: GPT-NeoX's (NFC normalizer,
/// ByteLevel pre-tokenizer with the GPT-2 split, ~50k merges, added tokens) and the byte models'
/// (256 byte tokens, no merges, no split) through the same code path (docs/DESIGN.md section 5).
/// Pipeline as in huggingface/tokenizers: added tokens that are not normalized are split out of the
/// raw text; the rest is normalized, then split on normalized added tokens; the pieces are
/// pre-tokenized, mapped to byte-level characters and merged by rank.
public struct Tokenizer: Sendable {
    struct AddedToken: Sendable {
        let id: Int
        let bytes: [UInt8]
        let special: Bool
        let normalized: Bool
    }

    public let vocabSize: Int
    /// UTF-8 bytes each id decodes to.
    let tokenBytes: [[UInt8]]
    let specialIDs: Set<Int>
    /// Id of each single byte's token.
    let byteIDs: [Int]
    /// (left id, right id) -> (rank, merged id).
    let merges: [UInt64: (rank: Int, id: Int)]
    let added: [AddedToken]
    let normalizeNFC: Bool
    let splitWords: Bool
    public let endOfText: Int?

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
        func fail(_ what: String) -> MambaError { MambaError(.badFile, "\(source): \(what); only byte-level BPE tokenizers (GPT-NeoX style) are supported") }
        guard (model["type"] as? String) == "BPE", let vocab = model["vocab"] as? [String: Any] else {
            throw fail("model type \(model["type"] ?? "none") is not BPE")
        }
        for option in ["continuing_subword_prefix", "end_of_word_suffix"] where !((model[option] is NSNull) || model[option] == nil || (model[option] as? String) == "") {
            throw fail("BPE option \(option) is set")
        }
        if let normalizer = json["normalizer"] as? [String: Any] {
            guard (normalizer["type"] as? String) == "NFC" else { throw fail("normalizer \(normalizer["type"] ?? "?") is not NFC") }
            normalizeNFC = true
        } else {
            normalizeNFC = false
        }
        guard let pre = json["pre_tokenizer"] as? [String: Any], (pre["type"] as? String) == "ByteLevel" else {
            throw fail("pre_tokenizer is not ByteLevel")
        }
        if (pre["add_prefix_space"] as? Bool) == true { throw fail("ByteLevel add_prefix_space is true") }
        splitWords = (pre["use_regex"] as? Bool) ?? true

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
        for (token, id) in idOf {
            // A byte-level token decodes through the alphabet; one with a character outside it
            // (an added token of literal spaces) decodes as its own UTF-8, as tokenizers does.
            let scalars = token.unicodeScalars.map { ByteLevelAlphabet.scalarToByte[$0] }
            tokenBytes[id] = scalars.contains(nil) ? Array(token.utf8) : scalars.map { $0! }
        }
        for a in added { tokenBytes[a.id] = a.bytes }
        self.tokenBytes = tokenBytes
        self.added = added
        self.specialIDs = specials

        var byteIDs = [Int](repeating: -1, count: 256)
        for b in 0..<256 {
            if let id = idOf[String(Character(ByteLevelAlphabet.byteToScalar[b]))] {
                byteIDs[b] = id
            } else if !(b == 0xC0 || b == 0xC1 || b >= 0xF5) {
                // Bytes that never occur in UTF-8 (GPT-NeoX's vocabulary omits them) may be absent;
                // encode() only sees Strings, so they are never looked up.
                throw fail("the vocabulary lacks the byte-level token for byte \(b)")
            }
        }
        self.byteIDs = byteIDs

        var merges: [UInt64: (rank: Int, id: Int)] = [:]
        for (rank, entry) in (model["merges"] as? [Any] ?? []).enumerated() {
            let pair: [String]
            if let s = entry as? String {
                pair = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            } else {
                pair = entry as? [String] ?? []
            }
            guard pair.count == 2, let a = idOf[pair[0]], let b = idOf[pair[1]], let m = idOf[pair[0] + pair[1]] else {
                throw fail("merge \(rank) (\(entry)) does not name two vocabulary tokens and their union")
            }
            let key = UInt64(a) << 32 | UInt64(b)
            if merges[key] == nil { merges[key] = (rank, m) }
        }
        self.merges = merges
        endOfText = idOf["<|endoftext|>"] ?? added.first { $0.bytes == Array("<|endoftext|>".utf8) }?.id
    }

    /// Token ids of `text` (no special tokens added around it).
    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        var cache: [ArraySlice<UInt8>: [Int]] = [:]
        for piece in splitAdded(Array(text.utf8), normalized: false) {
            switch piece {
            case .token(let id): ids.append(id)
            case .text(let raw):
                let normalized = normalizeNFC
                    ? Array(String(decoding: raw, as: UTF8.self).precomposedStringWithCanonicalMapping.utf8) : raw
                for inner in splitAdded(normalized, normalized: true) {
                    switch inner {
                    case .token(let id): ids.append(id)
                    case .text(let bytes): encodeWords(bytes, into: &ids, cache: &cache)
                    }
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

    private func encodeWords(_ bytes: [UInt8], into ids: inout [Int], cache: inout [ArraySlice<UInt8>: [Int]]) {
        guard splitWords else {
            bpe(bytes[...], into: &ids)
            return
        }
        let scalars = Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
        // Byte offsets of each scalar, to cut the UTF-8 bytes at the split's boundaries.
        var offsets = [Int](repeating: 0, count: scalars.count + 1)
        for (k, s) in scalars.enumerated() { offsets[k + 1] = offsets[k] + UTF8.width(s) }
        for range in GPT2Split.split(scalars) {
            let word = bytes[offsets[range.lowerBound]..<offsets[range.upperBound]]
            if let hit = cache[word] { ids.append(contentsOf: hit); continue }
            var out: [Int] = []
            bpe(word, into: &out)
            cache[word] = out
            ids.append(contentsOf: out)
        }
    }

    /// Byte-pair merges by rank: repeatedly merge every occurrence of the best-ranked adjacent pair.
    private func bpe(_ word: ArraySlice<UInt8>, into ids: inout [Int]) {
        var symbols = word.map { byteIDs[Int($0)] }
        if merges.isEmpty || symbols.count < 2 {
            ids.append(contentsOf: symbols)
            return
        }
        while symbols.count > 1 {
            var bestRank = Int.max, bestID = -1, bestPair: UInt64 = 0
            for k in 0..<(symbols.count - 1) {
                let key = UInt64(symbols[k]) << 32 | UInt64(symbols[k + 1])
                if let m = merges[key], m.rank < bestRank { (bestRank, bestID, bestPair) = (m.rank, m.id, key) }
            }
            if bestID < 0 { break }
            var merged: [Int] = []
            merged.reserveCapacity(symbols.count)
            var k = 0
            while k < symbols.count {
                if k + 1 < symbols.count, UInt64(symbols[k]) << 32 | UInt64(symbols[k + 1]) == bestPair {
                    merged.append(bestID); k += 2
                } else {
                    merged.append(symbols[k]); k += 1
                }
            }
            symbols = merged
        }
        ids.append(contentsOf: symbols)
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

    /// Text of `ids` (invalid UTF-8 replaced by U+FFFD, as tokenizers does).
    public func decode(_ ids: [Int], skipSpecial: Bool = true) -> String {
        String(decoding: decodeBytes(ids, skipSpecial: skipSpecial), as: UTF8.self)
    }
}
