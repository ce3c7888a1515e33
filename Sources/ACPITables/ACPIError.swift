/// Why an ACPI table or AML object could not be built.
///
/// Every case carries what was asked for; ``description`` turns it into one English
/// sentence that names the offending value and what would have been accepted.
public enum ACPIError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A table signature is not exactly four printable ASCII characters.
    case invalidSignature(String)
    /// A fixed-width identifier (`field` names it: "OEM ID", "OEM table ID", "creator ID",
    /// "hypervisor vendor identity") is longer than `maximumLength` characters or not
    /// printable ASCII.
    case invalidIdentifier(field: String, value: String, maximumLength: Int)
    /// A name segment of an AML path is empty, longer than four characters, or uses a
    /// character other than `A-Z`, `0-9` and `_` (or starts with a digit).
    case invalidNameSegment(segment: String, path: String)
    /// An AML path is malformed as a whole (empty, or with a prefix in the wrong place).
    case invalidNamePath(path: String, reason: String)
    /// An EISA ID is not three uppercase letters followed by four hexadecimal digits.
    case invalidEISAID(String)
    /// An AML string contains a NUL or a non-ASCII character.
    case invalidAMLString(String)
    /// The table set was asked for no processors.
    case noProcessors
    /// Two processors were given the same local APIC ID.
    case duplicateAPICID(UInt32)
    /// More processors than the DSDT's `Cxxx` processor device names can number.
    case tooManyProcessors(count: Int, maximum: Int)
    /// The RSDP address is not 16-byte aligned, as the ACPI specification requires.
    case misalignedRSDP(UInt64)
    /// Laying the tables out from the RSDP address would run past the 64-bit address space.
    case addressOverflow(start: UInt64, length: UInt64)
    /// A PCI segment's bus range is empty (`startBus` above `endBus`).
    case invalidBusRange(segment: UInt16, startBus: UInt8, endBus: UInt8)

    /// One English sentence naming the bad value and what is accepted.
    public var description: String {
        switch self {
        case let .invalidSignature(signature):
            return "ACPI table signature \"\(signature)\" is invalid: it must be exactly 4 printable ASCII characters"
        case let .invalidIdentifier(field, value, maximumLength):
            return "ACPI \(field) \"\(value)\" is invalid: it must be at most \(maximumLength) printable ASCII "
                + "characters (shorter ones are padded with spaces)"
        case let .invalidNameSegment(segment, path):
            return "AML name segment \"\(segment)\" in \"\(path)\" is invalid: a segment is 1 to 4 characters of "
                + "A-Z, 0-9 and _, not starting with a digit"
        case let .invalidNamePath(path, reason):
            return "AML name path \"\(path)\" is invalid: \(reason)"
        case let .invalidEISAID(value):
            return "EISA ID \"\(value)\" is invalid: it must be 3 uppercase letters followed by 4 hexadecimal "
                + "digits, like \"PNP0501\""
        case let .invalidAMLString(value):
            return "AML string \"\(value)\" is invalid: AML strings hold ASCII characters 0x01-0x7F only"
        case .noProcessors:
            return "ACPI tables need at least one processor (an APIC ID list was empty)"
        case let .duplicateAPICID(id):
            return "APIC ID \(id) is given to more than one processor"
        case let .tooManyProcessors(count, maximum):
            return "ACPI tables cannot describe \(count) processors: at most \(maximum) are supported"
        case let .misalignedRSDP(address):
            return "RSDP address \(hex(address)) is invalid: the RSDP must sit on a 16-byte boundary"
        case let .addressOverflow(start, length):
            return "ACPI tables of \(length) bytes from \(hex(start)) would run past the end of the address space"
        case let .invalidBusRange(segment, startBus, endBus):
            return "PCI segment \(segment) has an empty bus range: start bus \(startBus) is above end bus \(endBus)"
        }
    }
}
