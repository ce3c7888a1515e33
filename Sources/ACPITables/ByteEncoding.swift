// Little-endian byte encoding for ACPI structures.
//
// Every table and AML object is built byte by byte at explicit offsets here, never from
// Swift struct layout: ACPI structures are packed and little-endian whatever the host.

extension Array where Element == UInt8 {
    /// Appends `value` little-endian (its full width).
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<(T.bitWidth / 8) {
            append(UInt8(truncatingIfNeeded: value >> (8 * index)))
        }
    }

    /// Stores `value` little-endian at `offset`. Offsets are programming constants, so a
    /// field that does not fit is a bug and traps with the offset in the message.
    mutating func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let width = T.bitWidth / 8
        precondition(offset >= 0 && offset + width <= count,
                     "a \(width)-byte field at offset \(offset) does not fit in \(count) bytes")
        for index in 0..<width {
            self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    /// Copies `source` into the array at `offset` (it must fit).
    mutating func store(bytes source: [UInt8], at offset: Int) {
        precondition(offset >= 0 && offset + source.count <= count,
                     "\(source.count) bytes at offset \(offset) do not fit in \(count) bytes")
        replaceSubrange(offset..<(offset + source.count), with: source)
    }
}

/// The 8-bit sums ACPI uses to protect its tables.
public enum ACPIChecksum {
    /// The sum of `bytes` modulo 256. A valid table (or RSDP range) sums to 0.
    public static func sum(_ bytes: some Sequence<UInt8>) -> UInt8 {
        bytes.reduce(UInt8(0)) { $0 &+ $1 }
    }

    /// The byte that, added to `bytes`, makes the total 0 modulo 256 (the checksum field
    /// itself must be counted as 0 in `bytes`).
    public static func complement(of bytes: some Sequence<UInt8>) -> UInt8 {
        0 &- sum(bytes)
    }
}

/// `value` in hexadecimal with a `0x` prefix, for error messages and descriptions.
func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16, uppercase: true) }
