// Decoding request bodies strictly: malformed JSON, wrong types, out-of-range numbers and
// unknown fields are refused with a sentence naming the field. JSONCoding's decoder refuses
// at the field what serde refuses (`1.0` or `5e8` for an integer, a number out of range).
import JSONCoding

/// Strict JSON decoding for request bodies.
public enum StrictJSON {
    /// Decodes `T` from `bytes`, refusing malformed JSON, wrong types and out-of-range numbers.
    /// Fields `T` does not know are ignored, as Cloud Hypervisor's serde decoding ignores them
    /// (Kata's client sends fields of newer and older releases).
    ///
    /// - Parameter typeName: the schema name for messages (`"VmConfig"`).
    /// - Throws: `APIError.invalidBody` with a sentence naming the field at fault.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], typeName: String) throws(APIError) -> T {
        let document = try object(bytes, typeName: typeName)
        do {
            return try JSONCoding.decode(T.self, from: document)
        } catch {
            throw .invalidBody("\(typeName): \(describe(error))")
        }
    }

    /// Checks that `bytes` hold one JSON object, for bodies whose fields are not modelled.
    public static func requireObject(_ bytes: [UInt8], typeName: String) throws(APIError) {
        _ = try object(bytes, typeName: typeName)
    }

    /// The parsed body, refused unless it is a JSON object.
    private static func object(_ bytes: [UInt8], typeName: String) throws(APIError) -> JSONValue {
        let document: JSONValue
        do {
            document = try JSONParser.parse(bytes)
        } catch {
            throw .invalidBody("the body is not valid JSON: \(error)")
        }
        guard case .object = document else {
            throw .invalidBody("the body must be a JSON object (\(typeName)), not \(document.kindName)")
        }
        return document
    }

    /// A sentence for a decoding error: the field path and what was wrong.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        switch error {
        case let .typeMismatch(type, context):
            return "\(field(context.codingPath)): expected \(jsonKind(type))\(found(context))"
        case let .valueNotFound(type, context):
            return "\(field(context.codingPath)): expected \(jsonKind(type)), found null"
        case let .keyNotFound(key, context):
            return "\(field(context.codingPath + [key])): required field is missing"
        case let .dataCorrupted(context):
            let underlying = context.underlyingError.map { " (\($0))" } ?? ""
            return "\(field(context.codingPath)): \(context.debugDescription)\(underlying)"
        @unknown default:
            return "\(error)"
        }
    }

    /// ", found a string" from JSONCoding's "expected ..., found a string"; a type's own
    /// message otherwise, in parentheses.
    private static func found(_ context: DecodingError.Context) -> String {
        let text = context.debugDescription
        guard let start = text.indices.first(where: { text[$0...].hasPrefix(", found ") }) else {
            return text.isEmpty ? "" : " (\(text))"
        }
        return String(text[start...])
    }

    private static func field(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue, key.stringValue == "Index \(index)" || key.stringValue == "\(index)" {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return text.isEmpty ? "the body" : "field '\(text)'"
    }

    private static func jsonKind(_ type: Any.Type) -> String {
        switch type {
        case is Bool.Type: "a boolean"
        case is String.Type: "a string"
        case is UInt8.Type: "an integer from 0 to 255"
        case is UInt16.Type: "an integer from 0 to 65535"
        case is UInt32.Type: "an integer from 0 to 4294967295"
        case is UInt64.Type, is UInt.Type: "a non-negative integer"
        case is Int8.Type, is Int16.Type, is Int32.Type, is Int64.Type, is Int.Type: "an integer"
        case is Double.Type, is Float.Type: "a number"
        default:
            if "\(type)".hasPrefix("Array") { "an array" } else if "\(type)".hasPrefix("Dictionary") { "an object" } else { "\(type)" }
        }
    }
}
