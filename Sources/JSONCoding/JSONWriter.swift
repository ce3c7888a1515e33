// Compact JSON text from a JSONValue.

/// Writes JSON text: no whitespace, `/` unescaped, `"` `\` and control characters escaped,
/// everything else (non-ASCII included) as UTF-8. Doubles are written with a fraction or an
/// exponent in the shortest form that parses back to the same value, so they stay doubles.
public struct JSONWriter {
    /// Whether object members are written sorted by key (byte order of the UTF-8, which is
    /// the order of Foundation's `.sortedKeys`).
    public var sortedKeys: Bool
    /// The text written so far.
    public private(set) var bytes: [UInt8] = []

    /// A writer with nothing written.
    public init(sortedKeys: Bool = false) { self.sortedKeys = sortedKeys }

    /// Appends `value`.
    /// - Throws: `EncodingError.invalidValue` for a NaN or infinite double.
    public mutating func write(_ value: JSONValue) throws {
        switch value {
        case .null: append("null")
        case let .bool(flag): append(flag ? "true" : "false")
        case let .integer(number): append(String(number))
        case let .unsigned(number): append(String(number))
        case let .double(number):
            guard number.isFinite else {
                throw EncodingError.invalidValue(number, EncodingError.Context(
                    codingPath: [], debugDescription: "\(number) cannot be written as JSON (JSON numbers are finite)"))
            }
            // Swift's description is the shortest text that reads back as the same double, and
            // it always has a '.' or an exponent ("1.0", "1e+16", "5e-324"), all valid JSON.
            append(number.description)
        case let .string(text): writeString(text)
        case let .array(items):
            bytes.append(UInt8(ascii: "["))
            for (position, item) in items.enumerated() {
                if position > 0 { bytes.append(UInt8(ascii: ",")) }
                try write(item)
            }
            bytes.append(UInt8(ascii: "]"))
        case let .object(members):
            bytes.append(UInt8(ascii: "{"))
            let ordered = sortedKeys ? members.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) } : members
            for (position, member) in ordered.enumerated() {
                if position > 0 { bytes.append(UInt8(ascii: ",")) }
                writeString(member.key)
                bytes.append(UInt8(ascii: ":"))
                try write(member.value)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    private mutating func append(_ text: String) { bytes.append(contentsOf: text.utf8) }

    private mutating func writeString(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): append("\\\"")
            case UInt8(ascii: "\\"): append("\\\\")
            case 0x0A: append("\\n")
            case 0x0D: append("\\r")
            case 0x09: append("\\t")
            case 0x08: append("\\b")
            case 0x0C: append("\\f")
            case 0x00..<0x20:
                let digits = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: Array("\\u00".utf8) + [digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
