/// What the guest's ACPI tables describe: the inputs of ``ACPITableSet/build(_:rsdpAddress:)``.
///
/// The defaults are Cloud Hypervisor's x86-64 platform: the shutdown/reset port 0x600,
/// the IOAPIC with ID 0 at 0xFEC0_0000, no PM timer, no PCI (the MCFG and its
/// motherboard-resources device appear once ``pciSegments`` is non-empty), no GED.
public struct ACPIConfiguration: Sendable {
    /// The local APIC ID of each vCPU, in vCPU order (vCPU *n* gets processor UID *n*).
    public var apicIDs: [UInt32]
    /// Whether the DSDT describes the COM1 serial port (0x3F8, IRQ 4).
    public var serialPort: Bool
    /// The CMOS real-time clock the DSDT describes (`PNP0B00`), or `nil` for none (Cloud
    /// Hypervisor describes none).
    public var cmosRealTimeClock: PlatformAML.CMOSRealTimeClock?
    /// The port of the sleep control, sleep status and reset registers.
    public var shutdownPort: UInt16
    /// The port of the 32-bit ACPI PM timer, or `nil` when the VMM has none.
    public var pmTimerPort: UInt16?
    /// The IOAPIC's ID in the MADT.
    public var ioapicID: UInt8
    /// The IOAPIC's MMIO base.
    public var ioapicAddress: UInt32
    /// The PCI ECAM windows for the MCFG (empty: no MCFG).
    public var pciSegments: [MCFG.Allocation]
    /// The Generic Event Device, or `nil` for none.
    public var genericEventDevice: PlatformAML.GenericEventDevice?
    /// Further objects appended to the DSDT after the built-in ones.
    public var additionalDefinitions: [any AMLConvertible]
    /// CPU hotplug, as Cloud Hypervisor describes it: the address of the controller's
    /// registers and how many vCPUs (the first of ``apicIDs``, which then lists every
    /// possible one) are present at boot; `nil` for a fixed set of vCPUs.
    public var cpuHotplug: (controllerAddress: UInt64, presentVCPUs: Int)?
    /// The address of Cloud Hypervisor's PCI hotplug registers (`\_SB_.PHPR`), whose slots
    /// are described under each of ``pciSegments``' host bridges (which
    /// ``additionalDefinitions`` must define); `nil` for no PCI hotplug.
    public var pciHotplugAddress: UInt64?
    /// The address of Cloud Hypervisor's memory hotplug registers (`\_SB_.MHPC`, with its
    /// memory devices `M000`...), for ACPI memory hotplug; `nil` for none.
    public var memoryHotplugAddress: UInt64?
    /// The OEM and creator fields of every table.
    public var identity: ACPIIdentity
    /// The VIOT describing a virtio-iommu and the functions behind it, placed after the
    /// MCFG as Cloud Hypervisor places it; `nil` for none.
    public var viot: VIOT?

    /// A configuration for vCPUs with the given APIC IDs.
    public init(apicIDs: [UInt32], serialPort: Bool = true) {
        self.apicIDs = apicIDs
        self.serialPort = serialPort
        cmosRealTimeClock = nil
        shutdownPort = FADT.cloudHypervisorShutdownPort
        pmTimerPort = nil
        ioapicID = 0
        ioapicAddress = MADT.defaultIOAPICAddress
        pciSegments = []
        genericEventDevice = nil
        additionalDefinitions = []
        cpuHotplug = nil
        pciHotplugAddress = nil
        memoryHotplugAddress = nil
        identity = .cloudHypervisor
        viot = nil
    }

    /// A configuration for `vcpuCount` vCPUs with APIC IDs `0 ..< vcpuCount` (a negative
    /// count gives none, which ``ACPITableSet/build(_:rsdpAddress:)`` rejects).
    public init(vcpuCount: Int, serialPort: Bool = true) {
        self.init(apicIDs: (0..<UInt32(clamping: max(vcpuCount, 0))).map { $0 }, serialPort: serialPort)
    }
}

/// The complete set of ACPI tables for a guest, laid out in guest physical memory: the
/// RSDP at the address asked for, then, each 8-byte aligned and contiguous, the DSDT, FADT,
/// MADT, MCFG (when PCI is configured), VIOT (with a virtio-iommu) and XSDT, as Cloud
/// Hypervisor orders them.
///
/// Building is pure: the VMM writes each table's bytes at its address and hands the RSDP
/// address to the guest (the `acpi_rsdp_addr` of `boot_params`, or `rsdp_paddr` of the PVH
/// start info).
public struct ACPITableSet: Hashable, Sendable {
    /// One table placed in guest memory.
    public struct Table: Hashable, Sendable {
        /// The signature (`"RSD PTR "` for the RSDP).
        public let signature: String
        /// The guest physical address of its first byte.
        public let address: UInt64
        /// The bytes, checksummed.
        public let bytes: [UInt8]

        /// Places `bytes` at `address`.
        public init(signature: String, address: UInt64, bytes: [UInt8]) {
            self.signature = signature
            self.address = address
            self.bytes = bytes
        }
    }

    /// The alignment of each table after the RSDP.
    public static let tableAlignment: UInt64 = 8

    /// The RSDP's guest physical address.
    public let rsdpAddress: UInt64
    /// The tables in address order, the RSDP first.
    public let tables: [Table]

    /// The first address past the last table.
    public var endAddress: UInt64 { tables.last.map { $0.address + UInt64($0.bytes.count) } ?? rsdpAddress }

    /// The table with `signature` (`"DSDT"`, `"FACP"`, `"APIC"`, `"MCFG"`, `"XSDT"`,
    /// `"RSD PTR "`), if present.
    public func table(_ signature: String) -> Table? { tables.first { $0.signature == signature } }

    /// Cloud Hypervisor's tables for `vcpuCount` vCPUs (APIC IDs `0 ..< vcpuCount`),
    /// optionally describing COM1, with the RSDP at `rsdpAddress`.
    ///
    /// - Throws: see ``build(_:rsdpAddress:)``.
    public static func build(vcpuCount: Int, serialPort: Bool, rsdpAddress: UInt64) throws(ACPIError) -> ACPITableSet {
        try build(ACPIConfiguration(vcpuCount: vcpuCount, serialPort: serialPort), rsdpAddress: rsdpAddress)
    }

    /// The tables for `configuration`, with the RSDP at `rsdpAddress`.
    ///
    /// - Throws: ``ACPIError/noProcessors``, ``ACPIError/duplicateAPICID(_:)``,
    ///   ``ACPIError/tooManyProcessors(count:maximum:)``, ``ACPIError/misalignedRSDP(_:)``
    ///   (the RSDP must be 16-byte aligned), ``ACPIError/invalidBusRange(segment:startBus:endBus:)``
    ///   or ``ACPIError/addressOverflow(start:length:)``.
    public static func build(_ configuration: ACPIConfiguration, rsdpAddress: UInt64) throws(ACPIError) -> ACPITableSet {
        let apicIDs = configuration.apicIDs
        guard !apicIDs.isEmpty else { throw .noProcessors }
        var seen = Set<UInt32>()
        for id in apicIDs where !seen.insert(id).inserted { throw .duplicateAPICID(id) }
        guard rsdpAddress % 16 == 0 else { throw .misalignedRSDP(rsdpAddress) }
        let identity = configuration.identity
        let mcfg = configuration.pciSegments.isEmpty
            ? nil : try MCFG(allocations: configuration.pciSegments, identity: identity)

        var definitions: [any AMLConvertible] = []
        if !configuration.pciSegments.isEmpty {
            definitions.append(PlatformAML.motherboardResources(ecam: configuration.pciSegments))
        }
        if configuration.serialPort { definitions.append(PlatformAML.serialPort()) }
        if let rtc = configuration.cmosRealTimeClock { definitions.append(rtc.device) }
        definitions.append(PlatformAML.s5SleepState)
        definitions.append(PlatformAML.powerButton)
        if let ged = configuration.genericEventDevice { definitions += ged.definitions }
        if let hotplug = configuration.cpuHotplug {
            definitions.append(PlatformAML.cpuHotplugController(address: hotplug.controllerAddress))
            definitions.append(try PlatformAML.hotpluggableProcessors(apicIDs: apicIDs))
        } else {
            definitions.append(try PlatformAML.processors(apicIDs: apicIDs))
        }
        if let address = configuration.memoryHotplugAddress {
            definitions.append(try PlatformAML.memoryHotplugController(address: address))
        }
        definitions += configuration.additionalDefinitions
        if let address = configuration.pciHotplugAddress {
            let segments = configuration.pciSegments.map(\.segment)
            definitions.append(PlatformAML.pciHotplugController(address: address, segments: segments))
            for segment in segments { definitions.append(try PlatformAML.pciHotplugSlots(segment: segment)) }
        }

        var layout = Layout(rsdpAddress: rsdpAddress)
        try layout.reserve(signature: "RSD PTR ", length: RSDP.length)  // filled in last
        let dsdt = DSDT(definitions, identity: identity).bytes
        let dsdtAddress = try layout.place(signature: "DSDT", bytes: dsdt)
        let fadt = FADT.cloudHypervisor(dsdtAddress: dsdtAddress, shutdownPort: configuration.shutdownPort,
                                        pmTimerPort: configuration.pmTimerPort, identity: identity)
        var pointers = [try layout.place(signature: "FACP", bytes: fadt.bytes)]
        let madt = MADT.cloudHypervisor(apicIDs: apicIDs, enabledCount: configuration.cpuHotplug?.presentVCPUs, ioapicID: configuration.ioapicID,
                                        ioapicAddress: configuration.ioapicAddress, identity: identity)
        pointers.append(try layout.place(signature: "APIC", bytes: madt.bytes))
        if let mcfg { pointers.append(try layout.place(signature: "MCFG", bytes: mcfg.bytes)) }
        if var viot = configuration.viot {
            viot.identity = identity
            pointers.append(try layout.place(signature: "VIOT", bytes: viot.bytes))
        }
        let xsdtAddress = try layout.place(signature: "XSDT", bytes: XSDT(entries: pointers, identity: identity).bytes)
        layout.tables[0] = Table(signature: "RSD PTR ", address: rsdpAddress,
                                 bytes: RSDP(xsdtAddress: xsdtAddress, identity: identity).bytes)
        return ACPITableSet(rsdpAddress: rsdpAddress, tables: layout.tables)
    }

    /// Places tables one after the other from the RSDP, each aligned to ``tableAlignment``.
    private struct Layout {
        let rsdpAddress: UInt64
        var next: UInt64
        var tables: [Table] = []

        init(rsdpAddress: UInt64) {
            self.rsdpAddress = rsdpAddress
            next = rsdpAddress
        }

        /// Places `bytes` at the next aligned address and returns that address.
        mutating func place(signature: String, bytes: [UInt8]) throws(ACPIError) -> UInt64 {
            let (aligned, alignOverflow) = next.addingReportingOverflow((tableAlignment - next % tableAlignment) % tableAlignment)
            let (end, endOverflow) = aligned.addingReportingOverflow(UInt64(bytes.count))
            guard !alignOverflow, !endOverflow else {
                throw .addressOverflow(start: rsdpAddress, length: next &- rsdpAddress &+ UInt64(bytes.count))
            }
            tables.append(Table(signature: signature, address: aligned, bytes: bytes))
            next = end
            return aligned
        }

        /// Places `length` zero bytes as a placeholder.
        mutating func reserve(signature: String, length: Int) throws(ACPIError) {
            _ = try place(signature: signature, bytes: Array(repeating: 0, count: length))
        }
    }
}
