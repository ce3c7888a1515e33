// A strict RFC 8259 parser: bytes in, a JSONValue out, or an error naming the fault and its
// byte offset. No extensions: no comments, no trailing commas, no NaN, no byte-order mark.

/// Why a document was refused: what was wrong, and where.
public struct JSONParseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The byte offset of the fault (of its first byte) from the start of the document.
    public var offset: Int
    /// What was wrong, as a phrase ("a trailing comma before ']'").
    public var reason: String

    /// An error at `offset`.
    public init(offset: Int, reason: String) {
        self.offset = offset
        self.reason = reason
    }

    /// "`reason` at byte `offset`".
    public var description: String { "\(reason) at byte \(offset)" }
}

/// The parser behind ``JSONValue/init(parsing:)``. It refuses, each with its offset: trailing
/// commas, comments, leading zeros, bad or unknown escapes, lone surrogates in `\u` escapes,
/// unescaped control characters, invalid UTF-8, duplicate keys in one object, numbers beyond
/// a double's range, anything after the document, and nesting deeper than ``maximumDepth``.
public enum JSONParser {
    /// The deepest nesting of arrays and objects accepted (a document of 256 nested arrays
    /// parses, 257 does not), so hostile input cannot exhaust the stack.
    public static let maximumDepth = 256

    /// Parses `bytes` as one JSON document.
    /// - Throws: ``JSONParseError``.
    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        var cursor = Cursor(bytes: bytes)
        cursor.skipWhitespace()
        guard cursor.index < bytes.count else { throw JSONParseError(offset: 0, reason: "the document is empty") }
        let value = try cursor.value(depth: 0)
        cursor.skipWhitespace()
        guard cursor.index == bytes.count else {
            throw cursor.error("unexpected \(describe(bytes[cursor.index])) after the document")
        }
        return value
    }

    /// A byte as a message shows it: `'x'` for printable ASCII, `0xNN` otherwise.
    static func describe(_ byte: UInt8) -> String {
        (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(hex(byte))"
    }

    static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
    }
}

private let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")

/// The position in the document and the productions of the grammar.
private struct Cursor {
    let bytes: [UInt8]
    var index = 0

    func error(_ reason: String, at offset: Int? = nil) -> JSONParseError {
        JSONParseError(offset: offset ?? index, reason: reason)
    }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    /// The byte at the cursor, or an "ends inside" error.
    func peek(_ inside: String) throws(JSONParseError) -> UInt8 {
        guard index < bytes.count else { throw error("the document ends inside \(inside)") }
        return bytes[index]
    }

    mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
        let byte = try peek("a value")
        switch byte {
        case UInt8(ascii: "{"): return try object(depth: depth + 1)
        case UInt8(ascii: "["): return try array(depth: depth + 1)
        case quote: return .string(try string())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "/"): throw error("a comment (JSON has none)")
        default: throw error("unexpected \(JSONParser.describe(byte)) where a value should start")
        }
    }

    mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let expected = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        for (position, byte) in expected.enumerated() where index + position >= bytes.count || bytes[index + position] != byte {
            throw error("not a JSON value (expected '\(word)')")
        }
        index += expected.count
    }

    mutating func enter(_ depth: Int) throws(JSONParseError) {
        guard depth <= JSONParser.maximumDepth else {
            throw error("arrays and objects nested deeper than \(JSONParser.maximumDepth) levels")
        }
        index += 1
    }

    mutating func array(depth: Int) throws(JSONParseError) -> JSONValue {
        try enter(depth)
        var items: [JSONValue] = []
        skipWhitespace()
        if try peek("an array") == UInt8(ascii: "]") { index += 1; return .array(items) }
        while true {
            items.append(try value(depth: depth))
            skipWhitespace()
            let byte = try peek("an array")
            index += 1
            if byte == UInt8(ascii: "]") { return .array(items) }
            guard byte == UInt8(ascii: ",") else {
                throw error("expected ',' or ']' in an array, found \(JSONParser.describe(byte))", at: index - 1)
            }
            let comma = index - 1
            skipWhitespace()
            if try peek("an array") == UInt8(ascii: "]") { throw error("a trailing comma before ']'", at: comma) }
        }
    }

    mutating func object(depth: Int) throws(JSONParseError) -> JSONValue {
        try enter(depth)
        var members: [(key: String, value: JSONValue)] = []
        var keys = Set<String>()
        skipWhitespace()
        if try peek("an object") == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            let keyStart = index
            guard try peek("an object") == quote else {
                throw error("expected a key (a string) in an object, found \(JSONParser.describe(bytes[index]))")
            }
            let key = try string()
            guard keys.insert(key).inserted else { throw error("the key \"\(key)\" appears twice in one object", at: keyStart) }
            skipWhitespace()
            guard try peek("an object") == UInt8(ascii: ":") else {
                throw error("expected ':' after a key, found \(JSONParser.describe(bytes[index]))")
            }
            index += 1
            skipWhitespace()
            members.append((key, try value(depth: depth)))
            skipWhitespace()
            let byte = try peek("an object")
            index += 1
            if byte == UInt8(ascii: "}") { return .object(members) }
            guard byte == UInt8(ascii: ",") else {
                throw error("expected ',' or '}' in an object, found \(JSONParser.describe(byte))", at: index - 1)
            }
            let comma = index - 1
            skipWhitespace()
            if try peek("an object") == UInt8(ascii: "}") { throw error("a trailing comma before '}'", at: comma) }
        }
    }

    /// A string; the cursor is on its opening quote.
    mutating func string() throws(JSONParseError) -> String {
        index += 1
        let start = index
        // The common case: no escapes, so the bytes are the string (once checked).
        while index < bytes.count, bytes[index] != quote, bytes[index] != backslash {
            try scalar()
        }
        guard index < bytes.count else { throw error("the document ends inside a string") }
        if bytes[index] == quote {
            index += 1
            return String(decoding: bytes[start..<(index - 1)], as: UTF8.self)
        }
        var text = Array(bytes[start..<index])
        while true {
            guard index < bytes.count else { throw error("the document ends inside a string") }
            switch bytes[index] {
            case quote:
                index += 1
                return String(decoding: text, as: UTF8.self)
            case backslash:
                try escape(into: &text)
            default:
                let first = index
                try scalar()
                text.append(contentsOf: bytes[first..<index])
            }
        }
    }

    /// Checks one unescaped character of a string (a UTF-8 sequence) and steps over it.
    mutating func scalar() throws(JSONParseError) {
        let lead = bytes[index]
        if lead < 0x20 { throw error("an unescaped control character (byte 0x\(JSONParser.hex(lead))) in a string") }
        if lead < 0x80 { index += 1; return }
        // RFC 3629: the well-formed sequences, no overlong forms, no surrogates, nothing above U+10FFFF.
        let count: Int
        var low: UInt8 = 0x80, high: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: count = 2
        case 0xE0: count = 3; low = 0xA0
        case 0xE1...0xEC, 0xEE, 0xEF: count = 3
        case 0xED: count = 3; high = 0x9F
        case 0xF0: count = 4; low = 0x90
        case 0xF1...0xF3: count = 4
        case 0xF4: count = 4; high = 0x8F
        default: throw error("invalid UTF-8 (byte 0x\(JSONParser.hex(lead)) cannot start a character)")
        }
        for position in 1..<count {
            guard index + position < bytes.count else { throw error("invalid UTF-8 (a character cut short by the end)", at: bytes.count) }
            let byte = bytes[index + position]
            let (min, max) = position == 1 ? (low, high) : (UInt8(0x80), UInt8(0xBF))
            guard byte >= min, byte <= max else {
                throw error("invalid UTF-8 (byte 0x\(JSONParser.hex(byte)) after 0x\(JSONParser.hex(lead)))", at: index + position)
            }
        }
        index += count
    }

    /// One escape; the cursor is on its backslash.
    mutating func escape(into text: inout [UInt8]) throws(JSONParseError) {
        let start = index
        index += 1
        let byte = try peek("a string")
        index += 1
        switch byte {
        case quote, backslash, UInt8(ascii: "/"): text.append(byte)
        case UInt8(ascii: "b"): text.append(0x08)
        case UInt8(ascii: "f"): text.append(0x0C)
        case UInt8(ascii: "n"): text.append(0x0A)
        case UInt8(ascii: "r"): text.append(0x0D)
        case UInt8(ascii: "t"): text.append(0x09)
        case UInt8(ascii: "u"):
            var code = try hexQuad()
            if (0xDC00...0xDFFF).contains(code) {
                throw error("a lone low surrogate (\\u\(hex16(code))) in a string", at: start)
            }
            if (0xD800...0xDBFF).contains(code) {
                guard index + 1 < bytes.count, bytes[index] == backslash, bytes[index + 1] == UInt8(ascii: "u") else {
                    throw error("a lone high surrogate (\\u\(hex16(code))) in a string", at: start)
                }
                index += 2
                let low = try hexQuad()
                guard (0xDC00...0xDFFF).contains(low) else {
                    throw error("a high surrogate (\\u\(hex16(code))) not followed by a low one", at: start)
                }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            }
            text.append(contentsOf: Array(String(Character(Unicode.Scalar(code)!)).utf8))
        default:
            throw error("an unknown escape '\\\(byte < 0x80 && byte >= 0x20 ? String(Character(Unicode.Scalar(byte))) : "0x" + JSONParser.hex(byte))'", at: start)
        }
    }

    func hex16(_ code: UInt32) -> String {
        JSONParser.hex(UInt8(code >> 8)) + JSONParser.hex(UInt8(code & 0xFF))
    }

    /// Four hexadecimal digits after `\u`.
    mutating func hexQuad() throws(JSONParseError) -> UInt32 {
        var code: UInt32 = 0
        for _ in 0..<4 {
            let byte = try peek("a \\u escape")
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("a \\u escape needs four hexadecimal digits, found \(JSONParser.describe(byte))")
            }
            code = code << 4 | UInt32(digit)
            index += 1
        }
        return code
    }

    func isDigit(_ position: Int) -> Bool {
        position < bytes.count && bytes[position] >= UInt8(ascii: "0") && bytes[position] <= UInt8(ascii: "9")
    }

    /// A number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    mutating func number() throws(JSONParseError) -> JSONValue {
        let start = index
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        guard isDigit(index) else { throw error("a '-' not followed by a digit", at: start) }
        var magnitude: UInt64 = 0
        var overflow = false
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
            if isDigit(index) { throw error("a number with a leading zero", at: start) }
        } else {
            while isDigit(index) {
                let (times, o1) = magnitude.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times.addingReportingOverflow(UInt64(bytes[index] - UInt8(ascii: "0")))
                overflow = overflow || o1 || o2
                magnitude = sum
                index += 1
            }
        }
        var integral = true
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            integral = false
            index += 1
            guard isDigit(index) else { throw error("a '.' not followed by a digit in a number", at: index - 1) }
            while isDigit(index) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            integral = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard isDigit(index) else { throw error("an exponent without digits in a number", at: start) }
            while isDigit(index) { index += 1 }
        }
        if integral, !overflow {
            if !negative {
                return magnitude <= UInt64(Int64.max) ? .integer(Int64(magnitude)) : .unsigned(magnitude)
            }
            if magnitude <= UInt64(Int64.max) { return .integer(-Int64(magnitude)) }
            if magnitude == UInt64(Int64.max) + 1 { return .integer(.min) }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        guard let value = Double(text), value.isFinite else {
            throw error("the number \(text) is beyond the range of a double", at: start)
        }
        return .double(value)
    }
}
