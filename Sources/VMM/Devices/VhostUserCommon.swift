import GuestMemory
import HostSystem
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
    let kick: @Sendable (Int) throws -> EventFD
    /// The call eventfd (irqfd) of a queue, or `nil` when the driver gave it no MSI-X vector.
    let call: @Sendable (Int) -> Int32?
}

/// What every vhost-user device shares, as Cloud Hypervisor's `VhostUserCommon` and
/// `VhostUserHandle`: the connection, the negotiated features, and the hand-over of guest
/// memory and queues to the back-end on activation and their recovery on reset. The device
/// (virtio-fs, vhost-user-blk) owns its configuration space and calls in here.
///
/// Activation (the driver's DRIVER_OK) and reset run the vhost-user exchanges on the vCPU
/// thread that wrote the status. Any failure of the back-end (a refusal, a malformed reply,
/// a closed socket) fails that step with ``VirtioDeviceError/backend(_:)``: the transport
/// marks the device `DEVICE_NEEDS_RESET` and the VM goes on. A back-end that hangs up is
/// reconnected to (VhostUserReconnect.swift).
final class VhostUserCommon: Sendable {
    /// The transport features every vhost-user front-end here can pass on (Cloud Hypervisor
    /// offers these and a few it can handle besides): indirect descriptors, event index,
    /// VERSION_1, and the vhost-user protocol-features bit, which never reaches the guest.
    static let transportFeatures: UInt64 = VirtioFeature.indirectDescriptors | VirtioFeature.eventIndex | VirtioFeature.version1
        | vhostUserProtocolFeaturesBit

    /// The connection to the back-end (a new one after a reconnection).
    var frontend: VhostUserFrontend { state.withLock { $0.frontend } }
    /// What negotiation gave (the protocol-features bit included when both sides have it).
    let negotiatedFeatures: UInt64
    /// The protocol features both sides have.
    let protocolFeatures: VhostUserProtocolFeatures
    /// The socket path, for messages.
    let socket: String
    /// The device's name in messages (`virtio-fs`, `vhost-user-blk`, `vhost-user-net`).
    let name: String
    /// Features the VMM itself implements for the guest (vhost-user-net's MAC and link
    /// status): the driver may accept them, but they are never passed to the back-end.
    let frontendOnlyFeatures: UInt64
    let logger: Logger
    /// With `vhost_mode=server`, the socket the back-end connected to, which a restarted
    /// back-end connects to again; `nil` when the VMM is the client.
    let listener: UnixSocket?

    struct State {
        var frontend: VhostUserFrontend
        var driverFeatures: UInt64 = 0
        var notifiers: VhostUserNotifiers?
        /// The queues handed to the back-end since the last activation.
        var started: [Int] = []
        /// What the driver's last activation handed over (until its reset), for a
        /// reconnection to hand it to the new back-end.
        var active: ActiveQueues?
        /// Where hang-ups and reconnection attempts are watched (``watch(events:)``).
        var events: EventManager?
        /// The descriptor registered with `events`: the connection, the retry timer or the listener.
        var watched: Int32?
        /// The retry timer while the back-end is away (the VMM as client).
        var retry: TimerFD?
        /// Retry ticks since the back-end went away.
        var retries = 0
        /// Whether the listener (`vhost_mode=server`) is watched for the back-end's return.
        var listening = false
        /// Where the queues resume once the back-end is back: the used-ring indexes when it
        /// hung up (or when the driver activated the device while it was away).
        var resumeBases: [Int: UInt16]?
        /// Whether the back-end is connected and in step.
        var connected = true
        /// Whether the connection went to the machine a reboot built (``detach()``): this
        /// device no longer touches it.
        var handedOver = false
    }

    /// Guest memory and the queues of one activation.
    struct ActiveQueues: @unchecked Sendable {
        let memory: GuestMemory
        let queues: [SplitQueue]
    }

    let state: Mutex<State>

    /// The common part of a device whose negotiation gave `negotiated`.
    init(frontend: VhostUserFrontend, negotiated: (features: UInt64, protocolFeatures: VhostUserProtocolFeatures),
         socket: String, name: String, frontendOnlyFeatures: UInt64 = 0, listener: UnixSocket? = nil, logger: Logger) {
        self.state = Mutex(State(frontend: frontend))
        self.listener = listener
        self.negotiatedFeatures = negotiated.features
        self.protocolFeatures = negotiated.protocolFeatures
        self.socket = socket
        self.name = name
        self.frontendOnlyFeatures = frontendOnlyFeatures
        self.logger = logger
    }

    /// The virtio features the device offers the guest: the negotiated ones without the
    /// vhost-user protocol-features bit.
    var deviceFeatures: UInt64 { negotiatedFeatures & ~vhostUserProtocolFeaturesBit }

    /// Connects to the back-end at `socket`, retrying for up to `timeoutMilliseconds` (60 s by
    /// default, as Cloud Hypervisor's `connect_vhost_user`); a failure names `option`.
    static func connect(socket: String, option: String, timeoutMilliseconds: Int) throws -> VhostUserFrontend {
        do {
            return VhostUserFrontend(channel: try UnixVhostUserChannel.connect(path: socket, timeoutMilliseconds: timeoutMilliseconds))
        } catch {
            throw ConfigError(option: option, "cannot connect to the vhost-user back-end at socket=\(socket): \(error)")
        }
    }

    /// Listens at `socket` and waits, without a limit, for the back-end to connect (Cloud
    /// Hypervisor's `vhost_mode=server`); a failure names `option`.
    static func accept(socket: String, option: String) throws -> (frontend: VhostUserFrontend, listener: UnixSocket) {
        do {
            let (channel, listener) = try UnixVhostUserChannel.accept(path: socket)
            return (VhostUserFrontend(channel: channel), listener)
        } catch {
            throw ConfigError(option: option, "cannot listen for the vhost-user back-end at socket=\(socket) (vhost_mode=server): \(error)")
        }
    }

    /// Cloud Hypervisor's `negotiate_features_vhost_user` and queue check: the common virtio
    /// and protocol features, then, with `MQ`, the back-end's queue count (else
    /// `defaultQueues`), which must cover `queueCount`. A back-end without VERSION_1 is
    /// refused (the transport is modern only). Failures name `option` and the socket.
    static func negotiate(_ frontend: VhostUserFrontend, features: UInt64, protocolFeatures: VhostUserProtocolFeatures,
                          queueCount: Int, defaultQueues: UInt64, option: String, socket: String)
        throws(ConfigError) -> (features: UInt64, protocolFeatures: VhostUserProtocolFeatures) {
        let negotiated: (features: UInt64, protocolFeatures: VhostUserProtocolFeatures)
        do {
            negotiated = try frontend.negotiate(features: features, protocolFeatures: protocolFeatures)
            let served = negotiated.protocolFeatures.contains(.multiQueue) ? try frontend.getQueueNum() : defaultQueues
            guard UInt64(queueCount) <= served else { throw VhostUserError.tooManyQueues(requested: queueCount, backend: served) }
        } catch {
            throw ConfigError(option: option, "the vhost-user back-end at socket=\(socket) cannot serve the device: \(error)")
        }
        guard negotiated.features & VirtioFeature.version1 != 0 else {
            throw ConfigError(option: option, "the vhost-user back-end at socket=\(socket) does not offer VIRTIO_F_VERSION_1")
        }
        return negotiated
    }

    /// Gives the device its transport's descriptors (once the transport exists).
    func setNotifiers(_ notifiers: VhostUserNotifiers) {
        state.withLock { $0.notifiers = notifiers }
    }

    /// Records the features the driver accepted.
    func acknowledgeFeatures(_ features: UInt64) {
        state.withLock { $0.driverFeatures = features }
    }

    /// Hands the enabled queues to the back-end (Cloud Hypervisor's `setup_vhost_user`):
    /// features (without the front-end-only ones), the memory table, then per queue its
    /// size, rings, base, call and kick eventfds, and last, with protocol features, enables
    /// them. The queues are the back-end's, numbered from 0. While the back-end is away
    /// (reconnecting), the queues are kept and handed over when it is back.
    func activate(memory: GuestMemory, queues: [SplitQueue]) throws(VirtioDeviceError) {
        try state.withLock { (state: inout State) throws(VirtioDeviceError) in
            guard state.notifiers != nil else { throw .backend("the \(name) device is not attached to a transport") }
            state.active = ActiveQueues(memory: memory, queues: queues)
            guard state.connected else {
                state.resumeBases = state.active.map(Self.usedIndexes)
                logger.warning("\(name) (\(socket)): activated while the back-end is away; its queues are handed over when it reconnects")
                return
            }
            try handOver(&state, bases: nil)
        }
    }

    /// The hand-over itself, under the state's lock, on the current connection. `bases`
    /// replaces the available-ring indexes as the queues' first positions (a reconnection).
    func handOver(_ state: inout State, bases: [Int: UInt16]?) throws(VirtioDeviceError) {
        guard let active = state.active, let notifiers = state.notifiers else { return }
        let frontend = state.frontend, memory = active.memory
        var started: [Int] = []
        defer { state.started = started }
        do {
            try frontend.setFeatures(state.driverFeatures & ~frontendOnlyFeatures | (negotiatedFeatures & vhostUserProtocolFeaturesBit))
            let (regions, descriptors) = try Self.memoryTable(memory)
            try frontend.setMemTable(regions, descriptors: descriptors)
            for (index, queue) in active.queues.enumerated() where queue.isReady {
                let queueIndex = UInt32(index)
                try frontend.setVringNum(index: queueIndex, size: UInt32(queue.size))
                let size = UInt64(queue.size)
                try frontend.setVringAddr(VhostUserVringAddress(
                    index: queueIndex,
                    descriptorTable: try Self.hostAddress(memory, queue.descriptorTable, length: 16 * size, what: "descriptor table", queue: index),
                    usedRing: try Self.hostAddress(memory, queue.usedRing, length: 6 + 8 * size, what: "used ring", queue: index),
                    availableRing: try Self.hostAddress(memory, queue.availableRing, length: 6 + 2 * size, what: "available ring", queue: index)))
                let base = try bases?[index] ?? queue.availableIndex(in: memory)
                try frontend.setVringBase(index: queueIndex, base: UInt32(base))
                guard let call = notifiers.call(index) else {
                    throw VirtioDeviceError.backend("queue \(index) has no MSI-X vector: a vhost-user back-end interrupts the guest through MSI-X only")
                }
                try frontend.setVringCall(index: UInt8(truncatingIfNeeded: index), descriptor: call)
                try frontend.setVringKick(index: UInt8(truncatingIfNeeded: index), descriptor: try notifiers.kick(index).rawValue)
                started.append(index)
            }
            if negotiatedFeatures & vhostUserProtocolFeaturesBit != 0 {
                for index in started { try frontend.setVringEnable(index: UInt32(index), enabled: true) }
            }
        } catch {
            // The queues handed over so far are stopped by the driver's reset.
            if let error = error as? VirtioDeviceError {
                logger.error("\(name) (\(socket)): \(error)")
                throw error
            }
            logger.error("\(name) (\(socket)): the back-end failed during activation: \(error)")
            throw .backend("the vhost-user back-end at \(socket) failed during activation: \(error)")
        }
        logger.info("\(name) (\(socket)): \(started.count) queue(s) handed to the back-end")
    }

    /// Stops the back-end's queues (Cloud Hypervisor's `reset_vhost_user`): each is disabled
    /// and `GET_VRING_BASE` stops it. A back-end that fails here is logged; the driver's reset
    /// goes on. Without started queues (or while the back-end is away) this sends nothing.
    func reset() {
        let (started, frontend) = state.withLock { state -> ([Int], VhostUserFrontend?) in
            defer { state.started = []; state.driverFeatures = 0; state.active = nil; state.resumeBases = nil }
            return (state.started, state.connected ? state.frontend : nil)
        }
        guard let frontend else { return }
        for index in started {
            do {
                if negotiatedFeatures & vhostUserProtocolFeaturesBit != 0 {
                    try frontend.setVringEnable(index: UInt32(index), enabled: false)
                }
                _ = try frontend.getVringBase(index: UInt32(index))
            } catch {
                logger.error("\(name) (\(socket)): stopping queue \(index): \(error)")
            }
        }
    }

    /// Tells the back-end about guest memory hot-added at `region` (Cloud Hypervisor's
    /// `add_memory_region`), before the guest learns of it: with the `CONFIGURE_MEM_SLOTS`
    /// protocol feature one `ADD_MEM_REG`, else the whole memory table again. A device the
    /// driver has not activated (or whose back-end is away) gets the table, which then holds
    /// the region, when its queues are handed over.
    func memoryAdded(_ region: GuestMemoryRegion) throws(VirtioDeviceError) {
        try state.withLock { (state: inout State) throws(VirtioDeviceError) in
            guard state.connected, let active = state.active else { return }
            do {
                if protocolFeatures.contains(.configureMemorySlots) {
                    let (entry, descriptor) = try Self.tableEntry(region)
                    try state.frontend.addMemReg(entry, descriptor: descriptor)
                } else {
                    let (regions, descriptors) = try Self.memoryTable(active.memory)
                    try state.frontend.setMemTable(regions, descriptors: descriptors)
                }
            } catch let error as VirtioDeviceError {
                throw error
            } catch {
                throw .backend("the vhost-user back-end at \(socket) did not take the hot-added memory at 0x\(String(region.start.rawValue, radix: 16)): \(error)")
            }
            logger.info("\(name) (\(socket)): the back-end maps the hot-added memory at 0x\(String(region.start.rawValue, radix: 16))")
        }
    }

    /// The memory table: each guest RAM region with its memory file, offset and host address.
    static func memoryTable(_ memory: GuestMemory) throws(VirtioDeviceError) -> ([VhostUserMemoryRegion], [Int32]) {
        var regions: [VhostUserMemoryRegion] = []
        var descriptors: [Int32] = []
        for region in memory.regions {
            let (entry, descriptor) = try tableEntry(region)
            regions.append(entry)
            descriptors.append(descriptor)
        }
        return (regions, descriptors)
    }

    /// One region's entry in the table and its memory file's descriptor.
    static func tableEntry(_ region: GuestMemoryRegion) throws(VirtioDeviceError) -> (VhostUserMemoryRegion, Int32) {
        guard let file = region.mapping.file else {
            throw .backend("guest memory at 0x\(String(region.start.rawValue, radix: 16)) is not in a memory file, so the back-end cannot map it: give --memory shared=on")
        }
        return (VhostUserMemoryRegion(guestPhysicalAddress: region.start.rawValue, size: region.size,
                                      userAddress: UInt64(UInt(bitPattern: region.hostAddress)),
                                      mmapOffset: UInt64(region.mapping.fileOffset)), file.rawValue)
    }

    /// The VMM's virtual address of `length` bytes at `address`, which must lie in one region.
    static func hostAddress(_ memory: GuestMemory, _ address: GuestAddress, length: UInt64, what: String, queue: Int) throws(VirtioDeviceError) -> UInt64 {
        guard let region = memory.region(containing: address), let offset = region.offset(of: address), offset + length <= region.size else {
            throw .backend("queue \(queue)'s \(what) at 0x\(String(address.rawValue, radix: 16)) is not inside one guest memory region")
        }
        return UInt64(UInt(bitPattern: region.hostAddress)) + offset
    }
}
