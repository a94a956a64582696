/// The GPT-2 split that byte-level BPE pre-tokenizers apply (tokenizers' ByteLevel with
/// use_regex, openai/gpt-2 encoder.py):
///     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
/// written out by hand over Unicode scalars (alternatives tried in order, as the regex does).
enum GPT2Split {
    private enum Class { case letter, number, other, space }

    private static func classify(_ s: Unicode.Scalar) -> Class {
        let p = s.properties
        if p.isWhitespace { return .space }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Ranges of `text` (as scalars) that the regex above matches, in order; they cover the text.
    static func split(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        let n = text.count
        let classes = text.map(classify)
        var out: [Range<Int>] = []
        var i = 0
        while i < n {
            // Contractions: 's 't 'm 'd, then 're 've 'll.
            if text[i] == "'", i + 1 < n {
                let c1 = text[i + 1]
                if c1 == "s" || c1 == "t" || c1 == "m" || c1 == "d" {
                    out.append(i..<(i + 2)); i += 2; continue
                }
                if i + 2 < n {
                    let c2 = text[i + 2]
                    if (c1 == "r" && c2 == "e") || (c1 == "v" && c2 == "e") || (c1 == "l" && c2 == "l") {
                        out.append(i..<(i + 3)); i += 3; continue
                    }
                }
            }
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
            var j = i
            if text[i] == " ", i + 1 < n, classes[i + 1] != .space { j = i + 1 }
            if classes[j] != .space {
                let cls = classes[j]
                var k = j + 1
                while k < n && classes[k] == cls { k += 1 }
                out.append(i..<k); i = k; continue
            }
            // `\s+(?!\S)` leaves the last whitespace of a run for the next word; `\s+` otherwise.
            var k = i
            while k < n && classes[k] == .space { k += 1 }
            if k < n && k - i >= 2 { k -= 1 }
            out.append(i..<k); i = k
        }
        return out
    }
}

/// GPT-2's reversible map from bytes to printable characters (openai/gpt-2 encoder.py
/// bytes_to_unicode): printable Latin-1 bytes map to themselves, the rest to U+0100 onwards.
enum ByteLevelAlphabet {
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var extra: UInt32 = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(256 + extra)!
                extra += 1
            }
        }
        return table
    }()

    static let scalarToByte: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s] = UInt8(b) }
        return map
    }()
}
