import JSONCoding
import Testing

/// Types that use every part of the Encoder and Decoder the synthesized conformances and the
/// standard library reach.
enum Shape: Codable, Equatable {
    case circle(radius: Double)
    case polygon([Point], closed: Bool)
    case empty
}

struct Point: Codable, Equatable, Hashable {
    var x: Int32
    var y: Int32
}

enum Mode: String, Codable, Equatable { case tty = "Tty", off = "Off" }
enum Level: UInt8, Codable, Equatable { case low = 1, high = 200 }

struct Everything: Codable, Equatable {
    var int = Int.min
    var int8 = Int8.min
    var int16 = Int16.max
    var int32 = Int32.min
    var int64 = Int64.max
    var uint = UInt.max
    var uint8 = UInt8.max
    var uint16 = UInt16.max
    var uint32 = UInt32.max
    var uint64 = UInt64.max
    var float: Float = 0.1
    var double = 1.0 / 3
    var flag = true
    var text = "a/\"b\"\n\u{1}é😀"
    var optional: Int? = nil
    var present: String? = "here"
    var list: [UInt16] = [1, 2, 3]
    var nestedList: [[Point]] = [[Point(x: 1, y: -1)], []]
    var byName: [String: Point] = ["a": Point(x: 0, y: 0), "b": Point(x: 5, y: 6)]
    var byNumber: [Int: String] = [1: "one", -20: "minus twenty"]
    var byUnsigned: [UInt64: Bool] = [7: true]
    var mode = Mode.tty
    var level = Level.high
    var shapes: [Shape] = [.circle(radius: 2.5), .polygon([Point(x: 1, y: 2)], closed: true), .empty]
    var optionals: [Int?] = [1, nil, 3]
    var set: Set<Point> = [Point(x: 9, y: 9)]
}

/// A class hierarchy that encodes its parent through superEncoder, and a type using nested
/// containers and explicit nils by hand.
class Base: Codable {
    var id: String
    init(id: String) { self.id = id }
}

final class Derived: Base {
    var extra: [Int]
    init(id: String, extra: [Int]) {
        self.extra = extra
        super.init(id: id)
    }
    enum CodingKeys: String, CodingKey { case extra }
    required init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        extra = try c.decode([Int].self, forKey: .extra)
        try super.init(from: c.superDecoder())
    }
    override func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(extra, forKey: .extra)
        try super.encode(to: c.superEncoder())
    }
}

struct HandWritten: Codable, Equatable {
    var pairs: [(String, Int)]
    var note: String?
    var keys: [String]

    static func == (a: HandWritten, b: HandWritten) -> Bool {
        a.pairs.map(\.0) == b.pairs.map(\.0) && a.pairs.map(\.1) == b.pairs.map(\.1) && a.note == b.note && a.keys == b.keys
    }

    init(pairs: [(String, Int)], note: String?, keys: [String]) { (self.pairs, self.note, self.keys) = (pairs, note, keys) }

    enum Keys: String, CodingKey { case pairs, note, inner, rest }
    enum InnerKeys: String, CodingKey { case a, b }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        var list = c.nestedUnkeyedContainer(forKey: .pairs)
        for (name, value) in pairs {
            var pair = list.nestedContainer(keyedBy: InnerKeys.self)
            try pair.encode(name, forKey: .a)
            try pair.encode(value, forKey: .b)
        }
        try c.encodeNil(forKey: .note)
        if let note { try c.encode(note, forKey: .note) }
        var inner = c.nestedContainer(keyedBy: InnerKeys.self, forKey: .inner)
        var nested = inner.nestedUnkeyedContainer(forKey: .a)
        try nested.encodeNil()
        var deeper = nested.nestedUnkeyedContainer()
        try deeper.encode(true)
        try keys.encode(to: c.superEncoder(forKey: .rest))
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        var list = try c.nestedUnkeyedContainer(forKey: .pairs)
        var pairs: [(String, Int)] = []
        while !list.isAtEnd {
            let pair = try list.nestedContainer(keyedBy: InnerKeys.self)
            #expect(pair.allKeys.map(\.stringValue) == ["a", "b"])
            pairs.append((try pair.decode(String.self, forKey: .a), try pair.decode(Int.self, forKey: .b)))
        }
        self.pairs = pairs
        note = try c.decodeNil(forKey: .note) ? nil : try c.decode(String.self, forKey: .note)
        let inner = try c.nestedContainer(keyedBy: InnerKeys.self, forKey: .inner)
        #expect(inner.contains(.a) && !inner.contains(.b))
        var nested = try inner.nestedUnkeyedContainer(forKey: .a)
        #expect(try nested.decodeNil())
        var deeper = try nested.nestedUnkeyedContainer()
        #expect(try deeper.decode(Bool.self))
        #expect(nested.isAtEnd)
        keys = try [String](from: c.superDecoder(forKey: .rest))
    }
}

private func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T { try JSONCoding.decode(type, from: Array(text.utf8)) }

/// The coding path of an error as text: keys joined with '.', array positions as [n].
private func path(_ keys: [any CodingKey]) -> String {
    keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
}

/// The decoding error for `text` as `T`: its case name, path, and message.
private func failure<T: Decodable>(_ type: T.Type, _ text: String) -> (kind: String, path: String, message: String)? {
    do {
        _ = try decode(type, text)
        return nil
    } catch let DecodingError.typeMismatch(_, context) {
        return ("typeMismatch", path(context.codingPath), context.debugDescription)
    } catch let DecodingError.valueNotFound(_, context) {
        return ("valueNotFound", path(context.codingPath), context.debugDescription)
    } catch let DecodingError.keyNotFound(key, context) {
        return ("keyNotFound", path(context.codingPath + [key]), context.debugDescription)
    } catch let DecodingError.dataCorrupted(context) {
        return ("dataCorrupted", path(context.codingPath), context.debugDescription)
    } catch {
        return ("other", "", "\(error)")
    }
}

struct Limits: Codable, Equatable {
    var small: UInt8 = 0
    var signed: Int8 = 0
    var big: UInt64 = 0
    var any: Double = 0
    var single: Float = 0
    var items: [Limits]? = nil
}

extension Limits {
    /// Absent fields take their defaults (as serde's `default`), a null does not.
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func value<T: Decodable>(_ key: CodingKeys, _ fallback: T) throws -> T {
            c.contains(key) ? try c.decode(T.self, forKey: key) : fallback
        }
        self.init(small: try value(.small, 0), signed: try value(.signed, 0), big: try value(.big, 0), any: try value(.any, 0),
                  single: try value(.single, 0), items: try c.decodeIfPresent([Limits].self, forKey: .items))
    }
}

@Suite("JSON Codable coding")
struct CodingTests {
    @Test("every integer width, floats, strings, optionals, collections, enums and dictionaries with String and Int keys round-trip")
    func roundTrip() throws {
        let value = Everything()
        for sorted in [false, true] {
            let bytes = try JSONCoding.encode(value, sortedKeys: sorted)
            #expect(try JSONCoding.decode(Everything.self, from: bytes) == value)
        }
        let document = try JSONCoding.encodeValue(value)
        #expect(document["byNumber"] == .object([("-20", .string("minus twenty")), ("1", .string("one"))])
            || document["byNumber"] == .object([("1", .string("one")), ("-20", .string("minus twenty"))]))
        #expect(document["float"] == .double(0.1))
        #expect(document["uint64"] == .unsigned(.max))
        #expect(document["optional"] == nil)
        #expect(document["shapes"] == .array([
            .object([("circle", .object([("radius", .double(2.5))]))]),
            .object([("polygon", .object([("_0", .array([.object([("x", .integer(1)), ("y", .integer(2))])])), ("closed", .bool(true))]))]),
            .object([("empty", .object([]))]),
        ]))
        let text = String(decoding: try JSONCoding.encode(value, sortedKeys: true), as: UTF8.self)
        #expect(text.contains(#""text":"a/\"b\"\n\u0001é😀""#))
        #expect(text.contains(#""byNumber":{"-20":"minus twenty","1":"one"}"#))
    }

    @Test("super encoders and decoders, nested containers, explicit nils and re-encoded keys")
    func containers() throws {
        let derived = Derived(id: "d0", extra: [1, 2])
        let bytes = try JSONCoding.encode(derived, sortedKeys: true)
        #expect(String(decoding: bytes, as: UTF8.self) == #"{"extra":[1,2],"super":{"id":"d0"}}"#)
        let back = try JSONCoding.decode(Derived.self, from: bytes)
        #expect(back.id == "d0" && back.extra == [1, 2])

        for note in [nil, "n"] as [String?] {
            let value = HandWritten(pairs: [("p", 1), ("q", -2)], note: note, keys: ["k"])
            let encoded = try JSONCoding.encode(value)
            let expectedNote = note.map { "\"\($0)\"" } ?? "null"
            #expect(String(decoding: encoded, as: UTF8.self)
                == #"{"pairs":[{"a":"p","b":1},{"a":"q","b":-2}],"note":"# + expectedNote + #","inner":{"a":[null,[true]]},"rest":["k"]}"#)
            #expect(try JSONCoding.decode(HandWritten.self, from: encoded) == value)
        }
    }

    @Test("decodeIfPresent: an absent key and a null are nil; unknown keys are ignored")
    func optionalAndUnknown() throws {
        struct Optionals: Codable, Equatable { var a: Int?; var b: [String]?; var c: Point? }
        #expect(try decode(Optionals.self, #"{"a":null,"zzz":[1,{"x":1.5}],"c":{"x":1,"y":2,"z":3}}"#)
            == Optionals(a: nil, b: nil, c: Point(x: 1, y: 2)))
        #expect(try decode([Int?].self, "[null,2]") == [nil, 2])
        #expect(try decode(Int?.self, "null") == nil)
        #expect(try decode(String.self, #""top""#) == "top")
    }

    /// Bad documents for `Limits`, the error case, the path and a phrase of the message.
    static let bad: [(text: String, kind: String, path: String, mentions: String)] = [
        (#"{"small":300}"#, "dataCorrupted", ".small", "300 does not fit in UInt8"),
        (#"{"small":-1}"#, "dataCorrupted", ".small", "-1 does not fit in UInt8"),
        (#"{"signed":128}"#, "dataCorrupted", ".signed", "128 does not fit in Int8"),
        (#"{"signed":-129}"#, "dataCorrupted", ".signed", "-129 does not fit in Int8"),
        (#"{"big":-1}"#, "dataCorrupted", ".big", "-1 does not fit in UInt64"),
        (#"{"big":18446744073709551616}"#, "dataCorrupted", ".big", "does not fit in UInt64"),
        (#"{"signed":9223372036854775808}"#, "dataCorrupted", ".signed", "9223372036854775808 does not fit in Int8"),
        (#"{"small":1.5}"#, "dataCorrupted", ".small", "1.5 is not a whole number"),
        (#"{"small":1.0}"#, "dataCorrupted", ".small", "1.0 is written with a fraction or an exponent"),
        (#"{"big":5e8}"#, "dataCorrupted", ".big", "500000000.0 is written with a fraction or an exponent"),
        (#"{"big":1e19}"#, "dataCorrupted", ".big", "1e+19 is written with a fraction or an exponent"),
        (#"{"single":1e300}"#, "dataCorrupted", ".single", "does not fit in Float"),
        (#"{"small":"1"}"#, "typeMismatch", ".small", "expected an integer (UInt8), found a string"),
        (#"{"any":true}"#, "typeMismatch", ".any", "expected a number, found a boolean"),
        (#"{"small":null}"#, "valueNotFound", ".small", "found null"),
        (#"{"items":[{},{"items":{}}]}"#, "typeMismatch", ".items[1].items", "expected an array, found an object"),
        (#"{"items":[{},{"big":-5}]}"#, "dataCorrupted", ".items[1].big", "-5 does not fit in UInt64"),
        (#"{"items":[null]}"#, "valueNotFound", ".items[0]", "found null"),
        ("[]", "typeMismatch", "", "expected an object, found an array"),
        ("null", "valueNotFound", "", "expected an object, found null"),
        ("{", "dataCorrupted", "", "not valid JSON: the document ends inside an object at byte 1"),
    ]

    @Test("errors are the standard library's, with the right case, the full path and the number named", arguments: bad.indices)
    func errors(index: Int) {
        let (text, kind, path, mention) = Self.bad[index]
        let error = failure(Limits.self, text)
        #expect(error?.kind == kind, "\(text) → \(String(describing: error))")
        #expect(error?.path == path, "\(text) → \(String(describing: error))")
        #expect(error?.message.contains(mention) == true, "\(text) → \(String(describing: error))")
    }

    @Test("missing keys, wrong enum raw values and arrays too short")
    func otherErrors() {
        #expect(failure(Point.self, #"{"x":1}"#).map { [$0.kind, $0.path] } == ["keyNotFound", ".y"])
        #expect(failure([Point].self, #"[{"x":1,"y":2},{"y":2}]"#).map { [$0.kind, $0.path] } == ["keyNotFound", "[1].x"])
        #expect(failure(Mode.self, #""Pty""#)?.kind == "dataCorrupted")
        #expect(failure(Level.self, "2")?.kind == "dataCorrupted")
        #expect(failure(Level.self, "256").map { [$0.kind, $0.message] } == ["dataCorrupted", "256 does not fit in UInt8"])
        #expect(failure(Shape.self, #"{"circle":{"radius":1},"empty":{}}"#)?.kind == "typeMismatch")
        struct Pair: Decodable {
            var first: Int, second: Int
            init(from decoder: any Decoder) throws {
                var c = try decoder.unkeyedContainer()
                (first, second) = (try c.decode(Int.self), try c.decode(Int.self))
            }
        }
        #expect(failure(Pair.self, "[1]").map { [$0.kind, $0.path] } == ["valueNotFound", "[1]"])
        #expect(failure([Int: String].self, #"{"x":"y"}"#)?.kind == "typeMismatch")
        #expect(failure([Int: String].self, #"{"1":2}"#).map { [$0.kind, $0.path] } == ["typeMismatch", "[1]"])
    }

    @Test("float fields take any JSON number; doubles that are not finite cannot be encoded")
    func floats() throws {
        #expect(try decode(Limits.self, #"{"any":3,"single":18446744073709551615}"#).any == 3)
        #expect(try decode([Double].self, "[1,1.5,-2e-3,18446744073709551615,1e300]") == [1, 1.5, -2e-3, 18446744073709551615, 1e300])
        #expect(try decode([Float].self, "[0.1,3.4e38]") == [0.1, 3.4e38])
        do {
            _ = try JSONCoding.encode(Limits(items: [Limits(), Limits(any: .nan)]))
            Issue.record("NaN was encoded")
        } catch let EncodingError.invalidValue(_, context) {
            #expect(path(context.codingPath) == ".items[1].any")
        } catch {
            Issue.record("\(error)")
        }
        #expect(throws: EncodingError.self) { try JSONCoding.encode([Float.infinity]) }
    }
}

@Suite("JSONCoding README example")
struct ReadmeExampleTests {
    struct Disk: Codable, Equatable {
        var path: String
        var numQueues: UInt16
        enum CodingKeys: String, CodingKey { case path, numQueues = "num_queues" }
    }

    @Test("the README's embedding example does what it says")
    func example() throws {
        let bytes = try JSONCoding.encode([Disk(path: "/d.raw", numQueues: 2)], sortedKeys: true)
        #expect(String(decoding: bytes, as: UTF8.self) == #"[{"num_queues":2,"path":"/d.raw"}]"#)
        #expect(try JSONCoding.decode([Disk].self, from: bytes) == [Disk(path: "/d.raw", numQueues: 2)])
        do {
            _ = try JSONCoding.decode(Disk.self, from: Array(#"{"path":"/d","num_queues":70000}"#.utf8))
            Issue.record("70000 was taken for a UInt16")
        } catch let DecodingError.dataCorrupted(context) {
            #expect(context.codingPath.map(\.stringValue) == ["num_queues"])
            #expect(context.debugDescription == "70000 does not fit in UInt16")
        }
        let document = try JSONValue(parsing: Array(#"{"a":[1,2.5,"x"]}"#.utf8))
        #expect(document == .object([("a", .array([.integer(1), .double(2.5), .string("x")]))]))
        #expect(String(decoding: try document.serialized(sortedKeys: true), as: UTF8.self) == #"{"a":[1,2.5,"x"]}"#)
    }
}
