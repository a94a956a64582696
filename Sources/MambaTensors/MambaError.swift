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
        self.message = message
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}

/// `[2, 3]` style, as in error messages.
public func shapeString(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}
