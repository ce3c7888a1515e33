/// A guest physical address: a byte position in the address space the guest sees.
///
/// A distinct type (rather than a bare `UInt64`) keeps guest addresses from being mixed up
/// with host pointers, offsets and sizes. Arithmetic that could overflow is offered only in
/// checked forms (`checkedAdd`, `adding`), because an address near `UInt64.max` plus a
/// length read from guest memory must become an error, never a trap.
public struct GuestAddress: RawRepresentable, Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    /// The address as a 64-bit number.
    public let rawValue: UInt64

    /// Creates an address from its numeric value.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Creates an address from its numeric value.
    public init(_ value: UInt64) { self.rawValue = value }

    /// Guest physical address 0.
    public static let zero = GuestAddress(0)

    /// Orders addresses by their numeric value.
    public static func < (lhs: GuestAddress, rhs: GuestAddress) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The address in hexadecimal, for example `0x100000`.
    public var description: String { "0x" + String(rawValue, radix: 16) }

    /// The address `offset` bytes above this one, or `nil` when that passes `UInt64.max`.
    public func checkedAdd(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = rawValue.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    /// The address `offset` bytes above this one.
    ///
    /// - Throws: `GuestMemoryError.addressOverflow` when the sum passes `UInt64.max`
    ///   (the error's length is `offset`, clamped to `Int.max`).
    public func adding(_ offset: UInt64) throws(GuestMemoryError) -> GuestAddress {
        guard let sum = checkedAdd(offset) else {
            throw .addressOverflow(address: self, length: Int(clamping: offset))
        }
        return sum
    }

    /// The address `offset` bytes below this one, or `nil` when that would go below 0.
    public func checkedSubtract(_ offset: UInt64) -> GuestAddress? {
        let (difference, overflow) = rawValue.subtractingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(difference)
    }

    /// The distance in bytes from `base` up to this address.
    ///
    /// `base` must not be above this address (a programming error that traps);
    /// use `checkedOffset(from:)` when that is not known.
    public func offset(from base: GuestAddress) -> UInt64 {
        precondition(base <= self, "GuestAddress.offset(from:): base \(base) is above \(self)")
        return rawValue - base.rawValue
    }

    /// The distance in bytes from `base` up to this address, or `nil` when `base` is above it.
    public func checkedOffset(from base: GuestAddress) -> UInt64? {
        base <= self ? rawValue - base.rawValue : nil
    }

    /// Whether the address is a multiple of `alignment` (which must be positive; it is
    /// usually a power of two such as a page size).
    public func isAligned(to alignment: UInt64) -> Bool {
        precondition(alignment > 0, "GuestAddress.isAligned(to:) needs a positive alignment")
        return rawValue % alignment == 0
    }

    /// The lowest multiple of `alignment` at or above this address, or `nil` when that
    /// passes `UInt64.max`. `alignment` must be positive.
    public func alignedUp(to alignment: UInt64) -> GuestAddress? {
        precondition(alignment > 0, "GuestAddress.alignedUp(to:) needs a positive alignment")
        let remainder = rawValue % alignment
        return remainder == 0 ? self : checkedAdd(alignment - remainder)
    }

    /// The highest multiple of `alignment` at or below this address. `alignment` must be positive.
    public func alignedDown(to alignment: UInt64) -> GuestAddress {
        precondition(alignment > 0, "GuestAddress.alignedDown(to:) needs a positive alignment")
        return GuestAddress(rawValue - rawValue % alignment)
    }
}
