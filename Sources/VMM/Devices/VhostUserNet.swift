import GuestMemory
import HostSystem
import Logging
import Synchronization
import VhostUser
import VirtioDevices
import VirtioQueue

/// A virtio-net device (type 1) served by a vhost-user back-end (Cloud Hypervisor's
/// vhost_user_net, DPDK, OVS), as Cloud Hypervisor's `vhost_user::Net`
/// (`--net vhost_user=on,socket=`): the VMM owns the PCI function and builds the
/// configuration space itself (MAC, link status, `max_virtqueue_pairs`, MTU); the back-end
/// maps guest memory and serves the receive and transmit rings (``VhostUserCommon``); when
/// the back-end accepts `VIRTIO_NET_F_CTRL_VQ`, the VMM serves the control queue itself
/// with ``VirtioNetControl``, so the back-end sees only `2 * pairs` rings.
///
/// MAC and link status are the VMM's own features: offered to the guest whatever the
/// back-end says (status only with a control queue, as Cloud Hypervisor) and never passed
/// to the back-end's `SET_FEATURES`.
final class VhostUserNetDevice: VirtioDevice {
    typealias F = VirtioNetABI.Feature
    /// The protocol features asked for: several queues, acknowledged requests and memory
    /// slots. Cloud Hypervisor also asks for in-flight tracking, dirty logging and device
    /// state, which this front-end does not implement.
    static let offeredProtocolFeatures: VhostUserProtocolFeatures = [.multiQueue, .replyAck, .configureMemorySlots]
    /// The features the VMM implements for the guest and keeps from the back-end.
    static let frontendOnlyFeatures: UInt64 = F.mac | F.status

    /// The virtio-net features asked of the back-end, as Cloud Hypervisor's: mergeable
    /// receive buffers, the control queue, the MAC, multiqueue (Cloud Hypervisor's
    /// `build_net_config_space` adds it for any pair count), the MTU when one is given, and
    /// the checksum / TSO / UFO offloads the options allow. Cloud Hypervisor also offers
    /// `GUEST_ANNOUNCE`, which this VMM's control queue does not implement.
    static func offeredFeatures(_ config: NetConfig) -> UInt64 {
        var bits = F.mergeableReceiveBuffers | F.controlQueue | F.mac | F.multiQueue | VhostUserCommon.transportFeatures
        if config.mtu != nil { bits |= F.mtu }
        if config.offloadCsum {
            bits |= F.checksum | F.guestChecksum
            if config.offloadTSO { bits |= F.hostECN | F.hostTSO4 | F.hostTSO6 | F.guestECN | F.guestTSO4 | F.guestTSO6 }
            if config.offloadUFO { bits |= F.hostUFO | F.guestUFO }
        }
        return bits
    }

    let deviceType = VirtioDeviceType.net
    let features: UInt64
    let queueMaxSizes: [UInt16]
    /// The connection, the negotiated features and the hand-over of the data rings.
    let common: VhostUserCommon
    /// The queue pairs (`num_queues / 2`).
    let pairs: Int
    /// Whether the back-end accepted `VIRTIO_NET_F_CTRL_VQ`: then the device has a control
    /// queue (the last one), served by the VMM.
    let hasControlQueue: Bool
    /// The MAC address the device starts with (`mac=`, or a random one).
    let configuredMAC: MACAddress
    /// The MTU in the configuration space (`mtu=`).
    let mtu: UInt16?

    /// What a running device works with (from activation to reset).
    private struct Session {
        var memory: GuestMemory
        var interrupt: any VirtioInterrupt
        var controlIndex: Int?
    }
    /// The driver-visible state, one value behind one lock.
    private struct State {
        var mac: MACAddress
        var driverFeatures: UInt64 = 0
        var activePairs = 1
        var session: Session?
    }
    private let state: Mutex<State>
    /// The control queue while the device runs (its own lock, as ``VirtioNet``'s).
    private let control = Mutex<SplitQueue?>(nil)

    /// Connects to the back-end at `config.vhostSocket` (`vhost_mode=client`: retrying for up
    /// to 60 s, as Cloud Hypervisor does) or listens there and waits for it
    /// (`vhost_mode=server`), then negotiates. With `kept` (an in-place reboot), the stopped
    /// machine's connection is used instead, or its listener waited on.
    convenience init(config: NetConfig, logger: Logger, connectTimeoutMilliseconds: Int = 60_000, kept: KeptVhostUserConnection? = nil) throws {
        let socket = config.vhostSocket ?? ""
        if let kept, let frontend = kept.frontend {
            try self.init(config: config, frontend: frontend, listener: kept.listener, logger: logger)
        } else if let listener = kept?.listener {
            let channel: UnixVhostUserChannel
            do {
                channel = try UnixVhostUserChannel.accept(on: listener)
            } catch {
                throw ConfigError(option: "--net", "waiting for the vhost-user back-end at socket=\(socket) (vhost_mode=server): \(error)")
            }
            try self.init(config: config, frontend: VhostUserFrontend(channel: channel), listener: listener, logger: logger)
        } else if config.vhostMode == .server {
            let (frontend, listener) = try VhostUserCommon.accept(socket: socket, option: "--net")
            try self.init(config: config, frontend: frontend, listener: listener, logger: logger)
        } else {
            let frontend = try VhostUserCommon.connect(socket: socket, option: "--net", timeoutMilliseconds: connectTimeoutMilliseconds)
            try self.init(config: config, frontend: frontend, logger: logger)
        }
    }

    /// A device over an established front-end (the tests give a replayed back-end):
    /// negotiates the features and checks that the back-end serves `num_queues` rings.
    /// With `vhost_mode=server`, `listener` is the socket a restarted back-end connects to again.
    init(config: NetConfig, frontend: VhostUserFrontend, listener: UnixSocket? = nil, logger: Logger) throws {
        let socket = config.vhostSocket ?? ""
        let dataQueues = config.numQueues
        // Without MQ a back-end serves Cloud Hypervisor's default of 2 queues.
        let negotiated = try VhostUserCommon.negotiate(frontend, features: Self.offeredFeatures(config), protocolFeatures: Self.offeredProtocolFeatures,
                                                       queueCount: dataQueues, defaultQueues: 2, option: "--net", socket: socket)
        let pairs = dataQueues / 2
        // The driver finds the control queue after the pairs only with multiqueue; without it
        // the control queue would be queue 2, a ring this VMM hands to the back-end.
        if pairs > 1, negotiated.features & F.multiQueue == 0 {
            throw ConfigError(option: "--net", "the vhost-user back-end at socket=\(socket) does not offer VIRTIO_NET_F_MQ, "
                + "so the guest cannot use num_queues=\(dataQueues); give num_queues=2")
        }
        self.pairs = pairs
        self.hasControlQueue = negotiated.features & F.controlQueue != 0
        self.configuredMAC = config.mac.flatMap(MACAddress.init) ?? MACAddress.random()
        self.mtu = config.mtu
        self.common = VhostUserCommon(frontend: frontend, negotiated: negotiated, socket: socket, name: "vhost-user-net",
                                      frontendOnlyFeatures: Self.frontendOnlyFeatures, listener: listener, logger: logger)
        // Cloud Hypervisor's `frontend_avail_features`: the MAC always, link status with a control queue.
        self.features = common.deviceFeatures | F.mac | (hasControlQueue ? F.status : 0)
        self.queueMaxSizes = Array(repeating: config.queueSize, count: dataQueues + (hasControlQueue ? 1 : 0))
        self.state = Mutex(State(mac: configuredMAC))
    }

    /// The control queue's index, when the device has one.
    var controlQueueIndex: Int? { hasControlQueue ? 2 * pairs : nil }

    /// The MAC address the configuration reports (the driver may change it with `MAC_ADDR_SET`).
    var mac: MACAddress { state.withLock { $0.mac } }
    /// The queue pairs the driver asked to use with `VQ_PAIRS_SET` (1 until it does).
    var activeQueuePairs: Int { state.withLock { $0.activePairs } }

    /// Gives the device its transport's descriptors (once the transport exists).
    func setNotifiers(_ notifiers: VhostUserNotifiers) { common.setNotifiers(notifiers) }

    /// `struct virtio_net_config` as Cloud Hypervisor builds it: `mac`, `status` (link up
    /// once the driver accepted `VIRTIO_NET_F_STATUS`, else 0), `max_virtqueue_pairs` and
    /// `mtu` (0 without `mtu=`). Bytes past its end read 0.
    func readConfig(offset: UInt64, size: Int) -> UInt64 {
        guard (1...8).contains(size), offset < VirtioNetABI.ConfigOffset.length else { return 0 }
        let (mac, driverFeatures) = state.withLock { ($0.mac, $0.driverFeatures) }
        var layout = mac.bytes
        layout += Self.le16(driverFeatures & F.status != 0 ? VirtioNetABI.statusLinkUp : 0)
        layout += Self.le16(UInt16(pairs))
        layout += Self.le16(mtu ?? 0)
        var value: UInt64 = 0
        for byte in 0..<size where Int(offset) + byte < layout.count {
            value |= UInt64(layout[Int(offset) + byte]) << (8 * UInt64(byte))
        }
        return value
    }

    /// Ignored: every field is read-only for a virtio 1.x driver (the MAC changes through
    /// the control queue).
    func writeConfig(offset: UInt64, size: Int, value: UInt64) {}

    func acknowledgeFeatures(_ features: UInt64) {
        state.withLock { $0.driverFeatures = features }
        common.acknowledgeFeatures(features)
    }

    /// Hands the data rings to the back-end (``VhostUserCommon/activate(memory:queues:)``)
    /// and keeps the control queue, when the driver accepted one, to serve it here.
    func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        guard queues.count == queueMaxSizes.count else { throw .queueIndexOutOfRange(index: queues.count, count: queueMaxSizes.count) }
        let driverFeatures = state.withLock { $0.driverFeatures }
        var controlIndex: Int?
        if hasControlQueue, driverFeatures & F.controlQueue != 0 {
            // Without multiqueue the driver's control queue is queue 2.
            let index = 2 * (driverFeatures & F.multiQueue != 0 ? pairs : 1)
            guard index == 2 * pairs else {
                throw .backend("the driver did not accept VIRTIO_NET_F_MQ, so its control queue is queue \(index), one of the \(2 * pairs) rings the vhost-user back-end at \(common.socket) serves")
            }
            controlIndex = index
        }
        try common.activate(memory: memory, queues: Array(queues[0..<(2 * pairs)]))
        control.withLock { $0 = controlIndex.map { queues[$0] } }
        state.withLock { state in
            state.activePairs = 1
            state.session = Session(memory: memory, interrupt: interrupt, controlIndex: controlIndex)
        }
    }

    /// Stops the back-end's rings (``VhostUserCommon/reset()``), forgets the control queue
    /// and returns the MAC address to the configured one.
    func reset() {
        common.reset()
        control.withLock { $0 = nil }
        state.withLock { $0 = State(mac: configuredMAC) }
    }

    /// Serves the control queue; the data rings' notifications go to the back-end's kick
    /// eventfds and never reach the VMM.
    func processQueue(_ index: Int) throws(VirtioDeviceError) {
        let (session, features) = state.withLock { ($0.session, $0.driverFeatures) }
        guard let session else { throw .notActivated }
        guard index == session.controlIndex else { return }
        let target = ControlTarget(device: self)
        let error: VirtioDeviceError? = control.withLock { queue in
            guard queue != nil else { return .notActivated }
            do throws(VirtioDeviceError) {
                try VirtioNetControl.serve(&queue!, index: index, memory: session.memory, features: features,
                                           interrupt: session.interrupt, target: target)
                return nil
            } catch {
                return error
            }
        }
        if let error { throw error }
    }

    /// The device as the control commands see it. Cloud Hypervisor's vhost-user-net control
    /// queue has no TAP to reprogram, so its offload command changes nothing (and is not
    /// offered: `CTRL_GUEST_OFFLOADS` is not among the features asked of the back-end).
    private struct ControlTarget: VirtioNetControlTarget {
        let device: VhostUserNetDevice
        var queuePairCount: Int { device.pairs }
        func setActiveQueuePairs(_ count: Int) { device.state.withLock { $0.activePairs = count } }
        func setMAC(_ address: MACAddress) { device.state.withLock { $0.mac = address } }
        func setGuestOffloads(_ features: UInt64) throws {}
    }

    /// `value` as two little-endian bytes.
    private static func le16(_ value: UInt16) -> [UInt8] { [UInt8(truncatingIfNeeded: value), UInt8(value >> 8)] }
}
