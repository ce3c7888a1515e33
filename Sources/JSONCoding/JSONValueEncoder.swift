// The Encoder: a Codable value into a JSONValue, through a tree of nodes the containers fill.

/// A coding key for paths and the keys this module makes: array positions ("Index 2") and "super".
struct JSONKey: CodingKey {
    var stringValue: String
    var intValue: Int?

    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) { self.stringValue = "Index \(intValue)"; self.intValue = intValue }
    static let superKey = JSONKey(stringValue: "super")
}

/// One value being encoded. Containers fill it in place (a class, so nested containers and
/// super-encoders handed out earlier still write into the tree).
final class EncoderNode {
    enum Kind { case empty, single, array, object }
    private(set) var kind = Kind.empty
    var single = JSONValue.null
    var items: [EncoderNode] = []
    var keys: [String] = []
    var members: [String: EncoderNode] = [:]

    func becomeArray() {
        precondition(kind == .empty || kind == .array, "JSONCoding: an unkeyed container asked of a value already encoded otherwise")
        kind = .array
    }

    func becomeObject() {
        precondition(kind == .empty || kind == .object, "JSONCoding: a keyed container asked of a value already encoded otherwise")
        kind = .object
    }

    func set(_ value: JSONValue) {
        precondition(kind == .empty || kind == .single, "JSONCoding: a single value encoded into a container")
        kind = .single
        single = value
    }

    /// The member node for `key`, made empty (a key encoded twice keeps its first position, last value).
    func member(_ key: String) -> EncoderNode {
        let node = EncoderNode()
        if members.updateValue(node, forKey: key) == nil { keys.append(key) }
        return node
    }

    func appended() -> EncoderNode {
        let node = EncoderNode()
        items.append(node)
        return node
    }

    /// The finished value; a value that encoded nothing is `{}`, as with Foundation.
    var value: JSONValue {
        switch kind {
        case .empty: .object([])
        case .single: single
        case .array: .array(items.map(\.value))
        case .object: .object(keys.map { ($0, members[$0]!.value) })
        }
    }
}

/// The `Encoder` handed to `encode(to:)`.
struct ValueEncoder: Encoder {
    let node: EncoderNode
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        node.becomeObject()
        return KeyedEncodingContainer(KeyedEncoder<Key>(node: node, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        node.becomeArray()
        return UnkeyedEncoder(node: node, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { SingleEncoder(node: node, codingPath: codingPath) }

    /// Encodes `value` into `node`.
    static func encode<T: Encodable>(_ value: T, into node: EncoderNode, at path: [any CodingKey]) throws {
        try value.encode(to: ValueEncoder(node: node, codingPath: path))
    }
}

/// Numbers and the other scalars as JSON values.
enum Scalar {
    static func integer<I: BinaryInteger>(_ value: I) -> JSONValue {
        if let signed = Int64(exactly: value) { return .integer(signed) }
        return .unsigned(UInt64(value))
    }

    static func double(_ value: Double, at path: [any CodingKey]) throws -> JSONValue {
        guard value.isFinite else {
            throw EncodingError.invalidValue(value, EncodingError.Context(
                codingPath: path, debugDescription: "\(value) cannot be encoded: JSON numbers are finite"))
        }
        return .double(value)
    }

    /// A Float as the double its shortest text names (0.1 stays 0.1, not 0.10000000149011612);
    /// that double converts back to the same Float.
    static func float(_ value: Float, at path: [any CodingKey]) throws -> JSONValue {
        guard value.isFinite else {
            throw EncodingError.invalidValue(value, EncodingError.Context(
                codingPath: path, debugDescription: "\(value) cannot be encoded: JSON numbers are finite"))
        }
        return .double(Double(value.description) ?? Double(value))
    }
}

struct SingleEncoder: SingleValueEncodingContainer {
    let node: EncoderNode
    let codingPath: [any CodingKey]

    func encodeNil() throws { node.set(.null) }
    func encode(_ value: Bool) throws { node.set(.bool(value)) }
    func encode(_ value: String) throws { node.set(.string(value)) }
    func encode(_ value: Double) throws { node.set(try Scalar.double(value, at: codingPath)) }
    func encode(_ value: Float) throws { node.set(try Scalar.float(value, at: codingPath)) }
    func encode(_ value: Int) throws { node.set(Scalar.integer(value)) }
    func encode(_ value: Int8) throws { node.set(Scalar.integer(value)) }
    func encode(_ value: Int16) throws { node.set(Scalar.integer(value)) }
    func encode(_ value: Int32) throws { node.set(Scalar.integer(value)) }
    func encode(_ value: Int64) throws { node.set(Scalar.integer(value)) }
    func encode(_ value: UInt) throws { node.set(Scalar.integer(value)) }
    func encode(_ value: UInt8) throws { node.set(Scalar.integer(value)) }
    func encode(_ value: UInt16) throws { node.set(Scalar.integer(value)) }
    func encode(_ value: UInt32) throws { node.set(Scalar.integer(value)) }
    func encode(_ value: UInt64) throws { node.set(Scalar.integer(value)) }
    func encode<T: Encodable>(_ value: T) throws { try ValueEncoder.encode(value, into: node, at: codingPath) }
}

struct KeyedEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let node: EncoderNode
    let codingPath: [any CodingKey]

    private func set(_ value: JSONValue, _ key: Key) { node.member(key.stringValue).set(value) }

    func encodeNil(forKey key: Key) throws { set(.null, key) }
    func encode(_ value: Bool, forKey key: Key) throws { set(.bool(value), key) }
    func encode(_ value: String, forKey key: Key) throws { set(.string(value), key) }
    func encode(_ value: Double, forKey key: Key) throws { set(try Scalar.double(value, at: codingPath + [key]), key) }
    func encode(_ value: Float, forKey key: Key) throws { set(try Scalar.float(value, at: codingPath + [key]), key) }
    func encode(_ value: Int, forKey key: Key) throws { set(Scalar.integer(value), key) }
    func encode(_ value: Int8, forKey key: Key) throws { set(Scalar.integer(value), key) }
    func encode(_ value: Int16, forKey key: Key) throws { set(Scalar.integer(value), key) }
    func encode(_ value: Int32, forKey key: Key) throws { set(Scalar.integer(value), key) }
    func encode(_ value: Int64, forKey key: Key) throws { set(Scalar.integer(value), key) }
    func encode(_ value: UInt, forKey key: Key) throws { set(Scalar.integer(value), key) }
    func encode(_ value: UInt8, forKey key: Key) throws { set(Scalar.integer(value), key) }
    func encode(_ value: UInt16, forKey key: Key) throws { set(Scalar.integer(value), key) }
    func encode(_ value: UInt32, forKey key: Key) throws { set(Scalar.integer(value), key) }
    func encode(_ value: UInt64, forKey key: Key) throws { set(Scalar.integer(value), key) }

    func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try ValueEncoder.encode(value, into: node.member(key.stringValue), at: codingPath + [key])
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        let child = node.member(key.stringValue)
        child.becomeObject()
        return KeyedEncodingContainer(KeyedEncoder<NestedKey>(node: child, codingPath: codingPath + [key]))
    }

    func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = node.member(key.stringValue)
        child.becomeArray()
        return UnkeyedEncoder(node: child, codingPath: codingPath + [key])
    }

    func superEncoder() -> any Encoder {
        ValueEncoder(node: node.member(JSONKey.superKey.stringValue), codingPath: codingPath + [JSONKey.superKey])
    }

    func superEncoder(forKey key: Key) -> any Encoder {
        ValueEncoder(node: node.member(key.stringValue), codingPath: codingPath + [key])
    }
}

struct UnkeyedEncoder: UnkeyedEncodingContainer {
    let node: EncoderNode
    let codingPath: [any CodingKey]
    var count: Int { node.items.count }

    private var nextPath: [any CodingKey] { codingPath + [JSONKey(intValue: count)] }
    private func append(_ value: JSONValue) { node.appended().set(value) }

    func encodeNil() throws { append(.null) }
    func encode(_ value: Bool) throws { append(.bool(value)) }
    func encode(_ value: String) throws { append(.string(value)) }
    func encode(_ value: Double) throws { append(try Scalar.double(value, at: nextPath)) }
    func encode(_ value: Float) throws { append(try Scalar.float(value, at: nextPath)) }
    func encode(_ value: Int) throws { append(Scalar.integer(value)) }
    func encode(_ value: Int8) throws { append(Scalar.integer(value)) }
    func encode(_ value: Int16) throws { append(Scalar.integer(value)) }
    func encode(_ value: Int32) throws { append(Scalar.integer(value)) }
    func encode(_ value: Int64) throws { append(Scalar.integer(value)) }
    func encode(_ value: UInt) throws { append(Scalar.integer(value)) }
    func encode(_ value: UInt8) throws { append(Scalar.integer(value)) }
    func encode(_ value: UInt16) throws { append(Scalar.integer(value)) }
    func encode(_ value: UInt32) throws { append(Scalar.integer(value)) }
    func encode(_ value: UInt64) throws { append(Scalar.integer(value)) }

    func encode<T: Encodable>(_ value: T) throws {
        let path = nextPath
        try ValueEncoder.encode(value, into: node.appended(), at: path)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let path = nextPath
        let child = node.appended()
        child.becomeObject()
        return KeyedEncodingContainer(KeyedEncoder<NestedKey>(node: child, codingPath: path))
    }

    func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let path = nextPath
        let child = node.appended()
        child.becomeArray()
        return UnkeyedEncoder(node: child, codingPath: path)
    }

    func superEncoder() -> any Encoder {
        let path = nextPath
        return ValueEncoder(node: node.appended(), codingPath: path)
    }
}
