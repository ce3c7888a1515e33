// Byte arrays of saved machine state (the XSAVE area, the LAPIC page, the irqchip) as base64
// text in JSON: a 4 KiB XSAVE area as 4096 JSON numbers cost about 5 ms to encode and 4 ms
// to decode (measured natively; many times that under emulation), which a live migration pays
// while the guest is stopped. As text it takes a few hundredths of that. Decoding also takes
// the arrays of numbers earlier versions wrote, so their snapshots still restore.

/// Base64 (RFC 4648, with padding) for state bytes.
enum StateBase64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, character) in alphabet.enumerated() { table[Int(character)] = UInt8(index) }
        return table
    }()

    /// `bytes` as base64 text.
    static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index + 3 <= bytes.count {
            let word = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
            out.append(alphabet[Int(word >> 18 & 63)])
            out.append(alphabet[Int(word >> 12 & 63)])
            out.append(alphabet[Int(word >> 6 & 63)])
            out.append(alphabet[Int(word & 63)])
            index += 3
        }
        let rest = bytes.count - index
        if rest > 0 {
            let word = UInt32(bytes[index]) << 16 | (rest == 2 ? UInt32(bytes[index + 1]) << 8 : 0)
            out.append(alphabet[Int(word >> 18 & 63)])
            out.append(alphabet[Int(word >> 12 & 63)])
            out.append(rest == 2 ? alphabet[Int(word >> 6 & 63)] : UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of base64 `text`; `nil` when it is not canonical base64 with padding.
    static func decode(_ text: String) -> [UInt8]? {
        let input = Array(text.utf8)
        guard input.count % 4 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(input.count / 4 * 3)
        var index = 0
        while index < input.count {
            let last = index + 4 == input.count
            let padding = last ? (input[index + 3] == UInt8(ascii: "=") ? (input[index + 2] == UInt8(ascii: "=") ? 2 : 1) : 0) : 0
            var word: UInt32 = 0
            for offset in 0..<(4 - padding) {
                let value = values[Int(input[index + offset])]
                guard value != 0xFF else { return nil }
                word |= UInt32(value) << (18 - 6 * UInt32(offset))
            }
            // Canonical: the bits a padded group leaves over are zero.
            if padding == 1, word & 0xFF != 0 { return nil }
            if padding == 2, word & 0xFFFF != 0 { return nil }
            out.append(UInt8(word >> 16 & 0xFF))
            if padding < 2 { out.append(UInt8(word >> 8 & 0xFF)) }
            if padding < 1 { out.append(UInt8(word & 0xFF)) }
            index += 4
        }
        return out
    }
}

extension KeyedEncodingContainer {
    /// Encodes `bytes` as base64 text (`null` when `nil`).
    mutating func encodeStateBytes(_ bytes: [UInt8]?, forKey key: Key) throws {
        if let bytes { try encode(StateBase64.encode(bytes), forKey: key) } else { try encodeNil(forKey: key) }
    }

    /// Encodes each array of `rows` as base64 text.
    mutating func encodeStateRows(_ rows: [[UInt8]], forKey key: Key) throws {
        try encode(rows.map(StateBase64.encode), forKey: key)
    }
}

extension KeyedDecodingContainer {
    /// Decodes bytes written as base64 text or, by earlier versions, as an array of numbers.
    func decodeStateBytes(forKey key: Key) throws -> [UInt8] {
        if let text = try? decode(String.self, forKey: key) {
            guard let bytes = StateBase64.decode(text) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "'\(key.stringValue)' is not base64 text")
            }
            return bytes
        }
        return try decode([UInt8].self, forKey: key)
    }

    /// As ``decodeStateBytes(forKey:)``, `nil` for `null` (the key must be present).
    func decodeStateBytesIfNotNull(forKey key: Key) throws -> [UInt8]? {
        if try decodeNil(forKey: key) { return nil }
        return try decodeStateBytes(forKey: key)
    }

    /// Decodes arrays of bytes written as base64 texts or as arrays of numbers.
    func decodeStateRows(forKey key: Key) throws -> [[UInt8]] {
        if let texts = try? decode([String].self, forKey: key) {
            return try texts.map { text in
                guard let bytes = StateBase64.decode(text) else {
                    throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "'\(key.stringValue)' holds text that is not base64")
                }
                return bytes
            }
        }
        return try decode([[UInt8]].self, forKey: key)
    }
}
