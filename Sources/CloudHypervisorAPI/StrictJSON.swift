// Decoding request bodies strictly: malformed JSON, wrong types, out-of-range numbers and
// unknown fields are refused with a sentence naming the field.
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Any JSON document (numbers keep their integer type, so they re-encode exactly).
enum JSONShape: Codable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case unsigned(UInt64)
    case double(Double)
    case string(String)
    case array([JSONShape])
    case object([String: JSONShape])

    init(from decoder: any Decoder) throws {
        let single = try decoder.singleValueContainer()
        if single.decodeNil() {
            self = .null
        } else if let object = try? single.decode([String: JSONShape].self) {
            self = .object(object)
        } else if let array = try? single.decode([JSONShape].self) {
            self = .array(array)
        } else if let value = try? single.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? single.decode(String.self) {
            self = .string(value)
        } else if let value = try? single.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? single.decode(UInt64.self) {
            self = .unsigned(value)
        } else if let value = try? single.decode(Double.self) {
            self = .double(value)
        } else {
            throw DecodingError.dataCorruptedError(in: single, debugDescription: "not a JSON value")
        }
    }

    func encode(to encoder: any Encoder) throws {
        var single = encoder.singleValueContainer()
        switch self {
        case .null: try single.encodeNil()
        case let .bool(value): try single.encode(value)
        case let .integer(value): try single.encode(value)
        case let .unsigned(value): try single.encode(value)
        case let .double(value): try single.encode(value)
        case let .string(value): try single.encode(value)
        case let .array(value): try single.encode(value)
        case let .object(value): try single.encode(value)
        }
    }

    /// The paths of the numbers in the document, in document order (at most `limit`).
    func numberPaths(at path: [String] = [], limit: Int) -> [[String]] {
        var found: [[String]] = []
        func walk(_ value: JSONShape, _ path: [String]) {
            guard found.count <= limit else { return }
            switch value {
            case .integer, .unsigned, .double: found.append(path)
            case let .array(items): for (index, item) in items.enumerated() { walk(item, path + ["[\(index)]"]) }
            case let .object(fields): for key in fields.keys.sorted() { walk(fields[key]!, path + [key]) }
            default: break
            }
        }
        walk(self, path)
        return found
    }

    /// The document with every number set to 0 except the one at `keep`.
    func zeroingNumbers(except keep: [String], at path: [String] = []) -> JSONShape {
        switch self {
        case .integer, .unsigned, .double: return path == keep ? self : .integer(0)
        case let .array(items): return .array(items.enumerated().map { $1.zeroingNumbers(except: keep, at: path + ["[\($0)]"]) })
        case let .object(fields):
            return .object(fields.reduce(into: [:]) { $0[$1.key] = $1.value.zeroingNumbers(except: keep, at: path + [$1.key]) })
        default: return self
        }
    }

    /// The value at `path`.
    func value(at path: [String]) -> JSONShape? {
        guard let first = path.first else { return self }
        switch self {
        case let .object(fields): return fields[first]?.value(at: Array(path.dropFirst()))
        case let .array(items):
            guard first.hasPrefix("["), let index = Int(first.dropFirst().dropLast()), items.indices.contains(index) else { return nil }
            return items[index].value(at: Array(path.dropFirst()))
        default: return nil
        }
    }
}

/// Strict JSON decoding for request bodies.
public enum StrictJSON {
    /// Decodes `T` from `bytes`, refusing malformed JSON, wrong types and out-of-range numbers.
    /// Fields `T` does not know are ignored, as Cloud Hypervisor's serde decoding ignores them
    /// (Kata's client sends fields of newer and older releases).
    ///
    /// - Parameter typeName: the schema name for messages (`"VmConfig"`).
    /// - Throws: `APIError.invalidBody` with a sentence naming the field at fault.
    public static func decode<T: Codable>(_ type: T.Type, from bytes: [UInt8], typeName: String) throws(APIError) -> T {
        let data = Data(bytes)
        let shape: JSONShape
        do {
            shape = try JSONDecoder().decode(JSONShape.self, from: data)
        } catch {
            throw .invalidBody("the body is not valid JSON: \(describe(error))")
        }
        guard case .object = shape else {
            throw .invalidBody("the body must be a JSON object (\(typeName)), not \(shape.kindName)")
        }
        let value: T
        do {
            value = try JSONDecoder().decode(T.self, from: data)
        } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty {
            // The document is valid JSON, so a number does not fit its field; the decoder does
            // not say which, so find it by decoding with the other numbers set to 0.
            throw .invalidBody("\(typeName): \(badNumber(in: shape, as: T.self))")
        } catch {
            throw .invalidBody("\(typeName): \(describe(error))")
        }
        // Every number in Cloud Hypervisor's API is an integer, and serde refuses `1.0` or `5e8`
        // for one (Foundation's decoder takes them). Fields the type does not know are ignored,
        // whatever they hold, as serde ignores them.
        let fractional = fractionalNumbers(in: bytes)
        if !fractional.isEmpty, let encoded = try? JSONEncoder().encode(value),
           let known = try? JSONDecoder().decode(JSONShape.self, from: encoded),
           let number = fractional.first(where: { known.value(at: $0.path) != nil }) {
            let field = number.path.reduce("") { $0.isEmpty || $1.hasPrefix("[") ? $0 + $1 : $0 + "." + $1 }
            throw .invalidBody("\(typeName): field '\(field)': \(number.text) is not a whole number")
        }
        return value
    }

    /// The number literals written with a fraction or an exponent (`1.0`, `5e8`), with the
    /// path of each (keys, and `[i]` for array elements, as ``JSONShape/value(at:)`` takes it).
    /// The bytes are valid JSON (checked before).
    static func fractionalNumbers(in bytes: [UInt8]) -> [(path: [String], text: String)] {
        enum Frame { case object(key: String?), array(index: Int) }
        var stack: [Frame] = []
        var found: [(path: [String], text: String)] = []
        var index = 0
        func path() -> [String] {
            stack.compactMap { frame in
                switch frame {
                case let .object(key): key
                case let .array(position): "[\(position)]"
                }
            }
        }
        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "{"): stack.append(.object(key: nil)); index += 1
            case UInt8(ascii: "["): stack.append(.array(index: 0)); index += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): _ = stack.popLast(); index += 1
            case UInt8(ascii: ","):
                if case let .array(position)? = stack.last { stack[stack.count - 1] = .array(index: position + 1) }
                if case .object? = stack.last { stack[stack.count - 1] = .object(key: nil) }
                index += 1
            case UInt8(ascii: "\""):
                var text: [UInt8] = []
                index += 1
                while index < bytes.count, bytes[index] != UInt8(ascii: "\"") {
                    if bytes[index] == UInt8(ascii: "\\") { text.append(bytes[index]); index += 1 }
                    if index < bytes.count { text.append(bytes[index]) }
                    index += 1
                }
                index += 1
                // A string right after `{` or `,` in an object is a key (the `:` follows).
                if case .object(nil)? = stack.last {
                    var next = index
                    while next < bytes.count, bytes[next] == 0x20 || bytes[next] == 0x0A || bytes[next] == 0x0D || bytes[next] == 0x09 { next += 1 }
                    if next < bytes.count, bytes[next] == UInt8(ascii: ":") {
                        let key = (try? JSONDecoder().decode(String.self, from: Data([UInt8(ascii: "\"")] + text + [UInt8(ascii: "\"")])))
                            ?? String(decoding: text, as: UTF8.self)
                        stack[stack.count - 1] = .object(key: key)
                    }
                }
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                let start = index
                var fractional = false
                while index < bytes.count {
                    let scalar = bytes[index]
                    if scalar == UInt8(ascii: ".") || scalar == UInt8(ascii: "e") || scalar == UInt8(ascii: "E") {
                        fractional = true
                    } else if !(isDigit(scalar) || scalar == UInt8(ascii: "-") || scalar == UInt8(ascii: "+")) {
                        break
                    }
                    index += 1
                }
                if fractional { found.append((path(), String(decoding: bytes[start..<index], as: UTF8.self))) }
            default: index += 1
            }
        }
        return found
    }

    /// Names the number that does not fit its field (out of range, negative, or fractional),
    /// trying at most 64 numbers.
    private static func badNumber<T: Decodable>(in shape: JSONShape, as type: T.Type) -> String {
        let generic = "a number does not fit its field (out of range, negative, or not a whole number)"
        let paths = shape.numberPaths(limit: 64)
        guard paths.count <= 64 else { return generic }
        let encoder = JSONEncoder()
        for path in paths {
            guard let probe = try? encoder.encode(shape.zeroingNumbers(except: path)) else { continue }
            var corrupted = false
            do { _ = try JSONDecoder().decode(T.self, from: probe) } catch let DecodingError.dataCorrupted(context) {
                corrupted = context.codingPath.isEmpty
            } catch {}
            if corrupted {
                let text = path.reduce("") { $0.isEmpty || $1.hasPrefix("[") ? $0 + $1 : $0 + "." + $1 }
                let number: String
                switch shape.value(at: path) {
                case let .integer(value)?: number = "\(value)"
                case let .unsigned(value)?: number = "\(value)"
                case let .double(value)?: number = "\(value)"
                default: number = "the number"
                }
                return "field '\(text)': \(number) does not fit (out of range, negative, or not a whole number)"
            }
        }
        return generic
    }

    /// Checks that `bytes` hold one JSON object, for bodies whose fields are not modelled.
    public static func requireObject(_ bytes: [UInt8], typeName: String) throws(APIError) {
        let shape: JSONShape
        do {
            shape = try JSONDecoder().decode(JSONShape.self, from: Data(bytes))
        } catch {
            throw .invalidBody("the body is not valid JSON: \(describe(error))")
        }
        guard case .object = shape else {
            throw .invalidBody("the body must be a JSON object (\(typeName)), not \(shape.kindName)")
        }
    }

    /// A sentence for a decoding error: the field path and what was wrong.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        switch error {
        case let .typeMismatch(type, context):
            return "\(field(context.codingPath)): expected \(jsonKind(type)) (\(context.debugDescription))"
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

extension JSONShape {
    var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer, .unsigned, .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
