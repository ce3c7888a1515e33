/// Overflow-safe alignment arithmetic for ``AddressAllocator``; overflow means "does not fit".
enum Alignment {
    /// Checks that `alignment` is a non-zero power of two.
    static func validate(_ alignment: UInt64) throws(AllocatorError) {
        guard alignment != 0, alignment & (alignment - 1) == 0 else {
            throw .invalidAlignment(alignment)
        }
    }

    /// `value` rounded up to a multiple of `alignment`, or `nil` if that passes `UInt64.max`.
    static func up(_ value: UInt64, to alignment: UInt64) -> UInt64? {
        let mask = alignment - 1
        let (sum, overflow) = value.addingReportingOverflow(mask)
        return overflow ? nil : sum & ~mask
    }

    /// `value` rounded down to a multiple of `alignment`.
    static func down(_ value: UInt64, to alignment: UInt64) -> UInt64 {
        value & ~(alignment - 1)
    }

    /// The lowest aligned start in the inclusive gap `first...last` that leaves room for
    /// `size` bytes, or `nil`.
    static func lowestFit(first: UInt64, last: UInt64, size: UInt64, alignment: UInt64) -> UInt64? {
        guard let start = up(first, to: alignment), start <= last, last - start >= size - 1 else {
            return nil
        }
        return start
    }

    /// The highest aligned start in the inclusive gap `first...last` that leaves room for
    /// `size` bytes, or `nil`.
    static func highestFit(first: UInt64, last: UInt64, size: UInt64, alignment: UInt64) -> UInt64? {
        guard last - first >= size - 1 else { return nil }
        let start = down(last - (size - 1), to: alignment)
        return start >= first ? start : nil
    }
}
