import GuestMemory
import Logging
import VhostUser
import VirtioDevices
import VirtioQueue

/// A virtio-fs device (type 26) served by a vhost-user back-end (virtiofsd), as Cloud
/// Hypervisor's `vhost_user::Fs`: the VMM owns the PCI function and the configuration space
/// (the tag and the request queue count); the back-end maps guest memory and serves the
/// queues, woken by the kick eventfds and interrupting the guest through the irqfds
/// (``VhostUserCommon``).
final class VhostUserFsDevice: VirtioDevice {
    /// The virtio features this front-end can pass on: the vhost-user transport ones.
    static let offeredFeatures: UInt64 = VhostUserCommon.transportFeatures
    /// The protocol features asked for: several queues, acknowledged requests and memory slots.
    static let offeredProtocolFeatures: VhostUserProtocolFeatures = [.multiQueue, .replyAck, .configureMemorySlots]
    /// The size of `struct virtio_fs_config`'s tag.
    static let tagLength = 36

    let deviceType = VirtioDeviceType.fs
    let features: UInt64
    let queueMaxSizes: [UInt16]
    /// The connection, the negotiated features and the queue hand-over.
    let common: VhostUserCommon
    private let config: [UInt8]

    /// Connects to the back-end at `config.socket` (retrying for up to 60 s, as Cloud
    /// Hypervisor does), negotiates features, and checks that it serves the hiprio queue
    /// and `num_queues` request queues.
    /// With `kept` (an in-place reboot), the stopped machine's connection is used instead.
    convenience init(config: FsConfig, logger: Logger, connectTimeoutMilliseconds: Int = 60_000, kept: KeptVhostUserConnection? = nil) throws {
        let frontend = try kept?.frontend
            ?? VhostUserCommon.connect(socket: config.socket, option: "--fs", timeoutMilliseconds: connectTimeoutMilliseconds)
        try self.init(config: config, frontend: frontend, logger: logger)
    }

    /// A device over an established front-end (the tests give a replayed back-end).
    init(config: FsConfig, frontend: VhostUserFrontend, logger: Logger) throws {
        let queueCount = 1 + Int(config.numQueues)
        // Without MQ a back-end serves Cloud Hypervisor's default of 2 queues.
        let negotiated = try VhostUserCommon.negotiate(frontend, features: Self.offeredFeatures, protocolFeatures: Self.offeredProtocolFeatures,
                                                       queueCount: queueCount, defaultQueues: 2, option: "--fs", socket: config.socket)
        self.common = VhostUserCommon(frontend: frontend, negotiated: negotiated, socket: config.socket, name: "virtio-fs", logger: logger)
        self.features = common.deviceFeatures
        self.queueMaxSizes = Array(repeating: config.queueSize, count: queueCount)
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
    func setNotifiers(_ notifiers: VhostUserNotifiers) { common.setNotifiers(notifiers) }

    func readConfig(offset: UInt64, size: Int) -> UInt64 {
        guard offset < UInt64(config.count) else { return 0 }
        var value: UInt64 = 0
        for index in (0..<size).reversed() where Int(offset) + index < config.count {
            value = value << 8 | UInt64(config[Int(offset) + index])
        }
        return value
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
