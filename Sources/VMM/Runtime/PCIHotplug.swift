import BlockStorage
import Devices
import HostSystem
import VirtioDevices

/// Hot-adding and hot-removing virtio-pci devices on a running VM, as Cloud Hypervisor's
/// `DeviceManager::hotplug_*` and `remove_device` do: the device is built by the same
/// `attach…` function as at boot, on PCI segment 0, registered in the device manager, and the
/// guest is told through the PCI hotplug registers (`PCIU`/`PCID`) and the Generic Event
/// Device's PCI cause. A removal only asks the guest; the device is released when the guest
/// ejects it (`B0EJ`, see ``DeviceManager/eject(segment:slot:)``).
extension BuiltVM {
    /// The support hot-adding needs, or a ``VMMError`` when the machine has none.
    private func hotplugSupport() throws -> PCIHotplugSupport {
        guard let support = pciHotplug else { throw VMMError(description: "this machine was built without PCI hotplug") }
        return support
    }

    /// Tells the guest that a device appeared at `bdf`'s slot.
    private func announce(insertedAt slot: Int, support: PCIHotplugSupport) throws {
        support.controller.markInserted(segment: 0, slot: UInt8(slot))
        try support.ged.notify(.pciHotplug)
    }

    /// Hot-adds a virtio-blk disk; returns its PCI slot and address.
    func hotAddDisk(_ config: DiskConfig, id: String) throws -> (slot: Int, bdf: String) {
        let support = try hotplugSupport()
        if config.vhostUser { return try hotAddVhostUserBlock(config, id: id, support: support) }
        var attached: (VirtioPCIAttachment, String, VirtioBlock, any BlockBackend)?
        try deviceManager.withAllocators { bars in
            attached = try support.builder.attachVirtioBlock(config, id: id, context: support.context, bars: &bars, rateLimiter: nil)
        }
        guard let (attachment, address, block, backend) = attached else { throw VMMError(description: "\(id) was not attached") }
        try deviceManager.register(VMBuilder.blockEntry(id: id, attachment: attachment, address: address, block: block, backend: backend,
                                                        context: support.context))
        try announce(insertedAt: attachment.slot, support: support)
        return (attachment.slot, address)
    }

    /// Hot-adds a vhost-user-blk disk (connecting to its back-end); returns its PCI slot and address.
    private func hotAddVhostUserBlock(_ config: DiskConfig, id: String, support: PCIHotplugSupport) throws -> (slot: Int, bdf: String) {
        var attached: AttachedVhostUserBlock?
        try deviceManager.withAllocators { bars in
            attached = try support.builder.attachVhostUserBlock(config, id: id, context: support.context, bars: &bars)
        }
        guard let attached else { throw VMMError(description: "\(id) was not attached") }
        let entry = DeviceRegistration.vhostUserBlock(attached, socket: config.vhostSocket ?? "", mover: support.context.mover)
        try deviceManager.register(DeviceRegistration.removable(entry, attachment: attached.attachment, context: support.context) { _ in
            attached.device.reset()
            attached.device.common.disconnect()
        })
        try announce(insertedAt: attached.attachment.slot, support: support)
        return (attached.attachment.slot, attached.address)
    }

    /// Hot-adds a vhost-user-net NIC (connecting to its back-end, or waiting for it with
    /// `vhost_mode=server`); returns its PCI slot and address.
    private func hotAddVhostUserNet(_ config: NetConfig, id: String, support: PCIHotplugSupport) throws -> (slot: Int, bdf: String) {
        var attached: AttachedVhostUserNet?
        try deviceManager.withAllocators { bars in
            attached = try support.builder.attachVhostUserNet(config, id: id, context: support.context, bars: &bars)
        }
        guard let attached else { throw VMMError(description: "\(id) was not attached") }
        let entry = DeviceRegistration.vhostUserNet(attached, socket: config.vhostSocket ?? "", mover: support.context.mover)
        try deviceManager.register(DeviceRegistration.removable(entry, attachment: attached.attachment, context: support.context) { _ in
            attached.device.reset()
            attached.device.common.disconnect()
        })
        try announce(insertedAt: attached.attachment.slot, support: support)
        return (attached.attachment.slot, attached.address)
    }

    /// Hot-adds a virtio-net device on its TAP (or a vhost-user-net one on its back-end);
    /// returns its PCI slot and address.
    func hotAddNet(_ config: NetConfig, id: String) throws -> (slot: Int, bdf: String) {
        let support = try hotplugSupport()
        if config.vhostUser { return try hotAddVhostUserNet(config, id: id, support: support) }
        var attached: AttachedNet?
        try deviceManager.withAllocators { bars in
            attached = try support.builder.attachVirtioNet(config, id: id, context: support.context, bars: &bars)
        }
        guard let attached else { throw VMMError(description: "\(id) was not attached") }
        let device = attached.device
        let entry = DeviceRegistration.virtio(id: id, kind: "virtio-net", attachment: attached.attachment, address: attached.address,
                                              mover: support.context.mover, counters: { device.counters.dictionary })
        try deviceManager.register(DeviceRegistration.removable(entry, attachment: attached.attachment, context: support.context,
                                                                release: DeviceRegistration.netRelease(attached, events: support.context.events)))
        try announce(insertedAt: attached.attachment.slot, support: support)
        return (attached.attachment.slot, attached.address)
    }

    /// Hot-adds a virtio-pmem device; returns its PCI slot and address.
    func hotAddPmem(_ config: PmemConfig, id: String) throws -> (slot: Int, bdf: String) {
        let support = try hotplugSupport()
        var attached: AttachedPmem?
        try deviceManager.withAllocators { bars in
            attached = try support.builder.attachVirtioPmem(config, id: id, context: support.context, bars: &bars)
        }
        guard let attached else { throw VMMError(description: "\(id) was not attached") }
        var entry = DeviceRegistration.pmem(attached, file: config.file, discardWrites: config.discardWrites, mover: support.context.mover)
        entry.onStop = { attached.close() }
        try deviceManager.register(DeviceRegistration.removable(entry, attachment: attached.attachment, context: support.context,
                                                                release: DeviceRegistration.pmemRelease(attached)))
        try announce(insertedAt: attached.attachment.slot, support: support)
        return (attached.attachment.slot, attached.address)
    }

    /// Hot-adds a virtio-fs device (connecting to its back-end, as Cloud Hypervisor's
    /// `add_fs`); returns its PCI slot and address.
    func hotAddFs(_ config: FsConfig, id: String) throws -> (slot: Int, bdf: String) {
        let support = try hotplugSupport()
        var attached: AttachedFs?
        try deviceManager.withAllocators { bars in
            attached = try support.builder.attachVirtioFs(config, id: id, context: support.context, bars: &bars)
        }
        guard let attached else { throw VMMError(description: "\(id) was not attached") }
        try deviceManager.register(DeviceRegistration.removableFs(attached, socket: config.socket, context: support.context))
        try announce(insertedAt: attached.attachment.slot, support: support)
        return (attached.attachment.slot, attached.address)
    }

    /// Hot-adds the virtio-vsock device; returns its PCI slot and address.
    func hotAddVsock(_ config: VsockConfig, id: String) throws -> (slot: Int, bdf: String) {
        let support = try hotplugSupport()
        var attached: AttachedVsock?
        try deviceManager.withAllocators { bars in
            attached = try support.builder.attachVirtioVsock(config, id: id, context: support.context, bars: &bars)
        }
        guard let attached else { throw VMMError(description: "\(id) was not attached") }
        var entry = DeviceRegistration.virtio(id: id, kind: "virtio-vsock", attachment: attached.attachment, address: attached.address,
                                              mover: support.context.mover)
        entry.onStop = { attached.close() }
        try deviceManager.register(DeviceRegistration.removable(entry, attachment: attached.attachment, context: support.context) { _ in
            attached.close()
        })
        try announce(insertedAt: attached.attachment.slot, support: support)
        return (attached.attachment.slot, attached.address)
    }

    /// Asks the guest to release the device `id` (Cloud Hypervisor's `PCID` bit and the GED's
    /// PCI cause); it is released when the guest ejects it.
    ///
    /// - Throws: a ``VMMError`` when no removable device has that id.
    func requestRemoval(id: String) throws {
        let support = try hotplugSupport()
        guard let device = deviceManager.device(id: id), device.unplug != nil, let slot = device.resources.pciSlot else {
            throw VMMError(description: "device \(id) cannot be removed (only disks, network, pmem, virtio-fs and vsock devices can)")
        }
        support.controller.markRemoving(segment: 0, slot: UInt8(slot))
        try support.ged.notify(.pciHotplug)
    }
}

extension DeviceRegistration {
    /// A virtio-fs function that the guest's ejection releases: its PCI resources, then its
    /// back-end's queues are stopped and the connection closed (virtiofsd then exits).
    static func removableFs(_ fs: AttachedFs, socket: String, context: VirtioAttachContext) -> ManagedDevice {
        removable(DeviceRegistration.fs(fs, socket: socket, mover: context.mover), attachment: fs.attachment, context: context) { _ in
            fs.device.reset()
            fs.device.common.disconnect()
        }
    }

    /// What a virtio-net device lets go of once ejected: the device stops, its TAP queues
    /// leave the event loop and close, so the interface (unless persistent) is gone before the
    /// device leaves `vm.info`, and a client may create one of the same name at once.
    static func netRelease(_ net: AttachedNet, events: EventManager) -> @Sendable (DeviceManager) -> Void {
        let queues = net.tap.queues.map(\.rawValue)
        return { _ in
            net.device.reset()
            for fd in queues { try? events.remove(fd) }
            net.tap.close()
        }
    }

    /// What a virtio-pmem device lets go of once ejected: its memory slot and its range of
    /// the 64-bit device area.
    static func pmemRelease(_ pmem: AttachedPmem) -> @Sendable (DeviceManager) -> Void {
        let range = pmem.range
        return { deviceManager in
            pmem.close()
            deviceManager.freeMMIO64(range)
        }
    }
}
