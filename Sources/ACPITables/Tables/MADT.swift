/// The Multiple APIC Description Table (signature `"APIC"`), revision 5 as Cloud
/// Hypervisor: after the header, the local APIC address (4 bytes at offset 36), the flags
/// (4 bytes at 40, bit 0 `PCAT_COMPAT`), then interrupt controller structures, each
/// starting with a type byte and a length byte.
public struct MADT: ACPITable {
    /// The table revision.
    public static let revision: UInt8 = 5
    /// Offset of the local APIC address.
    public static let localAPICAddressOffset = 36
    /// Offset of the flags.
    public static let flagsOffset = 40
    /// Offset of the first interrupt controller structure.
    public static let entriesOffset = 44
    /// The architectural local APIC base.
    public static let defaultLocalAPICAddress: UInt32 = 0xFEE0_0000
    /// The IOAPIC base Cloud Hypervisor (and KVM's in-kernel IOAPIC) uses.
    public static let defaultIOAPICAddress: UInt32 = 0xFEC0_0000
    /// Flag bit 0: the system also has dual 8259 PICs, which the OS must mask.
    public static let pcatCompatible: UInt32 = 1 << 0

    /// Processor flags (local APIC and x2APIC structures).
    public struct ProcessorFlags: OptionSet, Hashable, Sendable {
        /// The raw 32-bit value.
        public let rawValue: UInt32

        /// Wraps a raw value.
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// Bit 0: the processor is usable now.
        public static let enabled = ProcessorFlags(rawValue: 1 << 0)
        /// Bit 1: a disabled processor may be brought online later (MADT revision 5+).
        public static let onlineCapable = ProcessorFlags(rawValue: 1 << 1)
    }

    /// MPS INTI flags of interrupt source overrides and NMI structures: polarity in bits
    /// 0-1 (0 bus default, 1 active high, 3 active low), trigger mode in bits 2-3 (0 bus
    /// default, 1 edge, 3 level).
    public struct InterruptFlags: OptionSet, Hashable, Sendable {
        /// The raw 16-bit value.
        public let rawValue: UInt16

        /// Wraps a raw value.
        public init(rawValue: UInt16) { self.rawValue = rawValue }

        /// Conforms to the bus's specification for both polarity and trigger (0).
        public static let busDefault: InterruptFlags = []
        /// Polarity active high.
        public static let activeHigh = InterruptFlags(rawValue: 0b01)
        /// Polarity active low.
        public static let activeLow = InterruptFlags(rawValue: 0b11)
        /// Trigger mode edge.
        public static let edgeTriggered = InterruptFlags(rawValue: 0b01 << 2)
        /// Trigger mode level.
        public static let levelTriggered = InterruptFlags(rawValue: 0b11 << 2)
    }

    /// One interrupt controller structure.
    public enum Entry: Hashable, Sendable {
        /// Type 0, 8 bytes: processor UID, APIC ID, flags.
        case localAPIC(processorUID: UInt8, apicID: UInt8, flags: ProcessorFlags)
        /// Type 1, 12 bytes: IOAPIC ID, reserved, address, GSI base.
        case ioAPIC(id: UInt8, address: UInt32, gsiBase: UInt32)
        /// Type 2, 10 bytes: bus (0 = ISA), source IRQ, GSI, MPS INTI flags.
        case interruptSourceOverride(bus: UInt8, source: UInt8, gsi: UInt32, flags: InterruptFlags)
        /// Type 4, 6 bytes: processor UID (0xFF = all), MPS INTI flags, LINT pin (0 or 1).
        case localAPICNMI(processorUID: UInt8, flags: InterruptFlags, lint: UInt8)
        /// Type 9, 16 bytes: reserved, x2APIC ID, flags, processor UID.
        case localX2APIC(processorUID: UInt32, x2apicID: UInt32, flags: ProcessorFlags)

        /// The structure type byte.
        public var type: UInt8 {
            switch self {
            case .localAPIC: 0
            case .ioAPIC: 1
            case .interruptSourceOverride: 2
            case .localAPICNMI: 4
            case .localX2APIC: 9
            }
        }

        /// The encoded structure, starting with its type and length bytes.
        public var bytes: [UInt8] {
            var body: [UInt8] = []
            switch self {
            case let .localAPIC(uid, apicID, flags):
                body = [uid, apicID]
                body.appendLittleEndian(flags.rawValue)
            case let .ioAPIC(id, address, gsiBase):
                body = [id, 0]
                body.appendLittleEndian(address)
                body.appendLittleEndian(gsiBase)
            case let .interruptSourceOverride(bus, source, gsi, flags):
                body = [bus, source]
                body.appendLittleEndian(gsi)
                body.appendLittleEndian(flags.rawValue)
            case let .localAPICNMI(uid, flags, lint):
                body = [uid]
                body.appendLittleEndian(flags.rawValue)
                body.append(lint)
            case let .localX2APIC(uid, x2apicID, flags):
                body = [0, 0]
                body.appendLittleEndian(x2apicID)
                body.appendLittleEndian(flags.rawValue)
                body.appendLittleEndian(uid)
            }
            return [type, UInt8(body.count + 2)] + body
        }

        /// The processor structure for a vCPU with `uid` and `apicID`: the 8-byte local
        /// APIC form while both fit in a byte (and the ID is not the 0xFF broadcast), the
        /// 16-byte x2APIC form beyond.
        public static func processor(uid: UInt32, apicID: UInt32, flags: ProcessorFlags = .enabled) -> Entry {
            if uid <= 0xff, apicID < 0xff {
                return .localAPIC(processorUID: UInt8(uid), apicID: UInt8(apicID), flags: flags)
            }
            return .localX2APIC(processorUID: uid, x2apicID: apicID, flags: flags)
        }
    }

    /// The local APIC address every processor sees.
    public var localAPICAddress: UInt32
    /// The flags (``pcatCompatible`` or 0; Cloud Hypervisor writes 0).
    public var flags: UInt32
    /// The interrupt controller structures, in order.
    public var entries: [Entry]
    /// The OEM and creator fields.
    public var identity: ACPIIdentity

    /// A MADT with the given structures.
    public init(localAPICAddress: UInt32 = MADT.defaultLocalAPICAddress, flags: UInt32 = 0, entries: [Entry],
                identity: ACPIIdentity = .cloudHypervisor) {
        self.localAPICAddress = localAPICAddress
        self.flags = flags
        self.entries = entries
        self.identity = identity
    }

    /// Cloud Hypervisor's x86-64 MADT: one enabled processor per APIC ID (processor UID =
    /// vCPU index), the IOAPIC (ID 0 at 0xFEC0_0000, GSI base 0), and one interrupt source
    /// override of ISA IRQ 4 (the serial port) to GSI 4 with bus-default flags. Flags 0
    /// (no `PCAT_COMPAT`) and no local APIC NMI structure, as Cloud Hypervisor.
    ///
    /// With `enabledCount` (CPU hotplug), every processor is flagged online capable and only
    /// the first `enabledCount` enabled, as Cloud Hypervisor flags the vCPUs beyond the boot ones.
    public static func cloudHypervisor(apicIDs: [UInt32], enabledCount: Int? = nil, ioapicID: UInt8 = 0,
                                       ioapicAddress: UInt32 = MADT.defaultIOAPICAddress,
                                       identity: ACPIIdentity = .cloudHypervisor) -> MADT {
        var entries = apicIDs.enumerated().map { index, apicID in
            guard let enabledCount else { return Entry.processor(uid: UInt32(index), apicID: apicID) }
            let flags: ProcessorFlags = index < enabledCount ? [.enabled, .onlineCapable] : .onlineCapable
            return Entry.processor(uid: UInt32(index), apicID: apicID, flags: flags)
        }
        entries.append(.ioAPIC(id: ioapicID, address: ioapicAddress, gsiBase: 0))
        entries.append(.interruptSourceOverride(bus: 0, source: 4, gsi: 4, flags: .busDefault))
        return MADT(entries: entries, identity: identity)
    }

    /// The table: header (`"CHMADT"`), local APIC address, flags, structures.
    public func makeSDT() -> SDT {
        var table = SDT("APIC", revision: Self.revision, oemTableID: "CHMADT", identity: identity)
        table.append(localAPICAddress)
        table.append(flags)
        for entry in entries { table.append(bytes: entry.bytes) }
        return table
    }
}
