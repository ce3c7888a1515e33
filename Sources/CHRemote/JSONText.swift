// The small request bodies ch-remote builds itself (resize, snapshot, restore, migration...),
// written byte for byte as Cloud Hypervisor's ch-remote writes them with serde_json: compact,
// fields in the struct's order, `null` for an absent optional.

/// A JSON value whose object keys keep their order.
indirect enum JSONText {
    case string(String)
    case integer(UInt64)
    case bool(Bool)
    case null
    case array([JSONText])
    case object([(String, JSONText)])

    /// An optional string, `null` when absent.
    static func string(_ value: String?) -> JSONText { value.map { .string($0) } ?? .null }
    /// An optional number, `null` when absent.
    static func integer(_ value: UInt64?) -> JSONText { value.map { .integer($0) } ?? .null }

    /// The compact text (`{"id":"_disk0","desired_size":1073741824}`).
    var text: String {
        switch self {
        case let .string(value): Self.quoted(value)
        case let .integer(value): String(value)
        case let .bool(value): value ? "true" : "false"
        case .null: "null"
        case let .array(items): "[" + items.map(\.text).joined(separator: ",") + "]"
        case let .object(fields): "{" + fields.map { Self.quoted($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }

    /// The body bytes.
    var bytes: [UInt8] { Array(text.utf8) }

    /// A JSON string as serde_json escapes it: quote, backslash and control characters only
    /// (`/` and non-ASCII stay as they are).
    private static func quoted(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case let control where control.value < 0x20:
                let hex = String(control.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
