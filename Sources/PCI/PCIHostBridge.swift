import Synchronization

/// The PCI host bridge at device 0 of every segment, as Cloud Hypervisor's `PciRoot`:
/// an Intel (0x8086) device 0x0d57, class bridge / host bridge, with no BARs and no
/// capabilities. It exists so that the guest finds function 0 of device 0 and scans the bus.
public final class PCIHostBridge: PCIDevice {
    /// Intel's vendor id.
    public static let vendorID: UInt16 = 0x8086
    /// The device id Cloud Hypervisor gives its virtual PCIe host bridge.
    public static let deviceID: UInt16 = 0x0d57

    /// The name used in logs.
    public let name: String
    private let configuration: Mutex<PCIConfiguration>

    /// Creates a host bridge.
    ///
    /// - Parameter name: the name in logs.
    public init(name: String = "pci-host-bridge") {
        self.name = name
        configuration = Mutex(PCIConfiguration(
            vendorID: Self.vendorID, deviceID: Self.deviceID, classCode: .hostBridge))
    }

    /// A copy of the configuration space as it stands.
    public var configurationSnapshot: PCIConfiguration { configuration.withLock { $0 } }

    /// Reads a configuration dword.
    public func readConfigRegister(_ register: Int) -> UInt32 {
        configuration.withLock { $0.readRegister(register) }
    }

    /// Writes configuration bytes; only the command, cache line size and interrupt line
    /// registers (and the status W1C bits) take writes. Never moves a BAR: it has none.
    public func writeConfigRegister(_ register: Int, offset: Int, size: Int, value: UInt32) -> BARReprogram? {
        guard (0..<PCIConfiguration.extendedSize / 4).contains(register), (0..<4).contains(offset) else { return nil }
        return configuration.withLock { $0.write(offset: register * 4 + offset, size: size, value: value) }.barReprogram
    }
}
