// The Decoder: a Codable value out of a JSONValue. Strict about numbers, as Cloud Hypervisor's
// serde is: an integer field takes only an integer literal that fits it; unknown keys are ignored.

/// The `Decoder` handed to `init(from:)`.
struct ValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case let .object(members) = value else { throw mismatch([String: JSONValue].self, value, codingPath) }
        return KeyedDecodingContainer(KeyedDecoder<Key>(members: members, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case let .array(items) = value else { throw mismatch([JSONValue].self, value, codingPath) }
        return UnkeyedDecoder(items: items, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { SingleDecoder(value: value, codingPath: codingPath) }
}

/// `valueNotFound` for a null where a `type` was expected, `typeMismatch` for anything else.
func mismatch(_ type: Any.Type, _ value: JSONValue, _ path: [any CodingKey]) -> DecodingError {
    if case .null = value {
        return .valueNotFound(type, DecodingError.Context(codingPath: path, debugDescription: "expected \(expectedKind(type)), found null"))
    }
    return .typeMismatch(type, DecodingError.Context(codingPath: path, debugDescription: "expected \(expectedKind(type)), found \(value.kindName)"))
}

/// What a message calls the JSON a type is decoded from.
func expectedKind(_ type: Any.Type) -> String {
    switch type {
    case is Bool.Type: "a boolean"
    case is String.Type: "a string"
    case is Double.Type, is Float.Type: "a number"
    case is [String: JSONValue].Type: "an object"
    case is [JSONValue].Type: "an array"
    case is any FixedWidthInteger.Type: "an integer (\(type))"
    default: "\(type)"
    }
}

/// The conversions from JSON scalars, shared by the three container kinds.
struct SingleDecoder: SingleValueDecodingContainer {
    let value: JSONValue
    let codingPath: [any CodingKey]

    func decodeNil() -> Bool { value == .null }

    func decode(_ type: Bool.Type) throws -> Bool {
        guard case let .bool(flag) = value else { throw mismatch(type, value, codingPath) }
        return flag
    }

    func decode(_ type: String.Type) throws -> String {
        guard case let .string(text) = value else { throw mismatch(type, value, codingPath) }
        return text
    }

    /// Any JSON number.
    func decode(_ type: Double.Type) throws -> Double {
        switch value {
        case let .integer(number): return Double(number)
        case let .unsigned(number): return Double(number)
        case let .double(number): return number
        default: throw mismatch(type, value, codingPath)
        }
    }

    /// Any JSON number within a Float's range.
    func decode(_ type: Float.Type) throws -> Float {
        let number = try decode(Double.self)
        let narrowed = Float(number)
        guard narrowed.isFinite else { throw corrupted("\(number) does not fit in Float") }
        return narrowed
    }

    /// An integer literal that fits `I`: `1.0`, `5e8`, `-1` for an unsigned type and values
    /// out of range are refused (`dataCorrupted` at this path, the message naming the number).
    func integer<I: FixedWidthInteger>(_ type: I.Type) throws -> I {
        switch value {
        case let .integer(number):
            guard let fitted = I(exactly: number) else { throw corrupted("\(number) does not fit in \(I.self)") }
            return fitted
        case let .unsigned(number):
            guard let fitted = I(exactly: number) else { throw corrupted("\(number) does not fit in \(I.self)") }
            return fitted
        case let .double(number):
            if number.rounded(.towardZero) != number { throw corrupted("\(number) is not a whole number") }
            // Beyond every integer type (an integer literal above UInt64.max lands here too).
            if number.magnitude >= 0x1p64 { throw corrupted("\(number) does not fit in \(I.self)") }
            throw corrupted("\(number) is written with a fraction or an exponent; \(I.self) takes an integer written without them")
        default:
            throw mismatch(type, value, codingPath)
        }
    }

    func corrupted(_ text: String) -> DecodingError {
        .dataCorrupted(DecodingError.Context(codingPath: codingPath, debugDescription: text))
    }

    func decode(_ type: Int.Type) throws -> Int { try integer(type) }
    func decode(_ type: Int8.Type) throws -> Int8 { try integer(type) }
    func decode(_ type: Int16.Type) throws -> Int16 { try integer(type) }
    func decode(_ type: Int32.Type) throws -> Int32 { try integer(type) }
    func decode(_ type: Int64.Type) throws -> Int64 { try integer(type) }
    func decode(_ type: UInt.Type) throws -> UInt { try integer(type) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(type) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(type) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(type) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(type) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try T(from: ValueDecoder(value: value, codingPath: codingPath))
    }
}

struct KeyedDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let members: [(key: String, value: JSONValue)]
    let codingPath: [any CodingKey]
    /// Member positions by key, for objects large enough that a scan costs more.
    private let positions: [String: Int]?

    init(members: [(key: String, value: JSONValue)], codingPath: [any CodingKey]) {
        self.members = members
        self.codingPath = codingPath
        positions = members.count > 12 ? Dictionary(members.enumerated().map { ($1.key, $0) }, uniquingKeysWith: { first, _ in first }) : nil
    }

    /// The keys of the object that `Key` can represent, in document order.
    var allKeys: [Key] { members.compactMap { Key(stringValue: $0.key) } }

    func contains(_ key: Key) -> Bool { lookup(key) != nil }

    private func lookup(_ key: Key) -> JSONValue? {
        let name = key.stringValue
        if let positions { return positions[name].map { members[$0].value } }
        return members.first { $0.key == name }?.value
    }

    private func member(_ key: Key) throws -> SingleDecoder {
        guard let value = lookup(key) else {
            throw DecodingError.keyNotFound(key, DecodingError.Context(
                codingPath: codingPath, debugDescription: "no value for the key '\(key.stringValue)'"))
        }
        return SingleDecoder(value: value, codingPath: codingPath + [key])
    }

    func decodeNil(forKey key: Key) throws -> Bool { try member(key).decodeNil() }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try member(key).decode(type) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try member(key).decode(type) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try member(key).decode(type) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try member(key).decode(type) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try member(key).integer(type) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try member(key).integer(type) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try member(key).integer(type) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try member(key).integer(type) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try member(key).integer(type) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try member(key).integer(type) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try member(key).integer(type) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try member(key).integer(type) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try member(key).integer(type) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try member(key).integer(type) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try member(key).decode(type) }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        let child = try member(key)
        return try ValueDecoder(value: child.value, codingPath: child.codingPath).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        let child = try member(key)
        return try ValueDecoder(value: child.value, codingPath: child.codingPath).unkeyedContainer()
    }

    /// The decoder of the member "super" (of null when there is none, as with Foundation).
    func superDecoder() throws -> any Decoder {
        let value = members.first { $0.key == JSONKey.superKey.stringValue }?.value ?? .null
        return ValueDecoder(value: value, codingPath: codingPath + [JSONKey.superKey])
    }

    /// The decoder of the member `key` (of null when there is none, as with Foundation).
    func superDecoder(forKey key: Key) throws -> any Decoder {
        ValueDecoder(value: lookup(key) ?? .null, codingPath: codingPath + [key])
    }
}

struct UnkeyedDecoder: UnkeyedDecodingContainer {
    let items: [JSONValue]
    let codingPath: [any CodingKey]
    private(set) var currentIndex = 0

    init(items: [JSONValue], codingPath: [any CodingKey]) {
        self.items = items
        self.codingPath = codingPath
    }

    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    /// The next element (not consumed), or `valueNotFound` at the end.
    private func next(_ type: Any.Type) throws -> SingleDecoder {
        let path = codingPath + [JSONKey(intValue: currentIndex)]
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(type, DecodingError.Context(
                codingPath: path, debugDescription: "the array has only \(items.count) elements"))
        }
        return SingleDecoder(value: items[currentIndex], codingPath: path)
    }

    /// Decodes the next element with `body` and moves past it when that succeeds.
    private mutating func take<T>(_ type: T.Type, _ body: (SingleDecoder) throws -> T) throws -> T {
        let value = try body(try next(type))
        currentIndex += 1
        return value
    }

    mutating func decodeNil() throws -> Bool {
        guard try next(Never?.self).decodeNil() else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool { try take(type) { try $0.decode(type) } }
    mutating func decode(_ type: String.Type) throws -> String { try take(type) { try $0.decode(type) } }
    mutating func decode(_ type: Double.Type) throws -> Double { try take(type) { try $0.decode(type) } }
    mutating func decode(_ type: Float.Type) throws -> Float { try take(type) { try $0.decode(type) } }
    mutating func decode(_ type: Int.Type) throws -> Int { try take(type) { try $0.integer(type) } }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try take(type) { try $0.integer(type) } }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try take(type) { try $0.integer(type) } }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try take(type) { try $0.integer(type) } }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try take(type) { try $0.integer(type) } }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try take(type) { try $0.integer(type) } }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try take(type) { try $0.integer(type) } }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try take(type) { try $0.integer(type) } }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try take(type) { try $0.integer(type) } }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try take(type) { try $0.integer(type) } }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try take(type) { try $0.decode(type) } }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try take(KeyedDecodingContainer<NestedKey>.self) { try ValueDecoder(value: $0.value, codingPath: $0.codingPath).container(keyedBy: type) }
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try take((any UnkeyedDecodingContainer).self) { try ValueDecoder(value: $0.value, codingPath: $0.codingPath).unkeyedContainer() }
    }

    mutating func superDecoder() throws -> any Decoder {
        try take((any Decoder).self) { ValueDecoder(value: $0.value, codingPath: $0.codingPath) }
    }
}
