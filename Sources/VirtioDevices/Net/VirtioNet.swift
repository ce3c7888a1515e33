import GuestMemory
import RateLimiter
import Synchronization
import VirtioQueue

/// A virtio network card (type 1, virtio 1.x section 5.1) over one ``NetBackend`` per
/// queue pair, with Cloud Hypervisor's feature set: checksum and segmentation offloads
/// both ways, mergeable receive buffers, link status, a control queue, and several
/// queue pairs when it has several backends.
///
/// Queues: receive 0, transmit 0, receive 1, transmit 1, ..., then the control queue
/// (queue `2 * pairs`; queue 2 when the driver did not negotiate ``VirtioNetABI/Feature/multiQueue``).
///
/// - Transmit: every chain's device-readable buffers go to the backend in one
///   ``NetBackend/send(_:)`` call, straight from guest memory (no copy).
/// - Receive: the VMM calls ``backendReadable(pair:)`` when the backend's
///   ``NetBackend/readinessDescriptor`` is readable, and the driver's notification of a
///   receive queue (new buffers) also pulls packets. Packets stay in the backend while the
///   guest has no buffer for them: the device holds at most one packet per pair (read but
///   waiting for more mergeable buffers), so a guest that stops reading never makes the
///   host buffer more. When ``wantsBackendEvents(pair:)`` turns false, the VMM stops
///   watching the backend until the driver notifies that pair's receive queue.
///
/// Packet-level faults (a transmit packet shorter than its header or longer than
/// ``VirtioNetABI/maxPacketSize``, a received packet bigger than the buffers given for
/// it, a backend queue that is full) drop the packet and count it. A chain that breaks
/// the virtqueue rules, a receive chain without writable buffers, or a failing backend
/// throws, and the transport sets `DEVICE_NEEDS_RESET`; a failure met in
/// ``backendReadable(pair:)`` is reported at the next queue notification.
///
/// ```swift
/// let net = try VirtioNet(backends: [tap], options: .init(mac: .random(), mtu: 1500))
/// let transport = try VirtioPCIDevice(device: net, memory: guestMemory,
///                                     msixRouting: routing, barAddress: 0xe020_0000)
/// // Event loop: tap readable
/// if !net.backendReadable(pair: 0) { /* stop watching the tap */ }
/// // Event loop: ioeventfd of queue 0 (receive 0)
/// transport.notifyQueue(0)
/// if net.wantsBackendEvents(pair: 0) { /* watch the tap again */ }
/// ```
public final class VirtioNet: VirtioDevice {
    /// Cloud Hypervisor's default queue size.
    public static let defaultQueueSize: UInt16 = 256
    /// The packets one transmit notification sends at most before yielding to the VMM's other
    /// events, with ``serveTransmitLater(burst:with:)`` (QEMU's `tx_burst` default).
    public static let transmitBurst = 256

    /// How the device presents itself.
    public struct Options: Sendable {
        /// The MAC address in the configuration space (Cloud Hypervisor makes up a random
        /// one, ``MACAddress/random()``, when the user gives none).
        public var mac: MACAddress
        /// The MTU advertised with ``VirtioNetABI/Feature/mtu``; `nil` offers no MTU.
        public var mtu: UInt16?
        /// The maximum size of every queue (`queue_size=`).
        public var queueSize: UInt16
        /// Checksum offload both ways (`offload_csum=`); without it no segmentation
        /// offload is offered either, as those need partial checksums.
        public var offloadChecksum: Bool
        /// TCP segmentation offload both ways (`offload_tso=`).
        public var offloadTSO: Bool
        /// UDP fragmentation offload both ways (`offload_ufo=`).
        public var offloadUFO: Bool
        /// Throttles the packets the guest receives, all pairs together (`nil`: no limit).
        /// Each packet costs one operation and its frame bytes.
        public var receiveRateLimiter: RateLimiter?
        /// Throttles the packets the guest sends, all pairs together (`nil`: no limit).
        public var transmitRateLimiter: RateLimiter?

        /// Cloud Hypervisor's defaults: queues of 256 entries, every offload, no MTU.
        public init(mac: MACAddress = .random(), mtu: UInt16? = nil, queueSize: UInt16 = VirtioNet.defaultQueueSize,
                    offloadChecksum: Bool = true, offloadTSO: Bool = true, offloadUFO: Bool = true,
                    receiveRateLimiter: RateLimiter? = nil, transmitRateLimiter: RateLimiter? = nil) {
            self.mac = mac
            self.mtu = mtu
            self.queueSize = queueSize
            self.offloadChecksum = offloadChecksum
            self.offloadTSO = offloadTSO
            self.offloadUFO = offloadUFO
            self.receiveRateLimiter = receiveRateLimiter
            self.transmitRateLimiter = transmitRateLimiter
        }
    }

    /// Cumulative traffic counters; bytes count frames without their 12-byte header.
    public struct Counters: Sendable, Equatable, Codable {
        /// Frame bytes delivered to the guest.
        public var rxBytes: UInt64 = 0
        /// Frames delivered to the guest.
        public var rxFrames: UInt64 = 0
        /// Frame bytes the guest sent and the backend took.
        public var txBytes: UInt64 = 0
        /// Frames the guest sent and the backend took.
        public var txFrames: UInt64 = 0
        /// Received packets dropped: larger than the buffers the guest gave, or shorter than a header.
        public var rxDropped: UInt64 = 0
        /// Transmitted packets dropped: malformed, oversized, or refused by a full backend.
        public var txDropped: UInt64 = 0

        /// Counters with the given values (all zero by default).
        public init(rxBytes: UInt64 = 0, rxFrames: UInt64 = 0, txBytes: UInt64 = 0, txFrames: UInt64 = 0,
                    rxDropped: UInt64 = 0, txDropped: UInt64 = 0) {
            self.rxBytes = rxBytes
            self.rxFrames = rxFrames
            self.txBytes = txBytes
            self.txFrames = txFrames
            self.rxDropped = rxDropped
            self.txDropped = txDropped
        }

        /// The counters under Cloud Hypervisor's `vm.counters` names (plus the drop counts).
        public var dictionary: [String: UInt64] {
            ["rx_bytes": rxBytes, "rx_frames": rxFrames, "tx_bytes": txBytes, "tx_frames": txFrames,
             "rx_dropped": rxDropped, "tx_dropped": txDropped]
        }
    }

    /// What a running device works with (from activation to reset).
    struct Session: Sendable {
        var memory: GuestMemory
        var interrupt: any VirtioInterrupt
        var features: UInt64

        /// The queue pairs the driver may use: all of them with multiqueue, else one.
        func usablePairs(of count: Int) -> Int {
            features & VirtioNetABI.Feature.multiQueue != 0 ? count : 1
        }

        /// The control queue's index, when the driver negotiated one.
        func controlQueue(pairs: Int) -> Int? {
            guard features & VirtioNetABI.Feature.controlQueue != 0 else { return nil }
            return 2 * usablePairs(of: pairs)
        }
    }

    /// One queue pair: its backend, receive side and transmit queue, each behind its own lock.
    final class Pair: Sendable {
        let backend: any NetBackend
        let receiver = Mutex(NetReceiver())
        let transmitter = Mutex<SplitQueue?>(nil)
        init(backend: any NetBackend) { self.backend = backend }
    }

    /// Everything the device keeps besides the queues (which each pair and the control
    /// queue keep behind their own locks, so that pairs are served from several threads):
    /// configuration, negotiation, the running session, a recorded failure and the
    /// counters, one value behind one lock.
    struct Core: Sendable {
        var mac: MACAddress
        var acknowledged: UInt64 = 0
        var activePairs = 1
        /// The guest receive offloads in force (feature bits), from activation or `GUEST_OFFLOADS_SET`.
        var guestOffloads: UInt64 = 0
        var session: Session?
        /// A failure met while receiving outside a notification (reported at the next one).
        var failure: VirtioDeviceError?
        var counters = Counters()
    }

    /// The backends, one per queue pair.
    public let backends: [any NetBackend]
    /// The options the device was made with.
    public let options: Options
    let pairs: [Pair]
    let control = Mutex<SplitQueue?>(nil)
    /// Where a transmit queue refilled during a batch is handed back (see ``serveTransmitLater(burst:with:)``).
    private let transmitLater = Mutex<(burst: Int, schedule: @Sendable (Int) -> Void)?>(nil)
    let core: Mutex<Core>

    /// Creates the device with one queue pair per backend.
    ///
    /// - Throws: ``VirtioNetError`` for no backend, too many, a queue size that is not a
    ///   power of two up to 32768, a multicast MAC address or an MTU below 68.
    public init(backends: [any NetBackend], options: Options = Options()) throws(VirtioNetError) {
        guard !backends.isEmpty else { throw .noBackend }
        guard backends.count <= VirtioNetABI.maxQueuePairs else {
            throw .tooManyQueuePairs(backends.count, maximum: VirtioNetABI.maxQueuePairs)
        }
        let size = options.queueSize
        guard size != 0, size <= SplitQueue.maximumSize, size & (size - 1) == 0 else { throw .invalidQueueSize(size) }
        guard !options.mac.isMulticast else { throw .multicastMAC(options.mac) }
        if let mtu = options.mtu, mtu < VirtioNetABI.minimumMTU { throw .mtuTooSmall(mtu) }
        self.backends = backends
        self.options = options
        self.pairs = backends.map(Pair.init)
        self.core = Mutex(Core(mac: options.mac))
    }

    // MARK: - Identity

    /// ``VirtioDeviceType/net``.
    public var deviceType: VirtioDeviceType { .net }

    /// Cloud Hypervisor's set: MAC, link status, control queue with guest-offload control,
    /// mergeable receive buffers, the checksum / TSO / UFO offloads the options allow, the
    /// MTU when one is given, multiqueue with several pairs, and the ring features
    /// (event index, indirect descriptors).
    public var features: UInt64 {
        typealias F = VirtioNetABI.Feature
        var bits = F.mac | F.status | F.controlQueue | F.mergeableReceiveBuffers
            | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
        if options.offloadChecksum {
            bits |= F.checksum | F.guestChecksum | F.controlGuestOffloads
            if options.offloadTSO { bits |= F.hostTSO4 | F.hostTSO6 | F.hostECN | F.guestTSO4 | F.guestTSO6 | F.guestECN }
            if options.offloadUFO { bits |= F.hostUFO | F.guestUFO }
        }
        if options.mtu != nil { bits |= F.mtu }
        if pairs.count > 1 { bits |= F.multiQueue }
        return bits
    }

    /// Two queues per pair and the control queue, all of ``Options/queueSize`` entries.
    public var queueMaxSizes: [UInt16] { Array(repeating: options.queueSize, count: 2 * pairs.count + 1) }

    /// The number of queue pairs (backends).
    public var pairCount: Int { pairs.count }
    /// The index of pair `pair`'s receive queue.
    public static func receiveQueueIndex(pair: Int) -> Int { 2 * pair }
    /// The index of pair `pair`'s transmit queue.
    public static func transmitQueueIndex(pair: Int) -> Int { 2 * pair + 1 }
    /// The control queue's index when the driver negotiated multiqueue (or the device has
    /// one pair); without multiqueue a driver finds it at index 2.
    public var controlQueueIndex: Int { 2 * pairs.count }

    // MARK: - State

    /// Whether the driver set the device running and no reset followed.
    public var isActivated: Bool { core.withLock { $0.session != nil } }
    /// The counters so far.
    public var counters: Counters { core.withLock { $0.counters } }
    /// The MAC address the configuration reports (the driver may change it with `MAC_ADDR_SET`).
    public var mac: MACAddress { core.withLock { $0.mac } }
    /// The queue pairs the driver asked to use with `VQ_PAIRS_SET` (1 until it does).
    public var activeQueuePairs: Int { core.withLock { $0.activePairs } }
    /// The failure met while receiving outside a notification, if any since the last
    /// reset: the device stops and the next notification reports it.
    public var receiveError: VirtioDeviceError? { core.withLock { $0.failure } }

    // MARK: - Configuration space

    /// Reads `struct virtio_net_config` (little-endian): `mac`, `status` (link up),
    /// `max_virtqueue_pairs` and `mtu`. Bytes past its end read 0.
    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        guard (1...8).contains(size), offset < VirtioNetABI.ConfigOffset.length else { return 0 }
        typealias C = VirtioNetABI.ConfigOffset
        var layout = core.withLock { $0.mac.bytes }
        layout += Self.le16(VirtioNetABI.statusLinkUp)
        layout += Self.le16(UInt16(pairs.count))
        layout += Self.le16(options.mtu ?? 0)
        return VirtioConfigSpace.read(layout, offset: offset, size: size)
    }

    /// Ignored: every field is read-only for a virtio 1.x driver (the MAC changes through
    /// the control queue).
    public func writeConfig(offset: UInt64, size: Int, value: UInt64) {}

    /// Records the features the driver accepted; the backends learn the receive offloads
    /// at activation.
    public func acknowledgeFeatures(_ features: UInt64) {
        core.withLock { $0.acknowledged = features }
    }

    // MARK: - Lifecycle

    /// Starts the device: tells every backend which receive offloads the driver accepted,
    /// then serves the queues. Queue pair 0 must be enabled.
    ///
    /// - Throws: ``VirtioDeviceError/queueIndexOutOfRange(index:count:)`` when the
    ///   transport gives another number of queues, ``VirtioDeviceError/queueNotEnabled(index:)``
    ///   when pair 0 is not enabled, ``VirtioDeviceError/backend(_:)`` when a backend
    ///   refuses the offloads.
    public func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        let expected = queueMaxSizes.count
        guard queues.count == expected else { throw .queueIndexOutOfRange(index: queues.count, count: expected) }
        for index in 0..<2 where !queues[index].isReady { throw .queueNotEnabled(index: index) }
        let features = core.withLock { core in
            core.activePairs = 1
            return core.acknowledged
        }
        try applyOffloads(VirtioNetABI.offloads(forGuestFeatures: features))
        let running = Session(memory: memory, interrupt: interrupt, features: features)
        let usable = running.usablePairs(of: pairs.count)
        for (index, pair) in pairs.enumerated() {
            pair.receiver.withLock { $0.start(index < usable ? queues[2 * index] : nil) }
            pair.transmitter.withLock { $0 = index < usable ? queues[2 * index + 1] : nil }
        }
        control.withLock { $0 = running.controlQueue(pairs: pairs.count).map { queues[$0] } }
        core.withLock { core in
            core.guestOffloads = features & VirtioNetABI.Feature.guestOffloads
            core.failure = nil
            core.session = running
        }
    }

    /// Forgets the queues and the negotiated features and returns the MAC address to the
    /// configured one. The backends stay, and so does a packet read but not yet delivered.
    public func reset() {
        core.withLock { $0.session = nil }
        for pair in pairs {
            pair.receiver.withLock { $0.stop() }
            pair.transmitter.withLock { $0 = nil }
        }
        control.withLock { $0 = nil }
        core.withLock { core in
            core = Core(mac: options.mac, counters: core.counters)
        }
    }

    // MARK: - Queue processing

    /// Serves queue `index` after the driver notified it: a receive queue takes waiting
    /// packets into its new buffers, a transmit queue sends its chains, the control queue
    /// runs its commands. Notifications of queues the driver may not use (beyond the pairs
    /// it negotiated) are ignored.
    ///
    /// - Throws: ``VirtioDeviceError`` when the driver broke the rules, a backend failed,
    ///   or an earlier ``backendReadable(pair:)`` recorded a failure; the transport then
    ///   sets `DEVICE_NEEDS_RESET`.
    public func processQueue(_ index: Int) throws(VirtioDeviceError) {
        if let recorded = core.withLock({ $0.failure }) { throw recorded }
        let count = queueMaxSizes.count
        guard index >= 0, index < count else { throw .queueIndexOutOfRange(index: index, count: count) }
        guard let running = core.withLock({ $0.session }) else { throw .notActivated }
        if index == running.controlQueue(pairs: pairs.count) {
            try serveControl(index: index, session: running)
            return
        }
        guard index / 2 < running.usablePairs(of: pairs.count) else { return }
        if index % 2 == 0 {
            if let error = serveReceive(pair: index / 2, session: running, notified: true) { throw error }
        } else {
            try serveTransmit(pair: index / 2, session: running)
        }
    }

    /// Takes the packets waiting in pair `pair`'s backend into the guest's receive buffers,
    /// until the backend is empty or the buffers run out; the VMM calls it when the
    /// backend's ``NetBackend/readinessDescriptor`` is readable.
    ///
    /// A failure (a broken receive chain, a failing backend) is recorded in
    /// ``receiveError`` and reported at the next notification, so the transport sets
    /// `DEVICE_NEEDS_RESET`.
    ///
    /// - Returns: ``wantsBackendEvents(pair:)`` afterwards: `false` when the VMM should
    ///   stop watching the backend (no receive buffers, not running, or failed) until the
    ///   driver notifies the pair's receive queue.
    @discardableResult
    public func backendReadable(pair: Int) -> Bool {
        guard pairs.indices.contains(pair), core.withLock({ $0.failure }) == nil,
              let running = core.withLock({ $0.session }), pair < running.usablePairs(of: pairs.count) else { return false }
        if let error = serveReceive(pair: pair, session: running, notified: false) {
            core.withLock { $0.failure = error }
            return false
        }
        return wantsBackendEvents(pair: pair)
    }

    /// Whether pair `pair` can take packets now: the device runs, has not failed, and the
    /// guest has receive buffers (or has not run out of them yet). While it is `false`,
    /// the VMM need not watch the backend's readiness descriptor.
    public func wantsBackendEvents(pair: Int) -> Bool {
        guard pairs.indices.contains(pair), core.withLock({ $0.failure }) == nil,
              let running = core.withLock({ $0.session }), pair < running.usablePairs(of: pairs.count) else { return false }
        return pairs[pair].receiver.withLock { $0.isReceiving }
    }

    /// Runs the receive side of `pair`; returns the failure, if any.
    private func serveReceive(pair: Int, session running: Session, notified: Bool) -> VirtioDeviceError? {
        let index = Self.receiveQueueIndex(pair: pair)
        let mergeable = running.features & VirtioNetABI.Feature.mergeableReceiveBuffers != 0
        let backend = pairs[pair].backend
        var traffic = NetTraffic()
        let error: VirtioDeviceError? = pairs[pair].receiver.withLock { receiver in
            var error: VirtioDeviceError?
            do throws(VirtioDeviceError) {
                try receiver.deliver(from: backend, memory: running.memory, queueIndex: index, mergeable: mergeable,
                                     notified: notified, limiter: options.receiveRateLimiter, traffic: &traffic)
            } catch let failure {
                error = failure
            }
            if traffic.used, receiver.needsNotification(in: running.memory) { running.interrupt.signalQueue(index) }
            return error
        }
        if traffic.frames > 0 || traffic.dropped > 0 {
            core.withLock { core in
                core.counters.rxFrames += traffic.frames
                core.counters.rxBytes += traffic.bytes
                core.counters.rxDropped += traffic.dropped
            }
        }
        return error
    }

    /// Makes each transmit notification send a bounded round, as QEMU's transmit bottom half
    /// does: after `burst` packets (QEMU's `tx_burst` default, 256), or when the driver keeps
    /// adding chains once notifications are re-armed and the device sent once more, the
    /// queue's index goes to `schedule`, and the VMM serves it again
    /// (``VirtioPCIDevice/notifyQueue(_:)``) after the other events waiting: the host's
    /// acknowledgements read from the backend meanwhile reach the guest between two rounds
    /// instead of after a long burst. Without it a notification sends until the queue stays empty.
    public func serveTransmitLater(burst: Int = VirtioNet.transmitBurst, with schedule: @escaping @Sendable (_ queue: Int) -> Void) {
        transmitLater.withLock { $0 = (max(1, burst), schedule) }
    }

    /// Runs the transmit queue of `pair`.
    private func serveTransmit(pair: Int, session running: Session) throws(VirtioDeviceError) {
        let index = Self.transmitQueueIndex(pair: pair)
        let backend = pairs[pair].backend
        var traffic = NetTraffic()
        let later = transmitLater.withLock { $0 }
        var pending = false
        let error: VirtioDeviceError? = pairs[pair].transmitter.withLock { queue in
            // No queue: a reset raced with the notification.
            guard queue != nil else { return .notActivated }
            guard queue!.isReady else { return .queueNotEnabled(index: index) }
            var error: VirtioDeviceError?
            do throws(VirtioDeviceError) {
                pending = try NetTransmitter.transmit(&queue!, queueIndex: index, to: backend, memory: running.memory,
                                                      limiter: options.transmitRateLimiter, interrupt: running.interrupt,
                                                      burst: later?.burst, traffic: &traffic)
            } catch let failure {
                error = failure
            }
            if traffic.used, (try? queue!.needsNotification(in: running.memory)) == true {
                running.interrupt.signalQueue(index)
            }
            return error
        }
        if traffic.frames > 0 || traffic.dropped > 0 {
            core.withLock { core in
                core.counters.txFrames += traffic.frames
                core.counters.txBytes += traffic.bytes
                core.counters.txDropped += traffic.dropped
            }
        }
        if let error { throw error }
        if pending { later?.schedule(index) }
    }

    /// Gives `offloads` to every backend.
    ///
    /// - Throws: ``VirtioDeviceError/backend(_:)`` naming the pair whose backend refused.
    func applyOffloads(_ offloads: NetOffloads) throws(VirtioDeviceError) {
        for (index, backend) in backends.enumerated() {
            do {
                try backend.setOffloads(offloads)
            } catch {
                throw .backend("the backend of queue pair \(index) refused the offloads \(offloads.rawValue): \(error)")
            }
        }
    }

    /// `value` as two little-endian bytes.
    static func le16(_ value: UInt16) -> [UInt8] { [UInt8(truncatingIfNeeded: value), UInt8(value >> 8)] }
}

/// The failures of building a ``VirtioNet``, each naming the faulty option.
public enum VirtioNetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No backend was given: a network device needs at least one queue pair.
    case noBackend
    /// More backends than virtio-net allows queue pairs.
    case tooManyQueuePairs(Int, maximum: Int)
    /// The queue size is not a power of two between 1 and 32768.
    case invalidQueueSize(UInt16)
    /// The MAC address is a multicast (group) address.
    case multicastMAC(MACAddress)
    /// The MTU is below the 68 bytes IPv4 needs.
    case mtuTooSmall(UInt16)

    /// A sentence that explains the failure.
    public var description: String {
        switch self {
        case .noBackend:
            "a virtio-net device needs at least one backend (one per queue pair)"
        case let .tooManyQueuePairs(count, maximum):
            "\(count) queue pairs requested; virtio-net allows at most \(maximum)"
        case let .invalidQueueSize(size):
            "queue size \(size) is invalid: it must be a power of two between 1 and \(SplitQueue.maximumSize)"
        case let .multicastMAC(mac):
            "MAC address \(mac) is a multicast address; a network card needs a unicast one (first byte even)"
        case let .mtuTooSmall(mtu):
            "MTU \(mtu) is too small: it must be at least \(VirtioNetABI.minimumMTU)"
        }
    }
}

/// What one batch of queue processing did, added to the counters once.
struct NetTraffic {
    /// Frames moved.
    var frames: UInt64 = 0
    /// Frame bytes moved (headers not counted).
    var bytes: UInt64 = 0
    /// Packets dropped.
    var dropped: UInt64 = 0
    /// Whether a chain went to the used ring (so the driver may need an interrupt).
    var used = false

    /// Counts one packet of `length` bytes (header included) moved.
    mutating func moved(_ length: Int) {
        frames += 1
        bytes += UInt64(max(0, length - VirtioNetABI.headerSize))
    }
}
