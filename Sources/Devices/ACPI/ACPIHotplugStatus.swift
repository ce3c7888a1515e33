/// The status register of Cloud Hypervisor's ACPI CPU and memory hotplug controllers: the
/// same four bits for the selected vCPU or memory slot (the AML names them `CPEN`/`CINS`/
/// `CRMV`/`CEJ0` for CPUs and `MEN_`/`MINS`/`MRMV`/`MEJ0` for memory).
public struct ACPIHotplugStatus: OptionSet, Hashable, Sendable {
    /// The register bits.
    public let rawValue: UInt8

    /// Wraps register bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Bit 0: the vCPU or memory is present.
    public static let enabled = ACPIHotplugStatus(rawValue: 1 << 0)
    /// Bit 1: it was added and the guest has not acknowledged it.
    public static let inserting = ACPIHotplugStatus(rawValue: 1 << 1)
    /// Bit 2: it is to be removed and the guest has not acknowledged it.
    public static let removing = ACPIHotplugStatus(rawValue: 1 << 2)
    /// Bit 3, written by the guest: eject the selected vCPU or slot.
    public static let eject = ACPIHotplugStatus(rawValue: 1 << 3)
}
