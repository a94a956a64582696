import Foundation

/// Every failure the library reports to a user. The description is the one line the CLI prints:
/// it names the file, tensor or key at fault, and both shapes where shapes disagree.
public struct MambaError: Error, CustomStringConvertible, LocalizedError, Equatable {
    public enum Kind: String, Sendable {
        case missingFile, badFile, badConfig, unsupportedModel, missingTensor, unusedTensor
        case shapeMismatch, dtypeMismatch, badInput, mismatchedInputs, io, outOfMemory
    }
    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = Self.oneLine(message)
    }

    /// Messages echo names and values from the input (a tensor name, a config value), which can be
    /// anything: control characters are escaped so the message stays one line, and past
    /// `maxLength` characters the middle is left out (a 100 MB tensor name must not make a 100 MB
    /// "line").
    public static let maxLength = 1000

    /// One name or value echoed from the input is cut to this many characters (its start and end
    /// kept): a message names the problem, it does not repeat a 1,000-character key.
    public static let maxWordLength = 120

    static func oneLine(_ text: String) -> String {
        var s = text
        if s.utf8.count > maxWordLength {
            s = s.split(separator: " ", omittingEmptySubsequences: false).map { word in
                word.count <= maxWordLength ? String(word) : "\(word.prefix(maxWordLength * 2 / 3))…\(word.suffix(maxWordLength / 4))"
            }.joined(separator: " ")
        }
        if s.utf8.count > maxLength {
            let head = String(s.prefix(maxLength * 7 / 10)), tail = String(s.suffix(maxLength / 5))
            s = head + " [... \(s.count - head.count - tail.count) characters left out ...] " + tail
        }
        guard s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return s }
        return String(String.UnicodeScalarView(s.unicodeScalars.flatMap { c -> [Unicode.Scalar] in
            c.properties.generalCategory == .control ? Array(c.escaped(asASCII: true).unicodeScalars) : [c]
        }))
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}

/// `[2, 3]` style, as in error messages.
public func shapeString(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}
