import GuestMemory
import Logging
import Synchronization
import VhostUser
import VirtioDevices
import VirtioQueue

/// The descriptors a vhost-user device hands its back-end for each queue, from the transport
/// it is attached to: the ioeventfd the driver's notifications land on (kick) and the irqfd
/// of the MSI-X vector the driver chose for the queue (call).
struct VhostUserNotifiers: Sendable {
    /// The kick eventfd of a queue.
    let kick: @Sendable (Int) throws -> Int32
    /// The call eventfd (irqfd) of a queue, or `nil` when the driver gave it no MSI-X vector.
    let call: @Sendable (Int) -> Int32?
}

/// A virtio-fs device (type 26) served by a vhost-user back-end (virtiofsd), as Cloud
/// Hypervisor's `vhost_user::Fs`: the VMM owns the PCI function and the configuration space
/// (the tag and the request queue count); the back-end maps guest memory and serves the
/// queues, woken by the kick eventfds and interrupting the guest through the irqfds.
///
/// Activation (the driver's DRIVER_OK) and reset run the vhost-user exchanges on the vCPU
/// thread that wrote the status. Any failure of the back-end (a refusal, a malformed reply,
/// a closed socket) fails that step with ``VirtioDeviceError/backend(_:)``: the transport
/// marks the device `DEVICE_NEEDS_RESET` and the VM goes on.
final class VhostUserFsDevice: VirtioDevice {
    /// The virtio features this front-end can pass on (Cloud Hypervisor offers these and a few
    /// it can handle besides): indirect descriptors, event index, VERSION_1, and the vhost-user
    /// protocol-features bit, which never reaches the guest.
    static let offeredFeatures: UInt64 = VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex | VirtioFeature.version1
        | vhostUserProtocolFeaturesBit
    /// The protocol features asked for: several queues and acknowledged requests.
    static let offeredProtocolFeatures: VhostUserProtocolFeatures = [.multiQueue, .replyAck]
    /// The size of `struct virtio_fs_config`'s tag.
    static let tagLength = 36

    let deviceType = VirtioDeviceType.fs
    let features: UInt64
    let queueMaxSizes: [UInt16]
    /// The connection to the back-end.
    let frontend: VhostUserFrontend
    /// What negotiation gave (the protocol-features bit included when both sides have it).
    let negotiatedFeatures: UInt64
    let protocolFeatures: VhostUserProtocolFeatures
    /// The socket path, for messages.
    let socket: String
    let logger: Logger
    private let config: [UInt8]

    private struct State {
        var driverFeatures: UInt64 = 0
        var notifiers: VhostUserNotifiers?
        /// The queues handed to the back-end since the last activation.
        var started: [Int] = []
    }
    private let state = Mutex(State())

    /// Connects to the back-end at `config.socket` (retrying for up to 60 s, as Cloud
    /// Hypervisor does), negotiates features, and checks that it serves the hiprio queue
    /// and `num_queues` request queues.
    convenience init(config: FsConfig, logger: Logger, connectTimeoutMilliseconds: Int = 60_000) throws {
        let channel: UnixVhostUserChannel
        do {
            channel = try UnixVhostUserChannel.connect(path: config.socket, timeoutMilliseconds: connectTimeoutMilliseconds)
        } catch {
            throw ConfigError(option: "--fs", "cannot connect to the vhost-user back-end at socket=\(config.socket): \(error)")
        }
        try self.init(config: config, frontend: VhostUserFrontend(channel: channel), logger: logger)
    }

    /// A device over an established front-end (the tests give a replayed back-end).
    init(config: FsConfig, frontend: VhostUserFrontend, logger: Logger) throws {
        let queueCount = 1 + Int(config.numQueues)
        let negotiated: (features: UInt64, protocolFeatures: VhostUserProtocolFeatures)
        do {
            negotiated = try frontend.negotiate(features: Self.offeredFeatures, protocolFeatures: Self.offeredProtocolFeatures)
            // Without MQ a back-end serves Cloud Hypervisor's default of 2 queues.
            let served = negotiated.protocolFeatures.contains(.multiQueue) ? try frontend.getQueueNum() : 2
            guard UInt64(queueCount) <= served else { throw VhostUserError.tooManyQueues(requested: queueCount, backend: served) }
        } catch {
            throw ConfigError(option: "--fs", "the vhost-user back-end at socket=\(config.socket) cannot serve the device: \(error)")
        }
        guard negotiated.features & VirtioFeature.version1 != 0 else {
            throw ConfigError(option: "--fs", "the vhost-user back-end at socket=\(config.socket) does not offer VIRTIO_F_VERSION_1")
        }
        self.frontend = frontend
        self.negotiatedFeatures = negotiated.features
        self.protocolFeatures = negotiated.protocolFeatures
        self.features = negotiated.features & ~vhostUserProtocolFeaturesBit
        self.queueMaxSizes = Array(repeating: config.queueSize, count: queueCount)
        self.socket = config.socket
        self.logger = logger
        self.config = Self.configSpace(tag: config.tag, requestQueues: UInt32(config.numQueues))
    }

    /// `struct virtio_fs_config`: the tag, NUL-padded to 36 bytes, and the request queue count.
    static func configSpace(tag: String, requestQueues: UInt32) -> [UInt8] {
        var bytes = Array(tag.utf8.prefix(tagLength))
        bytes += [UInt8](repeating: 0, count: tagLength - bytes.count)
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: requestQueues >> UInt32(shift))) }
        return bytes
    }

    /// Gives the device its transport's descriptors (once the transport exists).
    func setNotifiers(_ notifiers: VhostUserNotifiers) {
        state.withLock { $0.notifiers = notifiers }
    }

    func readConfig(offset: UInt64, size: Int) -> UInt64 {
        guard offset < UInt64(config.count) else { return 0 }
        var value: UInt64 = 0
        for index in (0..<size).reversed() where Int(offset) + index < config.count {
            value = value << 8 | UInt64(config[Int(offset) + index])
        }
        return value
    }

    func acknowledgeFeatures(_ features: UInt64) {
        state.withLock { $0.driverFeatures = features }
    }

    /// Hands the enabled queues to the back-end (Cloud Hypervisor's `setup_vhost_user`):
    /// features, the memory table, then per queue its size, rings, base, call and kick
    /// eventfds, and last, with protocol features, enables them.
    func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        let (driverFeatures, notifiers) = state.withLock { ($0.driverFeatures, $0.notifiers) }
        guard let notifiers else { throw .backend("the virtio-fs device is not attached to a transport") }
        var started: [Int] = []
        do {
            try frontend.setFeatures(driverFeatures | (negotiatedFeatures & vhostUserProtocolFeaturesBit))
            let (regions, descriptors) = try Self.memoryTable(memory)
            try frontend.setMemTable(regions, descriptors: descriptors)
            for (index, queue) in queues.enumerated() where queue.isReady {
                let queueIndex = UInt32(index)
                try frontend.setVringNum(index: queueIndex, size: UInt32(queue.size))
                let size = UInt64(queue.size)
                try frontend.setVringAddr(VhostUserVringAddress(
                    index: queueIndex,
                    descriptorTable: try Self.hostAddress(memory, queue.descriptorTable, length: 16 * size, what: "descriptor table", queue: index),
                    usedRing: try Self.hostAddress(memory, queue.usedRing, length: 6 + 8 * size, what: "used ring", queue: index),
                    availableRing: try Self.hostAddress(memory, queue.availableRing, length: 6 + 2 * size, what: "available ring", queue: index)))
                let base = try queue.availableIndex(in: memory)
                try frontend.setVringBase(index: queueIndex, base: UInt32(base))
                guard let call = notifiers.call(index) else {
                    throw VirtioDeviceError.backend("queue \(index) has no MSI-X vector: a vhost-user back-end interrupts the guest through MSI-X only")
                }
                try frontend.setVringCall(index: UInt8(truncatingIfNeeded: index), descriptor: call)
                try frontend.setVringKick(index: UInt8(truncatingIfNeeded: index), descriptor: try notifiers.kick(index))
                started.append(index)
            }
            if negotiatedFeatures & vhostUserProtocolFeaturesBit != 0 {
                for index in started { try frontend.setVringEnable(index: UInt32(index), enabled: true) }
            }
        } catch {
            // The queues handed over so far are stopped by the driver's reset.
            state.withLock { $0.started = started }
            if let error = error as? VirtioDeviceError {
                logger.error("virtio-fs (\(socket)): \(error)")
                throw error
            }
            logger.error("virtio-fs (\(socket)): the back-end failed during activation: \(error)")
            throw .backend("the vhost-user back-end at \(socket) failed during activation: \(error)")
        }
        state.withLock { $0.started = started }
        logger.info("virtio-fs (\(socket)): \(started.count) queue(s) handed to the back-end")
    }

    /// Stops the back-end's queues (Cloud Hypervisor's `reset_vhost_user`): each is disabled
    /// and `GET_VRING_BASE` stops it. A back-end that fails here is logged; the driver's reset
    /// goes on.
    func reset() {
        let started = state.withLock { state -> [Int] in
            defer { state.started = []; state.driverFeatures = 0 }
            return state.started
        }
        for index in started {
            do {
                if negotiatedFeatures & vhostUserProtocolFeaturesBit != 0 {
                    try frontend.setVringEnable(index: UInt32(index), enabled: false)
                }
                _ = try frontend.getVringBase(index: UInt32(index))
            } catch {
                logger.error("virtio-fs (\(socket)): stopping queue \(index): \(error)")
            }
        }
    }

    /// The back-end serves the queues; a notification that reached the VMM was already passed
    /// to the kick eventfd.
    func processQueue(_ index: Int) throws(VirtioDeviceError) {}

    /// The memory table: each guest RAM region with its memory file, offset and host address.
    static func memoryTable(_ memory: GuestMemory) throws(VirtioDeviceError) -> ([VhostUserMemoryRegion], [Int32]) {
        var regions: [VhostUserMemoryRegion] = []
        var descriptors: [Int32] = []
        for region in memory.regions {
            guard let file = region.mapping.file else {
                throw .backend("guest memory at 0x\(String(region.start.rawValue, radix: 16)) is not in a memory file, so the back-end cannot map it: give --memory shared=on")
            }
            regions.append(VhostUserMemoryRegion(guestPhysicalAddress: region.start.rawValue, size: region.size,
                                                 userAddress: UInt64(UInt(bitPattern: region.hostAddress)),
                                                 mmapOffset: UInt64(region.mapping.fileOffset)))
            descriptors.append(file.rawValue)
        }
        return (regions, descriptors)
    }

    /// The VMM's virtual address of `length` bytes at `address`, which must lie in one region.
    static func hostAddress(_ memory: GuestMemory, _ address: GuestAddress, length: UInt64, what: String, queue: Int) throws(VirtioDeviceError) -> UInt64 {
        guard let region = memory.region(containing: address), let offset = region.offset(of: address), offset + length <= region.size else {
            throw .backend("queue \(queue)'s \(what) at 0x\(String(address.rawValue, radix: 16)) is not inside one guest memory region")
        }
        return UInt64(UInt(bitPattern: region.hostAddress)) + offset
    }
}
