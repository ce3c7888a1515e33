/// An ACPI Generic Address Structure (GAS, ACPI 6.x section 5.2.3.2): where a register
/// lives and how wide it is. Encoded in 12 bytes:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 1 | address space ID |
/// | 1 | 1 | register bit width |
/// | 2 | 1 | register bit offset |
/// | 3 | 1 | access size |
/// | 4 | 8 | address |
public struct GenericAddress: Hashable, Sendable {
    /// The encoded length.
    public static let encodedLength = 12

    /// The address space a register lives in.
    public enum AddressSpace: UInt8, Hashable, Sendable {
        /// Physical memory (MMIO).
        case systemMemory = 0
        /// Port I/O.
        case systemIO = 1
        /// PCI configuration space.
        case pciConfiguration = 2
        /// The embedded controller.
        case embeddedController = 3
        /// SMBus.
        case smBus = 4
        /// Functional fixed hardware.
        case functionalFixedHardware = 0x7f
    }

    /// The access width the OS must use.
    public enum AccessSize: UInt8, Hashable, Sendable {
        /// Undefined (legacy reasons).
        case undefined = 0
        /// Byte access.
        case byte = 1
        /// 16-bit access.
        case word = 2
        /// 32-bit access.
        case dword = 3
        /// 64-bit access.
        case qword = 4

        /// The access width in bits (0 when undefined).
        public var bits: UInt8 { self == .undefined ? 0 : 8 << (rawValue - 1) }
    }

    /// The address space.
    public var addressSpace: AddressSpace
    /// The register's width in bits.
    public var bitWidth: UInt8
    /// The register's bit offset at the address.
    public var bitOffset: UInt8
    /// The access size.
    public var accessSize: AccessSize
    /// The register's address in its space.
    public var address: UInt64

    /// Creates a structure from its fields.
    public init(addressSpace: AddressSpace, bitWidth: UInt8, bitOffset: UInt8 = 0, accessSize: AccessSize, address: UInt64) {
        self.addressSpace = addressSpace
        self.bitWidth = bitWidth
        self.bitOffset = bitOffset
        self.accessSize = accessSize
        self.address = address
    }

    /// A port I/O register `access` wide (bit width = access width), as Cloud Hypervisor's
    /// `GenericAddress::io_port_address`.
    public static func ioPort(_ port: UInt16, access: AccessSize = .byte) -> GenericAddress {
        GenericAddress(addressSpace: .systemIO, bitWidth: access.bits, accessSize: access, address: UInt64(port))
    }

    /// An MMIO register `access` wide, as Cloud Hypervisor's `GenericAddress::mmio_address`.
    public static func memory(_ address: UInt64, access: AccessSize = .byte) -> GenericAddress {
        GenericAddress(addressSpace: .systemMemory, bitWidth: access.bits, accessSize: access, address: address)
    }

    /// The encoded 12 bytes.
    public var bytes: [UInt8] {
        var result: [UInt8] = [addressSpace.rawValue, bitWidth, bitOffset, accessSize.rawValue]
        result.appendLittleEndian(address)
        return result
    }
}
