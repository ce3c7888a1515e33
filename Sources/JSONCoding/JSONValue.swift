// Any JSON document as a Swift value: what the parser produces and the serializer writes.

/// One JSON value. Numbers keep the type they were written with: an integer literal stays an
/// integer (signed when it fits `Int64`, unsigned above `Int64.max`), so it re-encodes exactly;
/// a literal with a fraction or an exponent, or an integer beyond `UInt64`, is a ``double(_:)``.
/// Objects keep their members in the order they were written.
public enum JSONValue: Sendable, Equatable {
    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// An integer literal that fits `Int64`.
    case integer(Int64)
    /// An integer literal above `Int64.max` that fits `UInt64`.
    case unsigned(UInt64)
    /// A number written with a fraction or an exponent, or an integer too large for `UInt64`.
    case double(Double)
    /// A string.
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object: its members in document order (keys are unique in parsed documents).
    case object([(key: String, value: JSONValue)])

    /// Whether two values are the same document: members compare in order, numbers by case
    /// and value (`.integer(1)` is not `.double(1)`).
    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.integer(a), .integer(b)): return a == b
        case let (.unsigned(a), .unsigned(b)): return a == b
        case let (.double(a), .double(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: return false
        }
    }

    /// The value of the member `key` of an object (the first, if a built value repeats it);
    /// nil for an absent key or a value that is not an object.
    public subscript(key: String) -> JSONValue? {
        guard case let .object(members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    /// What kind of value this is, as a message names it: "null", "a boolean", "a number",
    /// "a string", "an array" or "an object".
    public var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer, .unsigned, .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    /// Parses one JSON document (RFC 8259, strictly; see ``JSONParser``).
    /// - Throws: ``JSONParseError`` naming what is wrong and its byte offset.
    public init(parsing bytes: [UInt8]) throws(JSONParseError) {
        self = try JSONParser.parse(bytes)
    }

    /// The document as compact JSON text (see ``JSONWriter``).
    /// - Parameter sortedKeys: write object members sorted by key, as Foundation's `.sortedKeys` does.
    /// - Throws: `EncodingError.invalidValue` for a NaN or infinite double.
    public func serialized(sortedKeys: Bool = false) throws -> [UInt8] {
        var writer = JSONWriter(sortedKeys: sortedKeys)
        try writer.write(self)
        return writer.bytes
    }
}
