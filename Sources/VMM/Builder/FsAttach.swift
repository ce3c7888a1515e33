import VMAllocator
import VirtioDevices

/// A virtio-fs device of a running VM and its back-end connection.
struct AttachedFs {
    let id: String
    let device: VhostUserFsDevice
    let attachment: VirtioPCIAttachment
    let address: String
}

extension VMBuilder {
    /// Attaches one virtio-fs device (`--fs tag=,socket=,num_queues=,queue_size=`), as Cloud
    /// Hypervisor does: the VMM connects to the back-end and negotiates, puts the function on
    /// PCI, and leaves the queues to the back-end: each queue's notify ioeventfd is its kick
    /// eventfd (the event loop does not watch it), and the irqfd of the MSI-X vector the
    /// driver picks for it is its call eventfd.
    func attachVirtioFs(_ config: FsConfig, id: String, context: VirtioAttachContext, bars: inout AddressAllocator) throws -> AttachedFs {
        let device = try VhostUserFsDevice(config: config, logger: logger)
        let (attachment, address) = try attachVirtio(device, context: context, bars: &bars, servedElsewhere: true)
        let routing = attachment.routing
        let transport = attachment.transport
        device.setNotifiers(VhostUserNotifiers(
            kick: { [weak attachment] queue in
                guard let attachment else { throw VMMError(description: "the virtio-fs function is gone") }
                return try attachment.kickEvent(queue: queue).rawValue
            },
            call: { [weak transport] queue in
                guard let vector = transport?.queueVector(queue), routing.vectors.indices.contains(vector) else { return nil }
                return routing.vectors[vector].event.rawValue
            }))
        logger.info("\(id): tag \(config.tag), back-end \(config.socket), \(config.numQueues) request queue(s) of \(config.queueSize)")
        return AttachedFs(id: id, device: device, attachment: attachment, address: address)
    }
}
