/// A non-empty range of guest addresses (bytes), described by its first byte and its size.
///
/// The last byte is exposed as ``end`` (inclusive) rather than as an exclusive upper
/// bound, so a range may finish exactly at `UInt64.max` without overflowing.
public struct AddressRange: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The first byte of the range.
    public let start: UInt64
    /// The number of bytes in the range; never zero.
    public let size: UInt64

    /// Creates the range of `size` bytes that begins at `start`.
    ///
    /// - Throws: ``AllocatorError/zeroSize`` when `size` is zero, and
    ///   ``AllocatorError/rangeOverflow(start:size:)`` when the range would run past
    ///   `UInt64.max`.
    public init(start: UInt64, size: UInt64) throws(AllocatorError) {
        guard size > 0 else { throw .zeroSize }
        guard start.addingReportingOverflow(size - 1).overflow == false else {
            throw .rangeOverflow(start: start, size: size)
        }
        self.start = start
        self.size = size
    }

    /// Creates a range whose bounds the caller has already checked (`size > 0`, no overflow).
    init(unchecked start: UInt64, size: UInt64) {
        self.start = start
        self.size = size
    }

    /// The last byte of the range (inclusive).
    public var end: UInt64 { start &+ (size &- 1) }

    /// Whether `address` lies inside the range.
    public func contains(_ address: UInt64) -> Bool {
        address >= start && address <= end
    }

    /// Whether every byte of `other` lies inside this range.
    public func contains(_ other: AddressRange) -> Bool {
        other.start >= start && other.end <= end
    }

    /// Whether this range and `other` share at least one byte.
    public func overlaps(_ other: AddressRange) -> Bool {
        start <= other.end && other.start <= end
    }

    /// Orders ranges by start address, then by size.
    public static func < (lhs: AddressRange, rhs: AddressRange) -> Bool {
        (lhs.start, lhs.size) < (rhs.start, rhs.size)
    }

    /// The inclusive bounds in hexadecimal, for example `"[0xd0000000-0xfebfffff]"`.
    public var description: String { "[\(hex(start))-\(hex(end))]" }
}

/// Formats `value` as lowercase hexadecimal with a `0x` prefix.
func hex(_ value: UInt64) -> String {
    "0x" + String(value, radix: 16)
}
