// The virtual IOMMU in the configuration: `iommu=on` on a device, `--platform iommu_segments=`
// and `iommu_address_width=`, checked as Cloud Hypervisor's `VmConfig::validate` checks them.

extension VMConfig {
    /// The widest IOVA space the virtual IOMMU takes (Cloud Hypervisor's `MAX_IOMMU_ADDRESS_WIDTH_BITS`).
    public static let maxIOMMUAddressWidthBits: UInt8 = 64

    /// Whether the VM gets a virtio-iommu (`__iommu`): the top-level `iommu`, any device with
    /// `iommu=on`, or `--platform iommu_segments=` given (even empty), as Cloud Hypervisor's
    /// `VmConfig::validate` sets its `iommu`.
    public var hasVirtualIOMMU: Bool {
        iommu || platform?.iommuSegments != nil || iommuPlacements.contains { $0.iommu }
    }

    /// The PCI segments whose every slot sits behind the virtual IOMMU (`iommu_segments`).
    public var iommuSegments: [UInt16] { platform?.iommuSegments ?? [] }

    /// Every PCI device's option, segment and `iommu=` flag, with whether it can be placed
    /// behind the IOMMU (vhost-user devices cannot: their back-end reads guest memory itself).
    var iommuPlacements: [(option: String, segment: UInt16, iommu: Bool, supported: Bool)] {
        var list: [(option: String, segment: UInt16, iommu: Bool, supported: Bool)] = []
        for disk in disks ?? [] { list.append(("--disk", disk.pciSegment, disk.iommu, !disk.vhostUser)) }
        for device in net ?? [] { list.append(("--net", device.pciSegment, device.iommu, !device.vhostUser)) }
        for device in fs ?? [] { list.append(("--fs", device.pci.pciSegment, device.pci.iommu, false)) }
        for device in pmem ?? [] { list.append(("--pmem", device.pci.pciSegment, device.pci.iommu, true)) }
        list.append(("--rng", rng.pci.pciSegment, rng.pci.iommu, true))
        list.append(("--console", console.pci.pciSegment, console.pci.iommu, true))
        if let balloon { list.append(("--balloon", balloon.pci.pciSegment, balloon.pci.iommu, true)) }
        if let vsock { list.append(("--vsock", vsock.pci.pciSegment, vsock.pci.iommu, true)) }
        return list
    }

    /// Refuses an `iommu_segments` entry at or above the segment count, an address width
    /// above 64 bits, `iommu=on` on a device that cannot be behind an IOMMU (vhost-user
    /// disks and NICs, virtio-fs), and a device on an IOMMU segment without `iommu=on`,
    /// with Cloud Hypervisor's sentences.
    func validateIOMMU() throws(ConfigError) {
        if let platform {
            for segment in platform.iommuSegments ?? [] where segment >= pciSegmentCount {
                throw ConfigError(option: "--platform", "Invalid PCI segment id: \(segment) (iommu_segments names segment \(segment), but the VM has \(pciSegmentCount) PCI segment(s); raise num_pci_segments=)")
            }
            guard platform.iommuAddressWidthBits <= Self.maxIOMMUAddressWidthBits else {
                throw ConfigError(option: "--platform", "IOMMU address width in bits (\(platform.iommuAddressWidthBits)) should be less than or equal to \(Self.maxIOMMUAddressWidthBits)")
            }
        }
        let segments = iommuSegments
        for placement in iommuPlacements {
            if placement.iommu, !placement.supported {
                throw ConfigError(option: placement.option, "Device does not support being placed behind IOMMU (iommu=on is refused for vhost-user devices and virtio-fs)")
            }
            if segments.contains(placement.segment), !placement.iommu {
                throw ConfigError(option: placement.option, "Device is on an IOMMU PCI segment (\(placement.segment)) but not placed behind IOMMU (add iommu=on)")
            }
        }
    }
}
