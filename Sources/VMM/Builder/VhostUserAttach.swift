import VMAllocator
import VirtioDevices

/// A virtio-fs device of a running VM and its back-end connection.
struct AttachedFs {
    let id: String
    let device: VhostUserFsDevice
    let attachment: VirtioPCIAttachment
    let address: String
}

/// A vhost-user-blk disk of a running VM and its back-end connection.
struct AttachedVhostUserBlock {
    let id: String
    let device: VhostUserBlockDevice
    let attachment: VirtioPCIAttachment
    let address: String
}

/// A vhost-user-net NIC of a running VM and its back-end connection.
struct AttachedVhostUserNet {
    let id: String
    let device: VhostUserNetDevice
    let attachment: VirtioPCIAttachment
    let address: String
}

extension VMBuilder {
    /// Attaches one virtio-fs device (`--fs tag=,socket=,num_queues=,queue_size=`), as Cloud
    /// Hypervisor's `make_virtio_fs_device`: the VMM connects to the back-end and negotiates,
    /// puts the function on PCI (at `pci_device_id` when the configuration pins it), and
    /// leaves the queues to the back-end.
    func attachVirtioFs(_ config: FsConfig, id: String, context: VirtioAttachContext, bars: inout BARWindows) throws -> AttachedFs {
        let device = try VhostUserFsDevice(config: config, logger: logger, kept: keptBackends?.take(socket: config.socket))
        let (attachment, address) = try attachVhostUser(device, id: id, common: device.common, context: context, bars: &bars, slot: config.pci.pciDeviceID)
        logger.info("\(id): tag \(config.tag), back-end \(config.socket), \(config.numQueues) request queue(s) of \(config.queueSize)")
        return AttachedFs(id: id, device: device, attachment: attachment, address: address)
    }

    /// Attaches one vhost-user-blk disk (`--disk vhost_user=on,socket=,num_queues=,queue_size=`),
    /// as Cloud Hypervisor's `make_virtio_block_device` with `vhost_user`: the back-end holds
    /// the image (no path, no lock, no rate limiter here), the VMM its PCI function.
    func attachVhostUserBlock(_ config: DiskConfig, id: String, context: VirtioAttachContext,
                              bars: inout BARWindows) throws -> AttachedVhostUserBlock {
        let device = try VhostUserBlockDevice(config: config, logger: logger, kept: keptBackends?.take(socket: config.vhostSocket ?? ""))
        let (attachment, address) = try attachVhostUser(device, id: id, common: device.common, context: context, bars: &bars, slot: config.pciDeviceID)
        logger.info("\(id): vhost-user-blk back-end \(config.vhostSocket ?? "?"), \(device.capacity * 512) bytes, \(config.numQueues) queue(s) of \(config.queueSize)")
        return AttachedVhostUserBlock(id: id, device: device, attachment: attachment, address: address)
    }

    /// Attaches one vhost-user-net NIC (`--net vhost_user=on,socket=,vhost_mode=`), as Cloud
    /// Hypervisor's `make_virtio_net_device` with `vhost_user`: the back-end holds the host
    /// side (no TAP, no rate limiter here) and serves the data rings; the VMM its PCI function
    /// and, when the back-end accepted one, the control queue, whose notifications the event
    /// loop serves.
    func attachVhostUserNet(_ config: NetConfig, id: String, context: VirtioAttachContext,
                            bars: inout BARWindows) throws -> AttachedVhostUserNet {
        let kept = keptBackends?.take(socket: config.vhostSocket ?? "")
        if config.vhostMode == .server, kept?.frontend == nil {
            logger.info("\(id): waiting for the vhost-user-net back-end to connect to \(config.vhostSocket ?? "?")")
        }
        let device = try VhostUserNetDevice(config: config, logger: logger, kept: kept)
        let (attachment, address) = try attachVhostUser(device, id: id, common: device.common, context: context, bars: &bars, slot: config.pciDeviceID,
                                                        servedHere: device.controlQueueIndex.map { [$0] } ?? [])
        let control = device.hasControlQueue ? ", control queue served here" : ""
        logger.info("\(id): vhost-user-net back-end \(config.vhostSocket ?? "?") (\(config.vhostMode.rawValue.lowercased())), guest MAC \(device.configuredMAC), \(device.pairs) queue pair(s) of \(config.queueSize)\(control)")
        return AttachedVhostUserNet(id: id, device: device, attachment: attachment, address: address)
    }

    /// Puts a vhost-user device on PCI with its queues served elsewhere: each queue's notify
    /// ioeventfd is its kick eventfd (the event loop does not watch it), and the irqfd of the
    /// MSI-X vector the driver picks for it is its call eventfd. The queues of `servedHere`
    /// are the VMM's: the event loop serves their notifications.
    private func attachVhostUser(_ device: any VirtioDevice, id: String, common: VhostUserCommon, context: VirtioAttachContext,
                                 bars: inout BARWindows, slot: UInt8?, servedHere: Set<Int> = []) throws -> (VirtioPCIAttachment, String) {
        let (attachment, address) = try attachVirtio(device, id: id, context: context, bars: &bars, servedElsewhere: true, servedHere: servedHere, slot: slot)
        let routing = attachment.routing
        let transport = attachment.transport
        let name = common.name
        common.setNotifiers(VhostUserNotifiers(
            kick: { [weak attachment] queue in
                guard let attachment else { throw VMMError(description: "the \(name) function is gone") }
                return try attachment.kickEvent(queue: queue)
            },
            call: { [weak transport] queue in
                guard let vector = transport?.queueVector(queue), routing.vectors.indices.contains(vector) else { return nil }
                return routing.vectors[vector].event.rawValue
            }))
        try common.watch(events: context.events)
        return (attachment, address)
    }
}
