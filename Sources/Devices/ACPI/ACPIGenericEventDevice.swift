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
        /// Every cause the register defines (bits 0-3), the ones the DSDT's `_EVT` dispatches.
        public static let all: Events = [.cpuHotplug, .memoryHotplug, .pciHotplug, .powerButton]
    }

    /// The size of the MMIO register.
    public static let registerSize: UInt64 = 1

    /// The name used in logs and bus errors.
    public let name: String
    private let interrupt: any InterruptLine
    private let pending = Mutex<(events: Events, failures: Int)>(([], 0))

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
    public var pendingEvents: Events { pending.withLock { $0.events } }

    /// How many interrupt deliveries made by ``restoreState(_:)`` failed (``notify(_:)``
    /// throws its failures to the caller instead).
    public var interruptFailures: Int { pending.withLock { $0.failures } }

    /// Records `events` and triggers the GED interrupt.
    ///
    /// - Throws: whatever the interrupt line reports; the events stay recorded.
    public func notify(_ events: Events) throws {
        pending.withLock { $0.events.formUnion(events) }
        try interrupt.trigger()
    }

    /// A byte read returns the pending causes and clears them; other widths read 0.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard size == 1 else { return 0 }
        return UInt64(pending.withLock { device in
            defer { device.events = [] }
            return device.events.rawValue
        })
    }

    /// Writes are ignored: the register is read-only.
    public func write(offset: UInt64, size: Int, value: UInt64) {}
}

extension ACPIGenericEventDevice: StatefulDevice {
    /// The GED's saved state: the causes notified and not yet read by the guest.
    public struct State: Codable, Equatable, Sendable {
        /// The pending cause bits, as the register would return them (bits 0-3, see ``Events``).
        public var pendingEvents: UInt8

        /// A state with `pendingEvents` waiting.
        public init(pendingEvents: Events = []) {
            self.pendingEvents = pendingEvents.rawValue
        }

        /// The JSON names, in snake case as Cloud Hypervisor's serde writes them.
        enum CodingKeys: String, CodingKey {
            case pendingEvents = "pending_events"
        }
    }

    /// The pending causes, taken under the device's lock.
    public func saveState() -> State {
        State(pendingEvents: pending.withLock { $0.events })
    }

    /// Replaces the pending causes with the saved ones and, when there are any, triggers the
    /// GED interrupt again (the guest has not read them, so it has not handled them).
    /// Refuses, changing nothing, bits outside the four causes the DSDT dispatches.
    public func restoreState(_ state: State) throws(DeviceStateError) {
        let events = Events(rawValue: state.pendingEvents)
        guard Events.all.isSuperset(of: events) else {
            throw DeviceStateError(device: name, reason: "pending_events \(hex(state.pendingEvents)) sets bits other than "
                + "the four causes (0x0f: CPU, memory, PCI hotplug, power button)")
        }
        pending.withLock { device in
            device.events = events
            guard !events.isEmpty else { return }
            do { try interrupt.trigger() } catch { device.failures += 1 }
        }
    }
}
