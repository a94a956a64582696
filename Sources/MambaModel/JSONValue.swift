import Foundation

/// Any JSON value, for files whose keys vary (config.json, tokenizer.json) and must round-trip.
public enum JSONValue: Codable, Sendable, Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d):
            if d == d.rounded(), abs(d) < 1e15 { try c.encode(Int64(d)) } else { try c.encode(d) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// A number that may be infinite or NaN: JSON has no literal for those, so they are written as
    /// transformers 5 writes them ({"__float__": "Infinity"}, configuration_utils.py
    /// _encode_special_floats).
    public init(float d: Double) {
        if d.isFinite { self = .number(d) } else { self = .object(["__float__": .string(d.isNaN ? "NaN" : d > 0 ? "Infinity" : "-Infinity")]) }
    }

    /// A number in any spelling configs use: a JSON number (a bare Infinity when parsed as JSON5),
    /// transformers 5's {"__float__": "Infinity"}, or a string "Infinity" / "inf".
    public var float: Double? {
        switch self {
        case .number(let d): return d
        case .string(let s): return Self.special(s)
        case .object(let o) where o.count == 1: return o["__float__"]?.string.flatMap(Self.special)
        default: return nil
        }
    }

    private static func special(_ s: String) -> Double? {
        switch s.lowercased() {
        case "infinity", "inf", "+infinity", "+inf": .infinity
        case "-infinity", "-inf": -.infinity
        case "nan": .nan
        default: Double(s)
        }
    }

    /// The same value with every non-finite number in the tagged form (so it can be written again).
    public var encodable: JSONValue {
        switch self {
        case .number(let d): JSONValue(float: d)
        case .array(let a): .array(a.map(\.encodable))
        case .object(let o): .object(o.mapValues(\.encodable))
        default: self
        }
    }

    public var isNull: Bool { if case .null = self { true } else { false } }
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var double: Double? { if case .number(let d) = self { d } else { nil } }
    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var array: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
    public var object: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }
    public var int: Int? {
        guard case .number(let d) = self, d == d.rounded(), abs(d) < 1e15 else { return nil }
        return Int(d)
    }
    public subscript(key: String) -> JSONValue? { object?[key] }

    public var description: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).flatMap { String(data: $0, encoding: .utf8) } ?? "?"
    }

    /// Pretty, key-sorted JSON text (deterministic output files).
    public func prettyData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }
}
