/// The kind of an E820 memory-map range (the BIOS `INT 15h, AX=E820h` types, also used by
/// the PVH memory map).
public struct E820Type: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The numeric type as the guest reads it.
    public var rawValue: UInt32
    /// Creates a type from its number.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Usable RAM (1).
    public static let ram = E820Type(rawValue: 1)
    /// Reserved, not to be used by the OS (2).
    public static let reserved = E820Type(rawValue: 2)
    /// ACPI tables, reclaimable once read (3).
    public static let acpi = E820Type(rawValue: 3)
    /// ACPI non-volatile storage, to be preserved (4).
    public static let nvs = E820Type(rawValue: 4)

    /// The type's name, for example `RAM`.
    public var description: String {
        switch rawValue {
        case 1: return "RAM"
        case 2: return "reserved"
        case 3: return "ACPI"
        case 4: return "NVS"
        default: return "type \(rawValue)"
        }
    }
}

/// One range of the guest's physical memory map.
///
/// In `boot_params` an entry is 20 bytes (`addr` u64, `size` u64, `type` u32, packed); in
/// the PVH memory map it is 24 bytes (the same three fields and a reserved u32).
public struct E820Entry: Hashable, Sendable, CustomStringConvertible {
    /// The first guest physical address of the range.
    public var address: UInt64
    /// The length of the range in bytes.
    public var size: UInt64
    /// What the range holds.
    public var type: E820Type

    /// Creates an entry.
    public init(address: UInt64, size: UInt64, type: E820Type) {
        self.address = address
        self.size = size
        self.type = type
    }

    /// The size of an entry in the `boot_params` E820 table.
    public static let bootParamsEncodedSize = 20

    /// The entry as `boot_params` stores it: `addr` u64, `size` u64, `type` u32, little-endian.
    public var bootParamsBytes: [UInt8] {
        var buffer = LittleEndianBuffer(size: Self.bootParamsEncodedSize)
        buffer.put(address, at: 0)
        buffer.put(size, at: 8)
        buffer.put(type.rawValue, at: 16)
        return buffer.bytes
    }

    /// `[start, end) type`, in hexadecimal.
    public var description: String {
        let end = UInt128(address) + UInt128(size)
        return "[\(hex(address)), 0x\(String(end, radix: 16))) \(type)"
    }
}
