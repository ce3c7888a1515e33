import HostSystem
import VMAllocator
import VirtioDevices

/// The virtio-vsock device of a running VM and its host side.
struct AttachedVsock: Sendable {
    let id: String
    let device: VirtioVsock
    let attachment: VirtioPCIAttachment
    let address: String
    let backend: UnixVsockBackend
    let watcher: EventLoopVsockWatcher

    /// Closes every connection and removes the socket file (the VM is going away).
    func close() {
        device.close()
        watcher.detach()
        backend.removeSocketFile()
    }
}

extension VMBuilder {
    /// Attaches the virtio-vsock device (`--vsock cid=,socket=`): Cloud Hypervisor's hybrid
    /// vsock, listening at `socket` for host clients and connecting guest requests for port
    /// P to `socket_P`, its descriptors watched on the event loop.
    func attachVirtioVsock(_ config: VsockConfig, id: String, context: VirtioAttachContext,
                           bars: inout BARWindows) throws -> AttachedVsock {
        let backend: UnixVsockBackend
        do {
            backend = try UnixVsockBackend(path: config.socket)
        } catch {
            throw ConfigError(option: "--vsock", "cannot listen at socket=\(config.socket): \(error)")
        }
        let watcher = EventLoopVsockWatcher(events: context.events, logger: logger)
        let device = VirtioVsock(cid: UInt64(config.cid), backend: backend, watcher: watcher)
        watcher.serve(device)
        let (attachment, address) = try attachVirtio(device, id: id, context: context, bars: &bars, slot: config.pci.pciDeviceID, behindIOMMU: config.pci.iommu)
        logger.info("\(id): guest cid \(config.cid), host socket \(config.socket)")
        return AttachedVsock(id: id, device: device, attachment: attachment, address: address, backend: backend, watcher: watcher)
    }
}
