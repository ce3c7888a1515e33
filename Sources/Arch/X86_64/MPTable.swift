import GuestMemory

/// An Intel MultiProcessor Specification 1.4 table: the MP floating pointer structure
/// followed by the MP configuration table, which tell a guest without ACPI (or an early
/// kernel) where its CPUs, its IOAPIC and its interrupt lines are.
///
/// The configuration table holds, in order: one processor entry per vCPU (APIC ID from
/// the topology, local APIC version 0x14, enabled, the BSP flag on vCPU 0), one ISA bus,
/// one IOAPIC (version 0x11 at 0xFEC0_0000), sixteen I/O interrupt entries routing ISA
/// IRQs 0-15 to IOAPIC pins 0-15 (KVM's default routing), and two local interrupt
/// entries: ExtINT on LINT0 of the BSP, NMI on LINT1 of every local APIC.
///
/// Encoded sizes: floating pointer 16 bytes, configuration header 44, processor entry 20,
/// every other entry 8.
public struct MPTable: Hashable, Sendable {
    /// The most vCPUs an MP table describes: 8-bit APIC IDs, 0xFF meaning "all", and one ID
    /// left for the IOAPIC.
    public static let maxCPUs = 254
    /// The local APIC version in processor entries.
    public static let localAPICVersion: UInt8 = 0x14
    /// The IOAPIC version in the IOAPIC entry (an 82093AA-style IOAPIC, as KVM's).
    public static let ioapicVersion: UInt8 = 0x11
    /// The OEM ID of the configuration header.
    public static let oemID = "CLOUDHV "
    /// The product ID of the configuration header.
    public static let productID = "SWIFT VMM   "
    /// The CPU signature of processor entries (family 6).
    public static let cpuSignature: UInt32 = 0x600
    /// The feature flags of processor entries: on-chip APIC (bit 9) and FPU (bit 0).
    public static let cpuFeatures: UInt32 = 0x201
    /// Entry type codes.
    static let processorType: UInt8 = 0, busType: UInt8 = 1, ioapicType: UInt8 = 2
    static let ioInterruptType: UInt8 = 3, localInterruptType: UInt8 = 4
    /// Interrupt type codes.
    static let interruptINT: UInt8 = 0, interruptNMI: UInt8 = 1, interruptExtINT: UInt8 = 3

    /// The local APIC ID of each vCPU, in vCPU order.
    public let apicIDs: [UInt8]
    /// The IOAPIC's ID: the vCPU count, or one above the highest APIC ID when the topology
    /// leaves holes in the numbering.
    public let ioapicID: UInt8

    /// A table for `cpuCount` vCPUs laid out as `topology` (default: flat, APIC ID = index).
    ///
    /// - Throws: `.tooManyCPUsForMPTable` for 0 or more than 254 vCPUs or an APIC ID that
    ///   does not fit in 8 bits; `.invalidTopology` when the topology has no room for `cpuCount`
    ///   (it may describe more: the spare vCPUs of `max_vcpus`).
    public init(cpuCount: Int, topology: CPUTopology? = nil) throws(ArchError) {
        guard cpuCount > 0, cpuCount <= Self.maxCPUs else { throw .tooManyCPUsForMPTable(count: cpuCount, max: Self.maxCPUs) }
        let layout = topology ?? .flat(vcpus: UInt16(cpuCount))
        try layout.validate(holding: UInt32(cpuCount))
        let ids = (0..<UInt32(cpuCount)).map { layout.x2apicID(of: $0) }
        let ioapic = max(UInt32(cpuCount), (ids.max() ?? 0) + 1)
        guard ioapic < 0xFF else { throw .tooManyCPUsForMPTable(count: cpuCount, max: Self.maxCPUs) }
        apicIDs = ids.map { UInt8($0) }
        ioapicID = UInt8(ioapic)
    }

    /// The number of entries in the configuration table.
    public var entryCount: Int { apicIDs.count + 1 + 1 + 16 + 2 }

    /// The encoded size of the floating pointer and configuration table for `cpuCount` vCPUs.
    public static func size(cpuCount: Int) -> Int { 16 + 44 + 20 * cpuCount + 8 + 8 + 16 * 8 + 2 * 8 }

    /// The floating pointer followed by the configuration table, for placement at `address`
    /// (the floating pointer's physical-pointer field points 16 bytes after it).
    public func encode(at address: GuestAddress) -> [UInt8] {
        var table = LittleEndianBuffer(size: Self.size(cpuCount: apicIDs.count))
        // MP floating pointer structure.
        table.put(bytes: Array("_MP_".utf8), at: 0)
        table.put(UInt32(truncatingIfNeeded: address.rawValue &+ 16), at: 4)
        table.put(UInt8(1), at: 8)   // length in 16-byte paragraphs
        table.put(UInt8(4), at: 9)   // specification revision 1.4
        // Feature bytes 11..15 stay 0: a configuration table is present, virtual-wire mode.
        table.put(zeroSumChecksum(table.bytes[0..<16]), at: 10)

        // Configuration table entries, after the 44-byte header at 16.
        var offset = 60
        for (index, apicID) in apicIDs.enumerated() {
            table.put(Self.processorType, at: offset)
            table.put(apicID, at: offset + 1)
            table.put(Self.localAPICVersion, at: offset + 2)
            table.put(UInt8(index == 0 ? 0x3 : 0x1), at: offset + 3)  // enabled, BSP
            table.put(Self.cpuSignature, at: offset + 4)
            table.put(Self.cpuFeatures, at: offset + 8)
            offset += 20
        }
        table.put(Self.busType, at: offset)
        table.put(UInt8(0), at: offset + 1)
        table.put(bytes: Array("ISA   ".utf8), at: offset + 2)
        offset += 8
        table.put(Self.ioapicType, at: offset)
        table.put(ioapicID, at: offset + 1)
        table.put(Self.ioapicVersion, at: offset + 2)
        table.put(UInt8(1), at: offset + 3)  // usable
        table.put(UInt32(X86Layout.ioapicStart.rawValue), at: offset + 4)
        offset += 8
        for irq in UInt8(0)..<16 {
            putInterrupt(&table, at: offset, kind: Self.ioInterruptType, type: Self.interruptINT, sourceIRQ: irq,
                         destination: ioapicID, pin: irq)
            offset += 8
        }
        putInterrupt(&table, at: offset, kind: Self.localInterruptType, type: Self.interruptExtINT, sourceIRQ: 0,
                     destination: 0, pin: 0)
        offset += 8
        putInterrupt(&table, at: offset, kind: Self.localInterruptType, type: Self.interruptNMI, sourceIRQ: 0,
                     destination: 0xFF, pin: 1)
        offset += 8

        // Configuration table header, then its checksum over the whole base table.
        table.put(bytes: Array("PCMP".utf8), at: 16)
        table.put(UInt16(offset - 16), at: 20)
        table.put(UInt8(4), at: 22)
        table.put(bytes: paddedASCII(Self.oemID, length: 8), at: 24)
        table.put(bytes: paddedASCII(Self.productID, length: 12), at: 32)
        table.put(UInt16(entryCount), at: 50)
        table.put(UInt32(X86Layout.apicStart.rawValue), at: 52)
        table.put(zeroSumChecksum(table.bytes[16..<offset]), at: 23)
        return table.bytes
    }

    /// One I/O or local interrupt entry; flags 0 mean "conforms to the bus".
    private func putInterrupt(_ table: inout LittleEndianBuffer, at offset: Int, kind: UInt8, type: UInt8,
                              sourceIRQ: UInt8, destination: UInt8, pin: UInt8) {
        table.put(kind, at: offset)
        table.put(type, at: offset + 1)
        table.put(UInt16(0), at: offset + 2)
        table.put(UInt8(0), at: offset + 4)  // source bus: ISA
        table.put(sourceIRQ, at: offset + 5)
        table.put(destination, at: offset + 6)
        table.put(pin, at: offset + 7)
    }

    /// Writes the table at `address` (by default 0x9FC00, the last KiB of base memory),
    /// which must end at or below `limit` (by default 0xA0000, the end of base memory: the
    /// floating pointer and table must stay where the guest searches and clear of the RSDP).
    ///
    /// - Throws: `.mpTableDoesNotFit` when the table would pass `limit` (at the default
    ///   place that allows up to 40 vCPUs), `.guestMemory` when RAM does not back it.
    public func write(to memory: GuestMemory, at address: GuestAddress = X86Layout.mpTableStart,
                      limit: GuestAddress = X86Layout.ebdaStart) throws(ArchError) {
        let bytes = encode(at: address)
        guard address <= limit, UInt64(bytes.count) <= limit.rawValue - address.rawValue,
              address.rawValue + UInt64(bytes.count) <= 1 << 32 else {
            throw .mpTableDoesNotFit(size: bytes.count, address: address.rawValue, limit: limit.rawValue)
        }
        do {
            try memory.write(bytes: bytes, at: address)
        } catch {
            throw .guestMemory(while: "writing the MP table at \(address)", error)
        }
    }
}
