/// The Root System Description Pointer, ACPI 2.0+ form (revision 2, 36 bytes): where the
/// OS starts, pointing at the XSDT. It has no SDT header and two checksums.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | signature `"RSD PTR "` |
/// | 8 | 1 | checksum of bytes 0-19 |
/// | 9 | 6 | OEM ID |
/// | 15 | 1 | revision (2) |
/// | 16 | 4 | RSDT address (0: Cloud Hypervisor has no RSDT) |
/// | 20 | 4 | length (36) |
/// | 24 | 8 | XSDT address |
/// | 32 | 1 | extended checksum of all 36 bytes |
/// | 33 | 3 | reserved |
public struct RSDP: Hashable, Sendable {
    /// The encoded length.
    public static let length = 36
    /// The revision written (ACPI 2.0 and later).
    public static let revision: UInt8 = 2
    /// The offset of the checksum over the first 20 bytes.
    public static let checksumOffset = 8
    /// The offset of the OEM ID.
    public static let oemIDOffset = 9
    /// The offset of the revision.
    public static let revisionOffset = 15
    /// The offset of the 32-bit RSDT address.
    public static let rsdtAddressOffset = 16
    /// The offset of the length.
    public static let lengthOffset = 20
    /// The offset of the 64-bit XSDT address.
    public static let xsdtAddressOffset = 24
    /// The offset of the extended checksum over all 36 bytes.
    public static let extendedChecksumOffset = 32

    /// The guest physical address of the XSDT.
    public var xsdtAddress: UInt64
    /// The OEM ID (from the identity).
    public var identity: ACPIIdentity

    /// A pointer to the XSDT at `xsdtAddress`.
    public init(xsdtAddress: UInt64, identity: ACPIIdentity = .cloudHypervisor) {
        self.xsdtAddress = xsdtAddress
        self.identity = identity
    }

    /// The 36 bytes with both checksums filled in.
    public var bytes: [UInt8] {
        var result = Array("RSD PTR ".utf8)
        result.append(0)  // checksum
        result += identity.oemID
        result.append(Self.revision)
        result.appendLittleEndian(UInt32(0))
        result.appendLittleEndian(UInt32(Self.length))
        result.appendLittleEndian(xsdtAddress)
        result += [0, 0, 0, 0]  // extended checksum, reserved
        result[Self.checksumOffset] = ACPIChecksum.complement(of: result[0..<20])
        result[Self.extendedChecksumOffset] = ACPIChecksum.complement(of: result)
        return result
    }
}

/// The Extended System Description Table: the header followed by the 64-bit addresses of
/// every other table except the DSDT (which the FADT points to). Revision 1.
public struct XSDT: ACPITable, Hashable {
    /// The table addresses, in order.
    public var entries: [UInt64]
    /// The OEM and creator fields.
    public var identity: ACPIIdentity

    /// An XSDT listing `entries`.
    public init(entries: [UInt64], identity: ACPIIdentity = .cloudHypervisor) {
        self.entries = entries
        self.identity = identity
    }

    /// The table: header (`"CHXSDT"`) and one 8-byte address per entry.
    public func makeSDT() -> SDT {
        var table = SDT("XSDT", revision: 1, oemTableID: "CHXSDT", identity: identity)
        for entry in entries { table.append(entry) }
        return table
    }
}
