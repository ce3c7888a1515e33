import VMAllocator
import VirtioDevices

extension VMBuilder {
    /// Attaches the virtio-balloon device (`--balloon size=,deflate_on_oom=,free_page_reporting=`)
    /// as Cloud Hypervisor does: `num_pages` starts at `size`, and pages the guest gives up go
    /// back to the host (punched out of the memory files with `shared=on`, `MADV_DONTNEED`).
    func attachVirtioBalloon(_ config: BalloonConfig, id: String, context: VirtioAttachContext,
                             bars: inout BARWindows) throws -> (VirtioPCIAttachment, String, VirtioBalloon) {
        let options = VirtioBalloon.Options(size: config.size, deflateOnOOM: config.deflateOnOOM, freePageReporting: config.freePageReporting)
        let balloon = VirtioBalloon(options: options)
        let (attachment, address) = try attachVirtio(balloon, id: id, context: context, bars: &bars, slot: config.pci.pciDeviceID, behindIOMMU: config.pci.iommu)
        logger.info("\(id): balloon of \(config.size) bytes\(config.deflateOnOOM ? ", deflate on OOM" : "")\(config.freePageReporting ? ", free page reporting" : "")")
        return (attachment, address, balloon)
    }
}
