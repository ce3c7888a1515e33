import ACPITables
import Arch
import DeviceModel
import PCI
import VMAllocator

/// Where one PCI segment sits in the guest's address space, as Cloud Hypervisor lays it out:
/// a 1 MiB ECAM window in the MMCONFIG area, and its shares of the 32-bit device window and of
/// the 64-bit device area above RAM.
struct PCISegmentWindows: Equatable, Sendable {
    /// The segment number.
    var id: UInt16
    /// The guest-physical base of the segment's ECAM window (bus 0 only).
    var ecamBase: UInt64
    /// The segment's share of the 32-bit device window, as (base, size).
    var mmio32: AddressRange
    /// The segment's share of the 64-bit device area, as (base, size).
    var mmio64: AddressRange

    /// The host bridge `_CRS` windows the DSDT gives this segment.
    var hostBridge: PlatformAML.PCIHostBridgeWindows {
        PlatformAML.PCIHostBridgeWindows(segment: id, mmio32: (mmio32.start, mmio32.size), mmio64: (mmio64.start, mmio64.size))
    }

    /// The segment's MCFG entry.
    var mcfg: MCFG.Allocation { MCFG.Allocation(baseAddress: ecamBase, segment: id) }
}

/// Cloud Hypervisor's PCI segment layout (`create_mmio_allocators` and `PciSegment::new` of its
/// device manager).
enum PCISegmentLayout {
    /// The 64-bit share of each segment starts on a 4 GiB boundary, the 32-bit one on 4 KiB.
    static let mmio64Alignment: UInt64 = 4 << 30
    /// The 32-bit shares' alignment.
    static let mmio32Alignment: UInt64 = 4 << 10

    /// Splits `[start, start + size)` between segments by `weights`: a unit of
    /// `size / (alignment * total weight)` aligned bytes, each segment `weight` units in
    /// segment order, and the last segment everything left up to the end (so that alignment
    /// loses nothing at the top).
    ///
    /// - Throws: `VMMError` when a segment would get no bytes (the range is too small for so
    ///   many segments at that alignment), where Cloud Hypervisor would stop on an assertion.
    static func split(base start: UInt64, size: UInt64, weights: [UInt32], alignment: UInt64,
                      what: String) throws -> [AddressRange] {
        precondition(!weights.isEmpty && size > 0 && alignment > 0)
        let total = weights.reduce(UInt64(0)) { $0 + UInt64($1) }
        let unit = size / (alignment * total) * alignment
        let end = start + (size - 1)  // inclusive
        var ranges: [AddressRange] = []
        var offset: UInt64 = 0
        for (index, weight) in weights.enumerated() {
            let base = start + offset * unit
            let share = index == weights.count - 1 ? (base <= end ? end - base + 1 : 0) : unit * UInt64(weight)
            guard share > 0 else {
                throw VMMError(description: "the \(what) (0x\(String(start, radix: 16)), \(size) bytes) is too small to give each of \(weights.count) PCI segments a \(alignment)-byte aligned share; lower --platform num_pci_segments=")
            }
            ranges.append(try AddressRange(start: base, size: share))
            offset += UInt64(weight)
        }
        return ranges
    }

    /// Every segment's windows for a VM with `weights.mmio32.count` segments whose 64-bit device
    /// area is `deviceArea`.
    static func plan(weights: (mmio32: [UInt32], mmio64: [UInt32]), deviceArea: (base: UInt64, size: UInt64)) throws -> [PCISegmentWindows] {
        let mmio32 = try split(base: X86Layout.mem32BitDevicesStart.rawValue, size: X86Layout.mem32BitDevicesSize,
                               weights: weights.mmio32, alignment: mmio32Alignment, what: "32-bit PCI device window")
        let mmio64 = try split(base: deviceArea.base, size: deviceArea.size, weights: weights.mmio64,
                               alignment: mmio64Alignment, what: "64-bit device area")
        return (0..<mmio32.count).map { index in
            let id = UInt16(index)
            return PCISegmentWindows(id: id, ecamBase: PCISegment.ecamBase(forSegment: id, windowBase: X86Layout.pciMMConfigStart.rawValue),
                                     mmio32: mmio32[index], mmio64: mmio64[index])
        }
    }
}

extension VMBuilder {
    /// The PCI segments of `windows`: each a host bridge on its own bus 0 behind its own ECAM
    /// window; segment 0 is also reachable through the legacy 0xCF8/0xCFC ports (which reach
    /// no other segment, as in Cloud Hypervisor).
    func attachPCISegments(_ windows: [PCISegmentWindows], pio: Bus, mmio: Bus, relocation: any PCIDeviceRelocation) throws -> [PCISegment] {
        var segments: [PCISegment] = []
        for window in windows {
            let segment = PCISegment(id: window.id, ecamBase: window.ecamBase, bus: PCIBus(relocation: relocation))
            try mmio.insert(segment.ecam, base: segment.ecamBase, length: segment.ecamSize)
            if window.id == 0 {
                try pio.insert(PCIConfigIO(bus: segment.bus), base: PCIConfigIO.portBase, length: PCIConfigIO.portLength)
            }
            // One segment is the machine as it always was: only several are worth a line each.
            if windows.count > 1 { logger.info("PCI segment \(window.id): ECAM at 0x\(String(window.ecamBase, radix: 16)), 32-bit window \(window.mmio32), 64-bit window \(window.mmio64)") }
            segments.append(segment)
        }
        return segments
    }
}
