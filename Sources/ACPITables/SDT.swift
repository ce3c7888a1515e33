/// Who made a table: the OEM and creator fields shared by every table header (and the
/// RSDP's OEM ID).
///
/// Cloud Hypervisor's values are the default (``cloudHypervisor``): OEM ID `"CLOUDH"`,
/// OEM revision 1. The creator names this Swift implementation (`"CHSW"`, revision 1).
public struct ACPIIdentity: Hashable, Sendable {
    /// The OEM ID, exactly 6 bytes (space padded).
    public let oemID: [UInt8]
    /// The OEM revision written in every table header.
    public let oemRevision: UInt32
    /// The creator ID (the tool that built the table), exactly 4 bytes (space padded).
    public let creatorID: [UInt8]
    /// The creator revision.
    public let creatorRevision: UInt32

    /// Cloud Hypervisor's OEM identity, with this implementation as the creator.
    public static let cloudHypervisor = ACPIIdentity(
        validOEMID: Array("CLOUDH".utf8), oemRevision: 1, creatorID: Array("CHSW".utf8), creatorRevision: 1)

    /// Creates an identity from strings, padding them with spaces.
    ///
    /// - Throws: ``ACPIError/invalidIdentifier(field:value:maximumLength:)`` for an OEM ID
    ///   longer than 6 or a creator ID longer than 4 characters, or non-printable ASCII.
    public init(oemID: String, oemRevision: UInt32 = 1, creatorID: String, creatorRevision: UInt32) throws(ACPIError) {
        self.oemID = try fixedWidthIdentifier(oemID, field: "OEM ID", width: 6)
        self.oemRevision = oemRevision
        self.creatorID = try fixedWidthIdentifier(creatorID, field: "creator ID", width: 4)
        self.creatorRevision = creatorRevision
    }

    /// An identity from already validated fields.
    private init(validOEMID: [UInt8], oemRevision: UInt32, creatorID: [UInt8], creatorRevision: UInt32) {
        oemID = validOEMID
        self.oemRevision = oemRevision
        self.creatorID = creatorID
        self.creatorRevision = creatorRevision
    }
}

/// `value` as exactly `width` printable ASCII bytes, padded with spaces.
func fixedWidthIdentifier(_ value: String, field: String, width: Int) throws(ACPIError) -> [UInt8] {
    let bytes = Array(value.utf8)
    guard bytes.count <= width, bytes.allSatisfy({ (0x20...0x7e).contains($0) }) else {
        throw .invalidIdentifier(field: field, value: value, maximumLength: width)
    }
    return bytes + Array(repeating: 0x20, count: width - bytes.count)
}

/// A System Description Table: the 36-byte standard header followed by a body that
/// fields and bytes are appended to or written into at explicit offsets.
///
/// The header's length and checksum are kept up to date by ``bytes``, which always
/// returns a table whose bytes sum to 0 modulo 256.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | signature |
/// | 4 | 4 | length of the whole table |
/// | 8 | 1 | revision |
/// | 9 | 1 | checksum |
/// | 10 | 6 | OEM ID |
/// | 16 | 8 | OEM table ID |
/// | 24 | 4 | OEM revision |
/// | 28 | 4 | creator ID |
/// | 32 | 4 | creator revision |
public struct SDT: Hashable, Sendable {
    /// The length of the standard header.
    public static let headerLength = 36
    /// The offset of the length field.
    public static let lengthOffset = 4
    /// The offset of the revision field.
    public static let revisionOffset = 8
    /// The offset of the checksum field.
    public static let checksumOffset = 9
    /// The offset of the OEM ID.
    public static let oemIDOffset = 10
    /// The offset of the OEM table ID.
    public static let oemTableIDOffset = 16
    /// The offset of the OEM revision.
    public static let oemRevisionOffset = 24
    /// The offset of the creator ID.
    public static let creatorIDOffset = 28
    /// The offset of the creator revision.
    public static let creatorRevisionOffset = 32

    /// The header and body; length and checksum are filled in by ``bytes``.
    private var storage: [UInt8]

    /// Creates a table with a zeroed body of `length - 36` bytes.
    ///
    /// - Parameters:
    ///   - signature: the 4-character signature, for example `"FACP"`.
    ///   - revision: the table revision.
    ///   - oemTableID: up to 8 characters, padded with spaces (Cloud Hypervisor uses
    ///     `"CH"` plus the signature, for example `"CHFACP"`).
    ///   - identity: the OEM and creator fields.
    ///   - length: the initial total length (at least the 36-byte header).
    /// - Throws: ``ACPIError/invalidSignature(_:)`` or
    ///   ``ACPIError/invalidIdentifier(field:value:maximumLength:)``.
    public init(signature: String, revision: UInt8, oemTableID: String,
                identity: ACPIIdentity = .cloudHypervisor, length: Int = SDT.headerLength) throws(ACPIError) {
        let signatureBytes = Array(signature.utf8)
        guard signatureBytes.count == 4, signatureBytes.allSatisfy({ (0x20...0x7e).contains($0) }) else {
            throw .invalidSignature(signature)
        }
        let tableID = try fixedWidthIdentifier(oemTableID, field: "OEM table ID", width: 8)
        self.init(validSignature: signatureBytes, revision: revision, oemTableID: tableID,
                  identity: identity, length: length)
    }

    /// Creates a table from already validated header fields.
    init(validSignature: [UInt8], revision: UInt8, oemTableID: [UInt8], identity: ACPIIdentity, length: Int) {
        storage = validSignature
        storage.appendLittleEndian(UInt32(0))  // length, filled in by `bytes`
        storage.append(revision)
        storage.append(0)  // checksum, filled in by `bytes`
        storage += identity.oemID
        storage += oemTableID
        storage.appendLittleEndian(identity.oemRevision)
        storage += identity.creatorID
        storage.appendLittleEndian(identity.creatorRevision)
        if length > storage.count { storage += Array(repeating: 0, count: length - storage.count) }
    }

    /// Creates a table from the header of an internal table type (constants known valid).
    init(_ signature: StaticString, revision: UInt8, oemTableID: StaticString, identity: ACPIIdentity, length: Int = SDT.headerLength) {
        let tableID = Array(String(describing: oemTableID).utf8)
        self.init(validSignature: Array(String(describing: signature).utf8), revision: revision,
                  oemTableID: tableID + Array(repeating: 0x20, count: 8 - tableID.count),
                  identity: identity, length: length)
    }

    /// The signature, for example `"DSDT"`.
    public var signature: String { String(decoding: storage[0..<4], as: UTF8.self) }

    /// The revision byte.
    public var revision: UInt8 { storage[Self.revisionOffset] }

    /// The total length: header plus body.
    public var length: Int { storage.count }

    /// The finished table: the length field set to ``length`` and the checksum chosen so
    /// that all bytes sum to 0.
    public var bytes: [UInt8] {
        var result = storage
        result.storeLittleEndian(UInt32(truncatingIfNeeded: result.count), at: Self.lengthOffset)
        result[Self.checksumOffset] = ACPIChecksum.complement(of: result)
        return result
    }

    /// Appends `value` little-endian at the end of the body.
    public mutating func append<T: FixedWidthInteger>(_ value: T) { storage.appendLittleEndian(value) }

    /// Appends raw bytes at the end of the body.
    public mutating func append(bytes: some Sequence<UInt8>) { storage.append(contentsOf: bytes) }

    /// Appends a 12-byte Generic Address Structure at the end of the body.
    public mutating func append(_ address: GenericAddress) { storage += address.bytes }

    /// Appends the AML encoding of `object` (for definition blocks: DSDT, SSDT).
    public mutating func append(aml object: any AMLConvertible) { object.appendAML(to: &storage) }

    /// Writes `value` little-endian at `offset` from the start of the table.
    ///
    /// The offset is a programming constant: one inside the header's length, revision or
    /// checksum fields (set at creation or maintained by ``bytes``), or past the end of the
    /// table, is a bug and traps.
    public mutating func write<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        checkWritable(offset: offset, width: T.bitWidth / 8)
        storage.storeLittleEndian(value, at: offset)
    }

    /// Writes a Generic Address Structure at `offset` from the start of the table.
    public mutating func write(_ address: GenericAddress, at offset: Int) {
        write(bytes: address.bytes, at: offset)
    }

    /// Writes raw bytes at `offset` from the start of the table.
    public mutating func write(bytes: [UInt8], at offset: Int) {
        checkWritable(offset: offset, width: bytes.count)
        storage.store(bytes: bytes, at: offset)
    }

    /// Traps when a write would touch the length, revision or checksum fields or run past the end.
    private func checkWritable(offset: Int, width: Int) {
        precondition(offset >= Self.oemIDOffset || offset + width <= Self.lengthOffset,
                     "offset \(offset) overlaps the SDT length, revision or checksum fields, which are not written directly")
        precondition(offset >= 0 && offset + width <= storage.count,
                     "a \(width)-byte field at offset \(offset) does not fit in the \(storage.count)-byte \(signature)")
    }
}

/// A finished ACPI table that can produce its SDT.
public protocol ACPITable: Sendable {
    /// The table as a System Description Table (header, body, checksum).
    func makeSDT() -> SDT
}

extension ACPITable {
    /// The table's bytes, checksummed.
    public var bytes: [UInt8] { makeSDT().bytes }
}
