/// Big-endian field access on byte arrays: every number in a qcow2 file is big-endian.
///
/// Callers check that `offset + width <= count` first (the header parser and the table
/// loaders validate lengths before decoding), so a damaged image never reaches a trap here.
extension Array where Element == UInt8 {
    /// The big-endian 64-bit number at `offset`.
    func bigEndian64(at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in offset..<(offset + 8) { value = value << 8 | UInt64(self[index]) }
        return value
    }

    /// The big-endian 32-bit number at `offset`.
    func bigEndian32(at offset: Int) -> UInt32 {
        var value: UInt32 = 0
        for index in offset..<(offset + 4) { value = value << 8 | UInt32(self[index]) }
        return value
    }

    /// The big-endian 16-bit number at `offset`.
    func bigEndian16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) << 8 | UInt16(self[offset + 1])
    }

    /// Stores `value` big-endian at `offset`.
    mutating func setBigEndian64(_ value: UInt64, at offset: Int) {
        for index in 0..<8 { self[offset + index] = UInt8(truncatingIfNeeded: value >> (56 - 8 * index)) }
    }

    /// Stores `value` big-endian at `offset`.
    mutating func setBigEndian32(_ value: UInt32, at offset: Int) {
        for index in 0..<4 { self[offset + index] = UInt8(truncatingIfNeeded: value >> (24 - 8 * index)) }
    }

    /// Stores `value` big-endian at `offset`.
    mutating func setBigEndian16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value >> 8)
        self[offset + 1] = UInt8(truncatingIfNeeded: value)
    }
}

/// Decodes a table of big-endian 64-bit entries (an L1 or L2 table, the refcount table).
func decodeTable(_ bytes: [UInt8], count: Int) -> [UInt64] {
    var entries = [UInt64](repeating: 0, count: count)
    bytes.withUnsafeBytes { raw in
        for index in 0..<count {
            entries[index] = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))
        }
    }
    return entries
}

/// Encodes 64-bit entries as a big-endian table of `byteCount` bytes (zero-padded).
func encodeTable(_ entries: ArraySlice<UInt64>, byteCount: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: byteCount)
    bytes.withUnsafeMutableBytes { raw in
        for (position, entry) in entries.enumerated() where position * 8 + 8 <= byteCount {
            raw.storeBytes(of: entry.bigEndian, toByteOffset: position * 8, as: UInt64.self)
        }
    }
    return bytes
}

/// Rounds `value` up to a multiple of `alignment` (a power of two).
@inline(__always)
func alignUp(_ value: UInt64, _ alignment: UInt64) -> UInt64 { (value + alignment - 1) & ~(alignment - 1) }

/// `ceil(value / divisor)` without overflow for the sizes the format allows.
@inline(__always)
func divideRoundingUp(_ value: UInt64, _ divisor: UInt64) -> UInt64 { value / divisor + (value % divisor == 0 ? 0 : 1) }
