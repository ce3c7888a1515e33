/// Why the PCI layer refused a request from the VMM (never from the guest: guest accesses
/// that make no sense are ignored or read as all ones, as on real hardware).
///
/// ``description`` is one English sentence naming the values involved and what was expected.
public enum PCIError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A BAR index outside `0...5` was used.
    case barIndexOutOfRange(index: Int)
    /// A 64-bit memory BAR was placed at index 5, where it has no second register for its upper half.
    case bar64AtLastIndex
    /// The BAR register at `index` already belongs to another BAR (or to the upper half of a 64-bit one).
    case barIndexInUse(index: Int)
    /// A BAR's size is not a power of two of at least `minimum` bytes.
    case invalidBARSize(index: Int, size: UInt64, minimum: UInt64)
    /// A BAR's address is not a multiple of its size.
    case misalignedBAR(index: Int, address: UInt64, size: UInt64)
    /// A 32-bit memory BAR or an I/O BAR does not fit below 4 GiB.
    case barAbove4GiB(index: Int, address: UInt64, size: UInt64)
    /// A capability of `length` bytes does not fit in the space left (`available` bytes).
    case capabilitySpaceExhausted(length: Int, available: Int)
    /// A capability's writable mask does not have one byte per body byte.
    case capabilityMaskLengthMismatch(bodyLength: Int, maskLength: Int)
    /// An extended capability was added to a configuration space that has only the 256 standard bytes.
    case noExtendedConfigurationSpace
    /// A second capability of a kind the configuration space tracks (MSI or MSI-X) was added.
    case duplicateCapability(id: UInt8)
    /// An MSI-X table size outside `1...2048` vectors.
    case invalidMSIXVectorCount(Int)
    /// An MSI vector count that is not 1, 2, 4, 8, 16 or 32.
    case invalidMSIVectorCount(Int)
    /// A device number outside `0...31`.
    case deviceNumberOutOfRange(Int)
    /// The device number `number` already holds `existing`.
    case deviceNumberInUse(number: Int, existing: String)
    /// All 32 device numbers on the bus are taken.
    case busFull
    /// No device sits at device number `number`.
    case noDevice(number: Int)
    /// Two segments were given the same segment number.
    case duplicateSegment(id: UInt16)

    /// One English sentence naming the values involved.
    public var description: String {
        switch self {
        case let .barIndexOutOfRange(index):
            return "BAR index \(index) is out of range: a type-0 header has BARs 0 through 5"
        case .bar64AtLastIndex:
            return "a 64-bit memory BAR cannot sit at index 5: it needs BAR 5 and a sixth register for its upper half"
        case let .barIndexInUse(index):
            return "BAR register \(index) is already used by another BAR (or the upper half of a 64-bit BAR)"
        case let .invalidBARSize(index, size, minimum):
            return "BAR \(index) has size \(hex(size)): a BAR size must be a power of two of at least \(hex(minimum)) bytes"
        case let .misalignedBAR(index, address, size):
            return "BAR \(index) at \(hex(address)) is not aligned to its size \(hex(size)): a BAR address must be a multiple of its size"
        case let .barAbove4GiB(index, address, size):
            return "BAR \(index) at \(hex(address)) with size \(hex(size)) does not fit below 4 GiB; use a 64-bit memory BAR"
        case let .capabilitySpaceExhausted(length, available):
            return "a capability of \(length) bytes does not fit: only \(available) bytes of capability space are left"
        case let .capabilityMaskLengthMismatch(bodyLength, maskLength):
            return "a capability body of \(bodyLength) bytes came with a writable mask of \(maskLength) bytes; they must match"
        case .noExtendedConfigurationSpace:
            return "extended capabilities need the 4 KiB PCI Express configuration space; create the configuration with extendedSpace: true"
        case let .duplicateCapability(id):
            return "a capability with id \(hex(UInt64(id))) was already added; a function has at most one"
        case let .invalidMSIXVectorCount(count):
            return "an MSI-X table of \(count) vectors is invalid: MSI-X supports 1 to 2048 vectors"
        case let .invalidMSIVectorCount(count):
            return "MSI with \(count) vectors is invalid: MSI supports 1, 2, 4, 8, 16 or 32 vectors"
        case let .deviceNumberOutOfRange(number):
            return "PCI device number \(number) is out of range: a bus has device numbers 0 through 31"
        case let .deviceNumberInUse(number, existing):
            return "PCI device number \(number) is already taken by \(existing)"
        case .busFull:
            return "the PCI bus is full: all 32 device numbers are taken"
        case let .noDevice(number):
            return "no PCI device sits at device number \(number)"
        case let .duplicateSegment(id):
            return "PCI segment \(id) already exists; each segment needs its own number"
        }
    }
}

/// Formats `value` as lowercase hexadecimal with a `0x` prefix.
func hex(_ value: UInt64) -> String {
    "0x" + String(value, radix: 16)
}
