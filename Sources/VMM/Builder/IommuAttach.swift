import ACPITables
import VirtioDevices

/// The VM's virtio-iommu and the VIOT that describes it.
struct AttachedIommu {
    let device: VirtioIommu
    let attachment: VirtioPCIAttachment
    let address: String
    let viot: VIOT
}

extension VMBuilder {
    /// Cloud Hypervisor's id for the virtio-iommu (`IOMMU_DEVICE_NAME`).
    static let iommuDeviceID = "__iommu"
    /// The MSI doorbell range the IOMMU reserves in every endpoint's IOVA space (PROBE's
    /// `RESV_MEM_T_MSI`): the x86-64 local APIC's MSI window.
    static let msiIOVARange: ClosedRange<UInt64> = 0xfee0_0000...0xfeef_ffff

    /// Attaches the virtio-iommu (`__iommu`) on `context`'s segment (0), over `mapping`, and
    /// builds the VIOT: the IOMMU's function, then each endpoint in `endpoints` (the devices
    /// with `iommu=on`, in the order they were attached) followed by every slot of each
    /// `iommu_segments` segment not listed yet, as Cloud Hypervisor's `add_pci_devices`.
    /// `iommu_address_width` below 64 limits the IOVAs (`VIRTIO_IOMMU_F_INPUT_RANGE`).
    func attachVirtioIommu(_ config: VMConfig, mapping: IommuMapping, endpoints: [UInt32], context: VirtioAttachContext,
                           bars: inout BARWindows) throws -> AttachedIommu {
        let width = config.platform?.iommuAddressWidthBits ?? VMConfig.maxIOMMUAddressWidthBits
        let device = VirtioIommu(mapping: mapping, msiRange: Self.msiIOVARange, addressWidthBits: width)
        let (attachment, address) = try attachVirtio(device, id: Self.iommuDeviceID, context: context, bars: &bars)
        var attached = endpoints
        for segment in config.iommuSegments {
            for slot in 0..<UInt32(32) {
                let endpoint = UInt32(segment) << 16 | slot << 3
                if !attached.contains(endpoint) { attached.append(endpoint) }
            }
        }
        let functions = attached.map { VIOT.Function(segment: UInt16($0 >> 16), bdf: UInt16(truncatingIfNeeded: $0)) }
        let viot = VIOT(iommu: VIOT.Function(segment: context.segment.id, bdf: UInt16(attachment.slot) << 3), endpoints: functions)
        logger.info("\(Self.iommuDeviceID): virtio-iommu at \(address) for \(functions.count) endpoint(s)")
        return AttachedIommu(device: device, attachment: attachment, address: address, viot: viot)
    }
}

extension DeviceRegistration {
    /// The virtio-iommu's entry. Its state (domains, mappings, endpoints) is restored before
    /// every other device's, since the queues of the devices behind it translate their ring
    /// addresses through it when they are restored.
    static func iommu(_ iommu: AttachedIommu, mover: BARMover) -> ManagedDevice {
        var entry = virtio(id: VMBuilder.iommuDeviceID, kind: "virtio-iommu", attachment: iommu.attachment, address: iommu.address, mover: mover)
        entry.restoresFirst = true
        return entry
    }
}
