import JSONCoding
import Testing

private func parse(_ text: String) throws(JSONParseError) -> JSONValue { try JSONParser.parse(Array(text.utf8)) }

/// The error parsing `bytes` gives, or nil when they parse.
private func refusal(_ bytes: [UInt8]) -> JSONParseError? {
    do { _ = try JSONParser.parse(bytes); return nil } catch { return error }
}

@Suite("JSON parser")
struct ParserTests {
    @Test("documents of every kind parse to the values they write")
    func accepted() throws {
        #expect(try parse(" null ") == .null)
        #expect(try parse("true") == .bool(true))
        #expect(try parse("[false]") == .array([.bool(false)]))
        #expect(try parse("0") == .integer(0))
        #expect(try parse("-0") == .integer(0))
        #expect(try parse("-9223372036854775808") == .integer(.min))
        #expect(try parse("9223372036854775807") == .integer(.max))
        #expect(try parse("9223372036854775808") == .unsigned(1 << 63))
        #expect(try parse("18446744073709551615") == .unsigned(.max))
        #expect(try parse("18446744073709551616") == .double(18446744073709551616.0))
        #expect(try parse("-9223372036854775809") == .double(-9223372036854775809.0))
        #expect(try parse("1.5") == .double(1.5))
        #expect(try parse("1.0") == .double(1))
        #expect(try parse("5e8") == .double(5e8))
        #expect(try parse("-2.5E-3") == .double(-0.0025))
        #expect(try parse("1e-400") == .double(0))
        #expect(try parse(#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#) == .string("a\"\\/\u{8}\u{c}\n\r\té😀"))
        #expect(try parse("\"é😀\"") == .string("é😀"))
        #expect(try parse("\t{\"b\" : 1 ,\"a\":[ ]}\r\n") == .object([("b", .integer(1)), ("a", .array([]))]))
        #expect(try parse("{}") == .object([]))
    }

    /// Each refused document, the byte offset the error names, and a phrase of its reason.
    static let refused: [(text: String, offset: Int, mentions: String)] = [
        ("", 0, "empty"),
        ("   ", 0, "empty"),
        ("[1,2,]", 4, "trailing comma"),
        (#"{"a":1,}"#, 6, "trailing comma"),
        ("[1 2]", 3, "expected ',' or ']'"),
        (#"{"a" 1}"#, 5, "expected ':'"),
        (#"{"a":1 "b":2}"#, 7, "expected ',' or '}'"),
        ("{1:2}", 1, "expected a key"),
        ("// c\n1", 0, "comment"),
        ("[1] /* c */", 4, "after the document"),
        ("01", 0, "leading zero"),
        ("-01", 0, "leading zero"),
        ("[00]", 1, "leading zero"),
        ("-", 0, "'-' not followed by a digit"),
        ("-a", 0, "'-' not followed by a digit"),
        ("1.", 1, "'.' not followed by a digit"),
        (".5", 0, "where a value should start"),
        ("+1", 0, "where a value should start"),
        ("1e", 0, "exponent without digits"),
        ("1e+", 0, "exponent without digits"),
        ("1e400", 0, "beyond the range of a double"),
        ("-1e400", 0, "beyond the range of a double"),
        ("NaN", 0, "where a value should start"),
        ("Infinity", 0, "where a value should start"),
        ("tru", 0, "expected 'true'"),
        ("nul", 0, "expected 'null'"),
        ("[true false]", 6, "expected ',' or ']'"),
        (#""\x""#, 1, "unknown escape '\\x'"),
        (#""\u12G4""#, 5, "four hexadecimal digits"),
        (#""\u12""#, 5, "four hexadecimal digits"),
        (#""ab\ud800""#, 3, "lone high surrogate"),
        (#""\ud800\u0041""#, 1, "not followed by a low one"),
        (#""\ud800x""#, 1, "lone high surrogate"),
        (#""\udc00""#, 1, "lone low surrogate"),
        ("\"a\u{1}b\"", 2, "unescaped control character (byte 0x01)"),
        ("\"a\nb\"", 2, "unescaped control character (byte 0x0A)"),
        ("\"abc", 4, "ends inside a string"),
        ("[1,", 3, "ends inside"),
        (#"{"a":"#, 5, "ends inside"),
        (#"{"a":1,"a":2}"#, 7, "the key \"a\" appears twice"),
        (#"{"a":{"b":1,"b":1}}"#, 12, "the key \"b\" appears twice"),
        ("1 2", 2, "unexpected '2' after the document"),
        ("{}x", 2, "unexpected 'x' after the document"),
        ("'a'", 0, "where a value should start"),
    ]

    @Test("malformed documents are refused, naming the fault and its byte offset", arguments: refused.indices)
    func refusedDocument(index: Int) {
        let (text, offset, mention) = Self.refused[index]
        let error = refusal(Array(text.utf8))
        #expect(error?.offset == offset, "\(text) → \(String(describing: error))")
        #expect(error?.reason.contains(mention) == true, "\(text) → \(String(describing: error))")
        #expect(error?.description.hasSuffix("at byte \(offset)") == true)
    }

    @Test("invalid UTF-8 in a string is refused at the offending byte")
    func invalidUTF8() {
        let cases: [(bytes: [UInt8], offset: Int)] = [
            ([0x22, 0xFF, 0x22], 1),                 // never a UTF-8 byte
            ([0x22, 0x80, 0x22], 1),                 // a continuation byte first
            ([0x22, 0xC0, 0xAF, 0x22], 1),           // overlong '/'
            ([0x22, 0xE0, 0x80, 0xAF, 0x22], 2),     // overlong three-byte form
            ([0x22, 0xED, 0xA0, 0x80, 0x22], 2),     // an encoded surrogate (U+D800)
            ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], 2), // above U+10FFFF
            ([0x22, 0xC3, 0x22], 2),                 // a sequence cut by the closing quote
            ([0x22, 0xE2, 0x82], 3),                 // cut by the end of the document
            ([0xEF, 0xBB, 0xBF, 0x31], 0),           // a byte-order mark before the document
        ]
        for (bytes, offset) in cases {
            let error = refusal(bytes)
            #expect(error?.offset == offset, "\(bytes) → \(String(describing: error))")
        }
        #expect(refusal([0x22, 0xF0, 0x9F, 0x98, 0x80, 0x22]) == nil)
    }

    @Test("nesting: 256 levels parse, 257 are refused, and a hostile 1,000,000 levels end in an error, not a crash")
    func depth() throws {
        let deepest = String(repeating: "[", count: 256) + String(repeating: "]", count: 256)
        var value = try parse(deepest)
        var levels = 0
        while case let .array(items) = value { levels += 1; value = items.first ?? .null }
        #expect(levels == 256)
        let tooDeep = String(repeating: "[", count: 257) + String(repeating: "]", count: 257)
        #expect(refusal(Array(tooDeep.utf8))?.offset == 256)
        let objects = String(repeating: #"{"a":"#, count: 300) + "1" + String(repeating: "}", count: 300)
        #expect(refusal(Array(objects.utf8))?.reason.contains("deeper than 256") == true)
        let hostile = [UInt8](repeating: UInt8(ascii: "["), count: 1_000_000)
        #expect(refusal(hostile)?.offset == 256)
    }

    @Test("the serializer: compact, '/' unescaped, quotes, backslashes and control characters escaped, UTF-8 as is")
    func serializer() throws {
        let value = JSONValue.object([
            ("s", .string("a/b\"c\\d\u{0}\u{1f}\t\n\r\u{8}\u{c}\u{7f}é😀")), ("n", .null), ("t", .bool(true)),
            ("i", .integer(-5)), ("u", .unsigned(.max)), ("d", .double(0.1)), ("w", .double(5e8)), ("e", .double(1e300)),
            ("a", .array([.integer(1), .array([])])), ("o", .object([])),
        ])
        let text = String(decoding: try value.serialized(), as: UTF8.self)
        #expect(text == #"{"s":"a/b\"c\\d\u0000\u001f\t\n\r\b\f"# + "\u{7f}é😀" + #"","n":null,"t":true,"i":-5,"u":18446744073709551615,"d":0.1,"w":500000000.0,"e":1e+300,"a":[1,[]],"o":{}}"#)
        #expect(try JSONParser.parse(value.serialized()) == value)
        let sorted = String(decoding: try value.serialized(sortedKeys: true), as: UTF8.self)
        #expect(sorted.hasPrefix(#"{"a":[1,[]],"d":0.1,"e":1e+300,"i":-5,"n":null,"o":{},"s":"#))
    }

    @Test("sorted keys follow the byte order of the UTF-8, as Foundation's .sortedKeys")
    func sortedKeys() throws {
        let keys = ["b", "a10", "a2", "B", "a", "_x", "A", "Z", "z", "a_b", "aB", "ab", "1", "10", "9", "a-", "a.", "é", "ß"]
        let value = JSONValue.object(keys.map { ($0, .integer(1)) })
        guard case let .object(members) = try JSONParser.parse(value.serialized(sortedKeys: true)) else {
            Issue.record("not an object"); return
        }
        #expect(members.map(\.key) == ["1", "10", "9", "A", "B", "Z", "_x", "a", "a-", "a.", "a10", "a2", "aB", "a_b", "ab", "b", "z", "ß", "é"])
    }

    @Test("doubles are written so they read back as the same double; NaN and infinities are refused")
    func doubles() throws {
        let samples: [Double] = [0, -0.0, 1, -1, 0.1, 1.0 / 3, 5e-324, .leastNormalMagnitude, .greatestFiniteMagnitude,
                                 1e16, 123456789012345678, 2.5e-7, -7.25e100, Double(Float(0.1))]
        for sample in samples {
            let written = try JSONValue.double(sample).serialized()
            guard case let .double(read) = try JSONParser.parse(written) else {
                Issue.record("\(sample) was written as \(String(decoding: written, as: UTF8.self)), not a double"); continue
            }
            #expect(read == sample && read.sign == sample.sign, "\(sample)")
        }
        for bad in [Double.nan, .infinity, -.infinity] {
            #expect(throws: EncodingError.self) { try JSONValue.array([.double(bad)]).serialized() }
        }
    }
}
