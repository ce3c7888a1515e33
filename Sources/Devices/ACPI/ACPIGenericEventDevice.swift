import DeviceModel
import Synchronization

/// Cloud Hypervisor's ACPI Generic Event Device register (`AcpiGedDevice`): one byte of
/// MMIO that tells the guest why the GED interrupt fired.
///
/// The VMM calls ``notify(_:)`` with the causes; the device records them and triggers its
/// interrupt line. The guest's `_EVT` method (see the DSDT's `\_SB_.GEC_.ESCN`) reads the
/// byte, which returns the pending causes and clears them, and dispatches on the bits:
///
/// | bit | cause | AML action |
/// |---|---|---|
/// | 0 | CPU hotplug | `\_SB_.CPUS.CSCN ()` |
/// | 1 | memory hotplug | `\_SB_.MHPC.MSCN ()` |
/// | 2 | PCI hotplug | `\_SB_.PHPR.PSCN ()` |
/// | 3 | power button | `Notify (\_SB_.PWRB, 0x80)` |
///
/// The register is 1 byte long (``registerSize``); reads of other widths return 0 and
/// writes are ignored, as in Cloud Hypervisor.
public final class ACPIGenericEventDevice: BusDevice {
    /// The causes the register reports.
    public struct Events: OptionSet, Hashable, Sendable {
        /// The register bits.
        public let rawValue: UInt8

        /// Wraps register bits.
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// Bit 0: CPUs were added or removed.
        public static let cpuHotplug = Events(rawValue: 1 << 0)
        /// Bit 1: memory was added.
        public static let memoryHotplug = Events(rawValue: 1 << 1)
        /// Bit 2: PCI devices changed.
        public static let pciHotplug = Events(rawValue: 1 << 2)
        /// Bit 3: the power button was pressed.
        public static let powerButton = Events(rawValue: 1 << 3)
    }

    /// The size of the MMIO register.
    public static let registerSize: UInt64 = 1

    /// The name used in logs and bus errors.
    public let name: String
    private let interrupt: any InterruptLine
    private let pending = Mutex<Events>([])

    /// Creates the register.
    ///
    /// - Parameters:
    ///   - interrupt: the GED's interrupt (the GSI named in the DSDT's `\_SB_.GED_._CRS`).
    ///   - name: the name in logs and bus errors.
    public init(interrupt: any InterruptLine, name: String = "acpi-ged") {
        self.interrupt = interrupt
        self.name = name
    }

    /// The causes recorded and not yet read by the guest.
    public var pendingEvents: Events { pending.withLock { $0 } }

    /// Records `events` and triggers the GED interrupt.
    ///
    /// - Throws: whatever the interrupt line reports; the events stay recorded.
    public func notify(_ events: Events) throws {
        pending.withLock { $0.formUnion(events) }
        try interrupt.trigger()
    }

    /// A byte read returns the pending causes and clears them; other widths read 0.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size == 1 else { return 0 }
        return UInt64(pending.withLock { events in
            defer { events = [] }
            return events.rawValue
        })
    }

    /// Writes are ignored: the register is read-only.
    public func write(offset: UInt64, size: Int, value: UInt64) {}
}
