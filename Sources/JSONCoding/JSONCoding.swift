// The entry points: a Codable value to JSON bytes and back.

/// JSON encoding and decoding of `Codable` values without Foundation.
///
/// Encoding writes compact JSON (see ``JSONWriter``); decoding parses strictly (see
/// ``JSONParser``) and then decodes as Cloud Hypervisor's serde does: an integer field takes
/// only an integer literal that fits it, float fields take any number, keys the type does not
/// know are ignored. Errors are the standard library's `EncodingError` and `DecodingError`
/// with the full coding path of the value at fault.
public enum JSONCoding {
    /// `value` as compact JSON.
    /// - Parameter sortedKeys: write object members sorted by key (reproducible output).
    /// - Throws: `EncodingError.invalidValue` for a NaN or infinite float, or a value that encodes nothing.
    public static func encode(_ value: some Encodable, sortedKeys: Bool = false) throws -> [UInt8] {
        try encodeValue(value).serialized(sortedKeys: sortedKeys)
    }

    /// `value` as a ``JSONValue`` tree (objects in the order the value encoded its keys).
    /// - Throws: `EncodingError.invalidValue` for a NaN or infinite float, or a value that encodes nothing.
    public static func encodeValue<T: Encodable>(_ value: T) throws -> JSONValue {
        let node = EncoderNode()
        try ValueEncoder.encode(value, into: node, at: [])
        guard node.kind != .empty else {
            throw EncodingError.invalidValue(value, EncodingError.Context(
                codingPath: [], debugDescription: "\(T.self) encoded no value"))
        }
        return node.value
    }

    /// Decodes a `T` from JSON text.
    /// - Throws: `DecodingError.dataCorrupted` with an empty path and the ``JSONParseError`` as
    ///   its underlying error when the text is not JSON; otherwise the errors of decoding from a ``JSONValue``.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes)
        } catch {
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: [], debugDescription: "not valid JSON: \(error)", underlyingError: error))
        }
        return try decode(type, from: value)
    }

    /// Decodes a `T` from a parsed document.
    /// - Throws: `DecodingError`: `typeMismatch` (a string for a number...), `valueNotFound`
    ///   (null for a value that is not optional), `keyNotFound`, or `dataCorrupted` at the
    ///   field for a number that does not fit its type ("300 does not fit in UInt8", "1.5 is
    ///   not a whole number") and for what a type's own `init(from:)` refuses.
    public static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try T(from: ValueDecoder(value: value, codingPath: []))
    }
}
