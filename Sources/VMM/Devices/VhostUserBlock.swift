import GuestMemory
import Logging
import Synchronization
import VhostUser
import VirtioDevices
import VirtioQueue

/// A virtio-blk device (type 2) served by a vhost-user back-end (qemu-storage-daemon, SPDK,
/// Cloud Hypervisor's vhost_user_block), as Cloud Hypervisor's `vhost_user::Blk`
/// (`--disk vhost_user=on,socket=`): the VMM owns the PCI function and keeps the
/// configuration space it read from the back-end (`GET_CONFIG`) at connection time, with
/// `num_queues` set to the configured count; the back-end maps guest memory and serves the
/// queues (``VhostUserCommon``). The driver's write of `writeback`, the one writable field,
/// is passed on with `SET_CONFIG`.
final class VhostUserBlockDevice: VirtioDevice {
    /// The `VIRTIO_BLK_F_*` bits Cloud Hypervisor accepts from a back-end: SIZE_MAX (1),
    /// SEG_MAX (2), GEOMETRY (4), RO (5), BLK_SIZE (6), FLUSH (9), TOPOLOGY (10),
    /// CONFIG_WCE (11), DISCARD (13), WRITE_ZEROES (14); MQ (12) joins them with several queues.
    static let blockFeatures: UInt64 = 1 << 1 | 1 << 2 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 13 | 1 << 14
    /// `VIRTIO_BLK_F_MQ`.
    static let multiQueueFeature: UInt64 = 1 << 12
    /// The protocol features asked for: the configuration space (`GET_CONFIG`, which this
    /// device needs), several queues, acknowledged requests and memory slots (hot-added
    /// memory as `ADD_MEM_REG`). Cloud Hypervisor also asks for in-flight tracking, dirty
    /// logging and device state, which this front-end does not implement.
    static let offeredProtocolFeatures: VhostUserProtocolFeatures = [.config, .multiQueue, .replyAck, .configureMemorySlots]
    /// The size of `struct virtio_blk_config` as Cloud Hypervisor reads it.
    static let configSize = 60
    /// The offset of `writeback`, the one field the driver may write.
    static let writebackOffset = 32
    /// The offset of `num_queues`.
    static let numQueuesOffset = 34

    let deviceType = VirtioDeviceType.block
    let features: UInt64
    let queueMaxSizes: [UInt16]
    /// The connection, the negotiated features and the queue hand-over.
    let common: VhostUserCommon
    /// The configuration space (only `writeback` changes).
    private let config: Mutex<[UInt8]>

    /// Connects to the back-end at `config.vhostSocket` (retrying for up to 60 s, as Cloud
    /// Hypervisor does), negotiates features, checks that it serves `num_queues` queues and
    /// reads the configuration space.
    /// With `kept` (an in-place reboot), the stopped machine's connection is used instead.
    convenience init(config: DiskConfig, logger: Logger, connectTimeoutMilliseconds: Int = 60_000, kept: KeptVhostUserConnection? = nil) throws {
        let socket = config.vhostSocket ?? ""
        let frontend = try kept?.frontend
            ?? VhostUserCommon.connect(socket: socket, option: "--disk", timeoutMilliseconds: connectTimeoutMilliseconds)
        try self.init(config: config, frontend: frontend, logger: logger)
    }

    /// A device over an established front-end (the tests give a replayed back-end).
    init(config: DiskConfig, frontend: VhostUserFrontend, logger: Logger) throws {
        let socket = config.vhostSocket ?? ""
        let queueCount = config.numQueues
        var offered = Self.blockFeatures | VhostUserCommon.transportFeatures
        if queueCount > 1 { offered |= Self.multiQueueFeature }
        // Without MQ a back-end serves Cloud Hypervisor's default of 1 queue.
        let negotiated = try VhostUserCommon.negotiate(frontend, features: offered, protocolFeatures: Self.offeredProtocolFeatures,
                                                       queueCount: queueCount, defaultQueues: 1, option: "--disk", socket: socket)
        guard negotiated.protocolFeatures.contains(.config) else {
            throw ConfigError(option: "--disk", "the vhost-user back-end at socket=\(socket) does not offer the CONFIG protocol feature, "
                + "so the disk's capacity cannot be read (GET_CONFIG)")
        }
        var space: [UInt8]
        do {
            space = try frontend.getConfig(offset: 0, size: UInt32(Self.configSize))
        } catch {
            throw ConfigError(option: "--disk", "the vhost-user back-end at socket=\(socket) did not give its configuration space: \(error)")
        }
        // Cloud Hypervisor shows the configured queue count whatever the back-end said.
        space[Self.numQueuesOffset] = UInt8(truncatingIfNeeded: queueCount)
        space[Self.numQueuesOffset + 1] = UInt8(truncatingIfNeeded: queueCount >> 8)
        self.common = VhostUserCommon(frontend: frontend, negotiated: negotiated, socket: socket, name: "vhost-user-blk", logger: logger)
        self.features = common.deviceFeatures
        self.queueMaxSizes = Array(repeating: config.queueSize, count: queueCount)
        self.config = Mutex(space)
    }

    /// The capacity in 512-byte sectors the back-end reported.
    var capacity: UInt64 { readConfig(offset: 0, size: 8) }

    /// Gives the device its transport's descriptors (once the transport exists).
    func setNotifiers(_ notifiers: VhostUserNotifiers) { common.setNotifiers(notifiers) }

    func readConfig(offset: UInt64, size: Int) -> UInt64 {
        config.withLock { config in
            guard offset < UInt64(config.count) else { return 0 }
            var value: UInt64 = 0
            for index in (0..<size).reversed() where Int(offset) + index < config.count {
                value = value << 8 | UInt64(config[Int(offset) + index])
            }
            return value
        }
    }

    /// Only a one-byte write of `writeback` is taken (as Cloud Hypervisor): it is kept and
    /// passed to the back-end with `SET_CONFIG`. Anything else is logged and dropped.
    func writeConfig(offset: UInt64, size: Int, value: UInt64) {
        guard offset == UInt64(Self.writebackOffset), size == 1 else {
            common.logger.error("vhost-user-blk (\(common.socket)): the driver wrote \(size) byte(s) at 0x\(String(offset, radix: 16)) of the read-only configuration space")
            return
        }
        let byte = UInt8(truncatingIfNeeded: value)
        config.withLock { $0[Self.writebackOffset] = byte }
        do {
            try common.frontend.setConfig(offset: UInt32(offset), bytes: [byte])
        } catch {
            common.logger.error("vhost-user-blk (\(common.socket)): SET_CONFIG of writeback=\(byte) failed: \(error)")
        }
    }

    func acknowledgeFeatures(_ features: UInt64) { common.acknowledgeFeatures(features) }

    /// Hands the enabled queues to the back-end (``VhostUserCommon/activate(memory:queues:)``).
    func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        try common.activate(memory: memory, queues: queues)
    }

    /// Stops the back-end's queues (``VhostUserCommon/reset()``).
    func reset() { common.reset() }

    /// The back-end serves the queues; a notification that reached the VMM was already passed
    /// to the kick eventfd.
    func processQueue(_ index: Int) throws(VirtioDeviceError) {}
}
