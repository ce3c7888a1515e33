import DeviceModel
import Synchronization

/// The ECAM (MMCONFIG) decoder of one segment: an MMIO ``DeviceModel/BusDevice`` whose
/// offset is `bus << 20 | device << 15 | function << 12 | register`, as Cloud
/// Hypervisor's `PciConfigMmio`. Map it at ``PCISegment/ecamBase`` for
/// ``PCISegment/ecamSize`` bytes (the MCFG table points the guest there).
///
/// Accesses of 1, 2 or 4 bytes inside a dword reach the device; absent functions and
/// other accesses read as all ones and ignore writes.
public final class PCIConfigMMIO: BusDevice {
    /// The bus the window decodes.
    public let bus: PCIBus
    /// The name used in bus errors.
    public let name: String

    /// Creates a decoder for `bus`.
    public init(bus: PCIBus, name: String = "pci-ecam") {
        self.bus = bus
        self.name = name
    }

    /// Splits an ECAM offset into (bus, device, function, register offset).
    public static func decode(_ offset: UInt64) -> (bus: Int, device: Int, function: Int, offset: Int) {
        (Int((offset >> 20) & 0xff), Int((offset >> 15) & 0x1f), Int((offset >> 12) & 0x7), Int(offset & 0xfff))
    }

    /// The ECAM offset of (bus, device, function, register offset).
    public static func offset(bus: Int, device: Int, function: Int, register: Int) -> UInt64 {
        UInt64(bus & 0xff) << 20 | UInt64(device & 0x1f) << 15 | UInt64(function & 0x7) << 12 | UInt64(register & 0xfff)
    }

    /// A configuration read; all ones for absent functions and invalid accesses.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset < 256 << 20 else { return DeviceModel.Bus.allOnes(size: size) }
        let (b, d, f, r) = Self.decode(offset)
        return UInt64(bus.readConfig(bus: b, device: d, function: f, offset: r, size: size))
    }

    /// A configuration write; ignored for absent functions and invalid accesses.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset < 256 << 20 else { return }
        let (b, d, f, r) = Self.decode(offset)
        bus.writeConfig(bus: b, device: d, function: f, offset: r, size: size, value: UInt32(truncatingIfNeeded: value))
    }
}

/// Configuration mechanism #1, the legacy x86 ports: an address register at 0xCF8 and a
/// data window at 0xCFC-0xCFF, as Cloud Hypervisor's `PciConfigIo`. Map it on the port
/// I/O bus at ``portBase`` for ``portLength`` ports.
///
/// The address register holds the enable bit (31), bus (23-16), device (15-11),
/// function (10-8) and dword register (7-2); it reads back as written, with the
/// reserved bits 30-24 and 1-0 as 0. Data accesses of 1, 2 or 4 bytes at 0xCFC + n
/// reach byte n of the selected dword when the enable bit is set; otherwise they read
/// all ones and writes are dropped.
public final class PCIConfigIO: BusDevice {
    /// The first port.
    public static let portBase: UInt64 = 0xcf8
    /// How many ports the device covers.
    public static let portLength: UInt64 = 8
    /// The address register bits that hold state.
    public static let addressMask: UInt32 = 0x80ff_fffc

    /// The bus the ports reach.
    public let bus: PCIBus
    /// The name used in bus errors.
    public let name: String
    private let address = Mutex<UInt32>(0)

    /// Creates the ports for `bus`.
    public init(bus: PCIBus, name: String = "pci-config-io") {
        self.bus = bus
        self.name = name
    }

    /// The address register's current value.
    public var configAddress: UInt32 { address.withLock { $0 } }

    /// Reads the address register (offsets 0-3) or the selected configuration bytes
    /// (offsets 4-7).
    public func read(offset: UInt64, size: Int) -> UInt64 {
        let ones = DeviceModel.Bus.allOnes(size: size)
        guard size == 1 || size == 2 || size == 4, offset + UInt64(size) <= 8 else { return ones }
        if offset < 4 {
            guard offset + UInt64(size) <= 4 else { return ones }
            return UInt64(configAddress >> (UInt32(offset) * 8)) & ones
        }
        guard let (b, d, f, r) = selected(dataOffset: Int(offset - 4)) else { return ones }
        return UInt64(bus.readConfig(bus: b, device: d, function: f, offset: r, size: size))
    }

    /// Writes the address register (offsets 0-3, any width inside it) or the selected
    /// configuration bytes (offsets 4-7).
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard size == 1 || size == 2 || size == 4, offset + UInt64(size) <= 8 else { return }
        if offset < 4 {
            guard offset + UInt64(size) <= 4 else { return }
            let shift = UInt32(offset) * 8
            let bytes = PCIConfiguration.allOnes(size: size) << shift
            let data = UInt32(truncatingIfNeeded: value) << shift
            address.withLock { $0 = ($0 & ~bytes | data & bytes) & Self.addressMask }
            return
        }
        guard let (b, d, f, r) = selected(dataOffset: Int(offset - 4)) else { return }
        bus.writeConfig(bus: b, device: d, function: f, offset: r, size: size, value: UInt32(truncatingIfNeeded: value))
    }

    /// The (bus, device, function, byte offset) the address register selects, or `nil`
    /// when its enable bit is clear.
    private func selected(dataOffset: Int) -> (Int, Int, Int, Int)? {
        let value = configAddress
        guard value & 0x8000_0000 != 0 else { return nil }
        return (Int((value >> 16) & 0xff), Int((value >> 11) & 0x1f), Int((value >> 8) & 0x7),
                Int(value & 0xfc) + dataOffset)
    }
}
