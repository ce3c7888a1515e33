/// The PCI Express memory-mapped configuration table: after the header, 8 reserved bytes
/// and one 16-byte allocation per PCI segment (base address, segment, start and end bus,
/// 4 reserved bytes). Revision 1.
public struct MCFG: ACPITable, Hashable {
    /// One ECAM window.
    public struct Allocation: Hashable, Sendable {
        /// The ECAM base address (of bus 0 of the segment).
        public var baseAddress: UInt64
        /// The PCI segment group.
        public var segment: UInt16
        /// The first bus decoded.
        public var startBus: UInt8
        /// The last bus decoded.
        public var endBus: UInt8

        /// An allocation; Cloud Hypervisor describes bus 0 only (`startBus` = `endBus` = 0).
        public init(baseAddress: UInt64, segment: UInt16 = 0, startBus: UInt8 = 0, endBus: UInt8 = 0) {
            self.baseAddress = baseAddress
            self.segment = segment
            self.startBus = startBus
            self.endBus = endBus
        }

        /// The bytes of ECAM space the bus range covers (1 MiB per bus; 0 for an empty range).
        public var size: UInt64 { endBus < startBus ? 0 : (UInt64(endBus) - UInt64(startBus) + 1) << 20 }
    }

    /// The size of one allocation entry.
    public static let allocationLength = 16
    /// Cloud Hypervisor's x86-64 ECAM base (`PCI_MMCONFIG_START`).
    public static let cloudHypervisorECAMBase: UInt64 = 0xE800_0000

    /// The ECAM windows.
    public var allocations: [Allocation]
    /// The OEM and creator fields.
    public var identity: ACPIIdentity

    /// A table of `allocations`.
    ///
    /// - Throws: ``ACPIError/invalidBusRange(segment:startBus:endBus:)`` for a start bus
    ///   above its end bus.
    public init(allocations: [Allocation], identity: ACPIIdentity = .cloudHypervisor) throws(ACPIError) {
        for allocation in allocations where allocation.startBus > allocation.endBus {
            throw .invalidBusRange(segment: allocation.segment, startBus: allocation.startBus, endBus: allocation.endBus)
        }
        self.allocations = allocations
        self.identity = identity
    }

    /// The table: header (`"CHMCFG"`), 8 reserved bytes, the allocations.
    public func makeSDT() -> SDT {
        var table = SDT("MCFG", revision: 1, oemTableID: "CHMCFG", identity: identity)
        table.append(UInt64(0))
        for allocation in allocations {
            table.append(allocation.baseAddress)
            table.append(allocation.segment)
            table.append(allocation.startBus)
            table.append(allocation.endBus)
            table.append(UInt32(0))
        }
        return table
    }
}
