// Little-endian byte encoding and decoding for guest ABI structures.
//
// Every structure the guest reads (boot_params, hvm_start_info, the MP table, page-table
// entries) is built byte by byte here at explicit offsets, never from Swift struct layout,
// and every image the VMM is handed (ELF, bzImage) is decoded the same way with bounds
// checks that report failure instead of trapping.

/// A fixed-size little-endian byte buffer that fields are stored into at explicit offsets.
struct LittleEndianBuffer: Sendable {
    /// The encoded bytes.
    private(set) var bytes: [UInt8]

    /// A buffer of `size` zero bytes.
    init(size: Int) { bytes = Array(repeating: 0, count: size) }

    /// Stores `value` little-endian at `offset`. The offset is a programming constant, so a
    /// field that does not fit is a bug and traps.
    mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let width = T.bitWidth / 8
        precondition(offset >= 0 && offset + width <= bytes.count, "field at \(offset) does not fit in \(bytes.count) bytes")
        for index in 0..<width {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    /// Copies `source` into the buffer at `offset` (it must fit).
    mutating func put(bytes source: some Collection<UInt8>, at offset: Int) {
        precondition(offset >= 0 && offset + source.count <= bytes.count, "\(source.count) bytes at \(offset) do not fit")
        var position = offset
        for byte in source {
            bytes[position] = byte
            position += 1
        }
    }
}

extension Array where Element == UInt8 {
    /// The little-endian integer of `type` at `offset`, or `nil` when any of its bytes lies
    /// outside the array (a negative offset included).
    func loadLittleEndian<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T? {
        let width = T.bitWidth / 8
        guard offset >= 0, offset <= count - width else { return nil }
        var value: T = 0
        for index in 0..<width {
            value |= T(truncatingIfNeeded: self[offset + index]) << (8 * index)
        }
        return value
    }
}

/// The 8-bit two's-complement checksum byte that makes `bytes` (with the checksum byte
/// itself counted as zero) sum to zero modulo 256.
func zeroSumChecksum(_ bytes: some Sequence<UInt8>) -> UInt8 {
    let sum = bytes.reduce(UInt8(0)) { $0 &+ $1 }
    return 0 &- sum
}

/// `value` in hexadecimal with a `0x` prefix, for error messages.
func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

/// The bytes of `text` (ASCII), padded with `pad` or cut to exactly `length` bytes.
func paddedASCII(_ text: String, length: Int, pad: UInt8 = 0x20) -> [UInt8] {
    var bytes = Array(text.utf8.prefix(length))
    bytes.append(contentsOf: Array(repeating: pad, count: length - bytes.count))
    return bytes
}
