/// Why a ``Bus`` refused to map or unmap a device.
///
/// ``description`` is one English sentence naming the bus, the address ranges in hex and
/// the devices involved.
public enum BusError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A device named `device` was inserted with a length of zero at `base` on the bus named `bus`.
    case zeroLength(bus: String, base: UInt64, device: String)
    /// The range `base ..< base + length` for `device` would run past `UInt64.max`.
    case rangeOverflow(bus: String, base: UInt64, length: UInt64, device: String)
    /// The new range `[newFirst-newLast]` for `newDevice` overlaps the range
    /// `[existingFirst-existingLast]` already held by `existingDevice` (both inclusive).
    case overlap(
        bus: String, newFirst: UInt64, newLast: UInt64, newDevice: String,
        existingFirst: UInt64, existingLast: UInt64, existingDevice: String)
    /// No device is mapped with exactly `base` as its first address on the bus named `bus`.
    case notMapped(bus: String, base: UInt64)

    /// One English sentence naming the bus, the ranges and the devices involved.
    public var description: String {
        switch self {
        case let .zeroLength(bus, base, device):
            return "\(bus): cannot map \(device) at \(hex(base)): its length is 0, "
                + "a device must cover at least 1 address"
        case let .rangeOverflow(bus, base, length, device):
            return "\(bus): cannot map \(device) at \(hex(base)) with length \(hex(length)): "
                + "the range would run past the top of the 64-bit address space"
        case let .overlap(bus, newFirst, newLast, newDevice, existingFirst, existingLast, existingDevice):
            return "\(bus): cannot map \(newDevice) at [\(hex(newFirst))-\(hex(newLast))]: "
                + "it overlaps \(existingDevice) at [\(hex(existingFirst))-\(hex(existingLast))]"
        case let .notMapped(bus, base):
            return "\(bus): cannot unmap the device at \(hex(base)): no device range starts there"
        }
    }
}

/// Formats `value` as lowercase hexadecimal with a `0x` prefix.
func hex(_ value: UInt64) -> String {
    "0x" + String(value, radix: 16)
}
