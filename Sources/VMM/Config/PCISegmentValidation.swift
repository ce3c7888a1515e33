// PCI segments in the configuration: `--platform num_pci_segments=`, `--pci-segment` and each
// PCI device's `pci_segment=`, checked as Cloud Hypervisor's `VmConfig::validate` checks them
// (its error sentences first, then which option and what is accepted).

extension VMConfig {
    /// The most PCI segments a VM may have (Cloud Hypervisor's `MAX_NUM_PCI_SEGMENTS` on x86-64).
    public static let maxPCISegments: UInt16 = 96

    /// The VM's PCI segment count: `platform.num_pci_segments`, 1 without `--platform`.
    public var pciSegmentCount: UInt16 { platform?.numPCISegments ?? 1 }

    /// The PCI segment of every PCI device in the configuration, with the option that placed it,
    /// in the order Cloud Hypervisor validates them.
    var pciDevicePlacements: [(option: String, segment: UInt16)] {
        var placements: [(option: String, segment: UInt16)] = []
        for disk in disks ?? [] { placements.append(("--disk", disk.pciSegment)) }
        for device in net ?? [] { placements.append(("--net", device.pciSegment)) }
        for device in fs ?? [] { placements.append(("--fs", device.pci.pciSegment)) }
        for device in genericVhostUser ?? [] { placements.append(("--generic-vhost-user", device.pci.pciSegment)) }
        for device in pmem ?? [] { placements.append(("--pmem", device.pci.pciSegment)) }
        placements.append(("--rng", rng.pci.pciSegment))
        if let rtc { placements.append(("--rtc", rtc.pci.pciSegment)) }
        placements.append(("--console", console.pci.pciSegment))
        for device in devices ?? [] { placements.append(("--device", device.pci.pciSegment)) }
        for device in userDevices ?? [] { placements.append(("--user-device", device.pci.pciSegment)) }
        for device in vdpa ?? [] { placements.append(("--vdpa", device.pci.pciSegment)) }
        if let balloon { placements.append(("--balloon", balloon.pci.pciSegment)) }
        if let vsock { placements.append(("--vsock", vsock.pci.pciSegment)) }
        return placements
    }

    /// Refuses a segment count outside 1...96 (Cloud Hypervisor's `InvalidNumPciSegments`), a
    /// `--pci-segment` or device `pci_segment=` at or above the count (`InvalidPciSegment`) and an
    /// aperture weight of 0 (`InvalidPciSegmentApertureWeight`).
    func validatePCISegments() throws(ConfigError) {
        let count = pciSegmentCount
        guard (1...Self.maxPCISegments).contains(count) else {
            throw ConfigError(option: "--platform", "Number of PCI segments (\(count)) not in range of 1 to \(Self.maxPCISegments): give num_pci_segments= from 1 to \(Self.maxPCISegments)")
        }
        func beyond(_ segment: UInt16, _ option: String) -> ConfigError {
            ConfigError(option: option, "Invalid PCI segment id: \(segment) (pci_segment=\(segment), but the VM has \(count) PCI segment(s), 0 to \(count - 1); raise --platform num_pci_segments=)")
        }
        for segment in pciSegments ?? [] {
            guard segment.pciSegment < count else { throw beyond(segment.pciSegment, "--pci-segment") }
            for weight in [segment.mmio32ApertureWeight, segment.mmio64ApertureWeight] where weight == 0 {
                throw ConfigError(option: "--pci-segment", "Invalid PCI segment aperture weight: 0 (mmio32_aperture_weight= and mmio64_aperture_weight= must be at least 1)")
            }
        }
        for placement in pciDevicePlacements where placement.segment >= count { throw beyond(placement.segment, placement.option) }
    }

    /// The weights that share the 32-bit and 64-bit MMIO windows between the segments: 1 each,
    /// or what `--pci-segment` gives (a later entry for a segment wins, as in Cloud Hypervisor).
    public var pciApertureWeights: (mmio32: [UInt32], mmio64: [UInt32]) {
        var mmio32 = [UInt32](repeating: 1, count: Int(pciSegmentCount))
        var mmio64 = mmio32
        for segment in pciSegments ?? [] where Int(segment.pciSegment) < mmio32.count {
            mmio32[Int(segment.pciSegment)] = segment.mmio32ApertureWeight
            mmio64[Int(segment.pciSegment)] = segment.mmio64ApertureWeight
        }
        return (mmio32, mmio64)
    }
}
