import DeviceModel

/// A PCI function as the bus sees it: a configuration space and the windows behind its BARs.
///
/// Like ``DeviceModel/BusDevice``, a device is a reference type shared between vCPU
/// threads: keep its ``PCIConfiguration`` (and any ``MSIXConfiguration``) behind a lock.
/// Every argument comes from the guest, so no offset or size may make a device trap.
public protocol PCIDevice: AnyObject, Sendable {
    /// A short name for logs and error messages.
    var name: String { get }

    /// Reads the configuration dword at `register` (byte offset `register * 4`).
    ///
    /// - Returns: the dword, or all ones beyond the device's configuration space.
    func readConfigRegister(_ register: Int) -> UInt32

    /// Writes the low `size` bytes (1, 2 or 4) of `value` at byte `offset` (0-3) of the
    /// configuration dword `register`.
    ///
    /// - Returns: the BAR the write moved, if any; the bus relocates the window and then
    ///   calls ``barReprogrammed(_:)``.
    func writeConfigRegister(_ register: Int, offset: Int, size: Int, value: UInt32) -> BARReprogram?

    /// Reads `size` bytes at `offset` inside the window of BAR `index`.
    func readBAR(index: Int, offset: UInt64, size: Int) -> UInt64

    /// Writes the low `size` bytes of `value` at `offset` inside the window of BAR `index`.
    func writeBAR(index: Int, offset: UInt64, size: Int, value: UInt64)

    /// The device's BARs with their current addresses, for the VMM to map.
    var bars: [PCIBAR] { get }

    /// Tells the device that its BAR window moved (after the VMM remapped it), so that
    /// it can move anything else tied to the address (ioeventfds, for example).
    func barReprogrammed(_ change: BARReprogram)
}

extension PCIDevice {
    /// The device's type name, used when a device does not name itself.
    public var name: String { String(describing: type(of: self)) }

    /// Devices without BAR windows read 0.
    public func readBAR(index: Int, offset: UInt64, size: Int) -> UInt64 { 0 }

    /// Devices without BAR windows ignore writes.
    public func writeBAR(index: Int, offset: UInt64, size: Int, value: UInt64) {}

    /// Devices without BARs have none to report.
    public var bars: [PCIBAR] { [] }

    /// By default a device keeps nothing else tied to its BAR addresses.
    public func barReprogrammed(_ change: BARReprogram) {}
}

/// A ``DeviceModel/BusDevice`` that forwards accesses to one BAR window of a PCI device,
/// so that the VMM can map each BAR on the MMIO (or port I/O) bus at the BAR's address.
public final class PCIBARRegion: BusDevice {
    /// The device behind the window.
    public let device: any PCIDevice
    /// The BAR the window belongs to.
    public let index: Int

    /// Wraps BAR `index` of `device`.
    public init(device: any PCIDevice, index: Int) {
        self.device = device
        self.index = index
    }

    /// The device name and the BAR index, for bus errors.
    public var name: String { "\(device.name) BAR \(index)" }

    /// Forwards to ``PCIDevice/readBAR(index:offset:size:)``.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        device.readBAR(index: index, offset: offset, size: size)
    }

    /// Forwards to ``PCIDevice/writeBAR(index:offset:size:value:)``.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        device.writeBAR(index: index, offset: offset, size: size, value: value)
    }
}
