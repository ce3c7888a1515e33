import DeviceModel
import RateLimiter
import Synchronization
import VirtioQueue

extension MACAddress: Codable {
    /// Decodes the colon-separated form, refusing anything but six bytes.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let address = MACAddress(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "\(text) is not a MAC address")
        }
        self = address
    }

    /// Encodes the colon-separated form (`12:34:56:78:9a:bc`).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension VirtioNet {
    /// A network device's own state (its queues are saved by the transport; receive
    /// chains popped but not filled are given back to their ring, see ``VirtioDeviceSnapshot``).
    public struct State: Codable, Equatable, Sendable {
        /// The features the driver accepted.
        public var features: UInt64
        /// The MAC address the configuration reports (the driver may have set it).
        public var mac: MACAddress
        /// The queue pairs the driver asked for with `VQ_PAIRS_SET`.
        public var activeQueuePairs: Int
        /// The guest receive offloads in force, as feature bits.
        public var guestOffloads: UInt64
        /// The traffic counters.
        public var counters: Counters
        /// A receive failure waiting to be reported at the next notification, as text.
        public var receiveError: String?
        /// Per queue pair: the packet read from the backend but not delivered yet.
        public var heldPackets: [[UInt8]?]
        /// The receive rate limiter's buckets (`nil` without one).
        public var receiveRateLimiter: RateLimiter.State?
        /// The transmit rate limiter's buckets (`nil` without one).
        public var transmitRateLimiter: RateLimiter.State?

        /// A state with every field given.
        public init(features: UInt64, mac: MACAddress, activeQueuePairs: Int, guestOffloads: UInt64, counters: Counters,
                    receiveError: String?, heldPackets: [[UInt8]?], receiveRateLimiter: RateLimiter.State?,
                    transmitRateLimiter: RateLimiter.State?) {
            self.features = features
            self.mac = mac
            self.activeQueuePairs = activeQueuePairs
            self.guestOffloads = guestOffloads
            self.counters = counters
            self.receiveError = receiveError
            self.heldPackets = heldPackets
            self.receiveRateLimiter = receiveRateLimiter
            self.transmitRateLimiter = transmitRateLimiter
        }
    }

    /// The state and the running queues, taken with the control queue's lock, then every
    /// pair's, then the device's held (the order queue processing takes them in).
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        control.withLock { controlQueue in
            var queues: [Int: SplitQueueState] = [:]
            var held: [[UInt8]?] = []
            return withPairsLocked(pairs[...], queues: &queues, held: &held) { queues, held in
                var queues = queues
                let state = core.withLock { core in
                    if let index = core.session?.controlQueue(pairs: pairs.count), let queue = controlQueue {
                        queues[index] = queue.state
                    }
                    return State(features: core.acknowledged, mac: core.mac, activeQueuePairs: core.activePairs,
                                 guestOffloads: core.guestOffloads, counters: core.counters,
                                 receiveError: core.failure.map { "\($0)" }, heldPackets: held,
                                 receiveRateLimiter: options.receiveRateLimiter?.saveState(),
                                 transmitRateLimiter: options.transmitRateLimiter?.saveState())
                }
                return VirtioDeviceSnapshot(state: .net(state), queues: queues)
            }
        }
    }

    /// Holds each pair's receive and transmit locks in turn while recording them, then runs `body`.
    private func withPairsLocked(_ rest: ArraySlice<Pair>, queues: inout [Int: SplitQueueState], held: inout [[UInt8]?],
                                 _ body: ([Int: SplitQueueState], [[UInt8]?]) -> VirtioDeviceSnapshot) -> VirtioDeviceSnapshot {
        guard let pair = rest.first else { return body(queues, held) }
        let index = rest.startIndex
        return pair.receiver.withLock { receiver in
            pair.transmitter.withLock { transmitter in
                if let saved = receiver.savedQueue { queues[Self.receiveQueueIndex(pair: index)] = saved }
                if let queue = transmitter { queues[Self.transmitQueueIndex(pair: index)] = queue.state }
                held.append(receiver.heldPacket)
                return withPairsLocked(rest.dropFirst(), queues: &queues, held: &held, body)
            }
        }
    }

    /// Takes the negotiated features, MAC, queue pairs, offloads (given to the backends
    /// again), counters, held packets and rate limiter states.
    ///
    /// - Throws: `DeviceStateError` naming the field: another device type, feature or
    ///   offload bits not offered, a multicast MAC, a pair count or held packet list that
    ///   does not fit this device, a held packet shorter than a header or longer than
    ///   ``VirtioNetABI/maxPacketSize``, a rate limiter state that does not fit, or
    ///   backends that refuse the offloads.
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .net(let saved) = state else { throw wrongKind(state) }
        func refuse(_ reason: String) -> DeviceStateError { DeviceStateError(device: "virtio-net", reason: reason) }
        let extra = saved.features & ~(features | VirtioFeature.transportOffered)
        guard extra == 0 else { throw refuse("features: bits 0x\(String(extra, radix: 16)) were not offered by this device") }
        let offloads = saved.guestOffloads & ~(saved.features & VirtioNetABI.Feature.guestOffloads)
        guard offloads == 0 else {
            throw refuse("guestOffloads: bits 0x\(String(offloads, radix: 16)) are not negotiated receive offloads")
        }
        guard !saved.mac.isMulticast else { throw refuse("mac: \(saved.mac) is a multicast address") }
        guard (1...pairs.count).contains(saved.activeQueuePairs) else {
            throw refuse("activeQueuePairs: \(saved.activeQueuePairs) is outside 1...\(pairs.count)")
        }
        guard saved.heldPackets.count == pairs.count else {
            throw refuse("heldPackets: \(saved.heldPackets.count) entries saved, this device has \(pairs.count) queue pairs")
        }
        for (pair, packet) in saved.heldPackets.enumerated() {
            guard let packet else { continue }
            guard (VirtioNetABI.headerSize...VirtioNetABI.maxPacketSize).contains(packet.count) else {
                throw refuse("heldPackets[\(pair)]: \(packet.count) bytes is outside "
                    + "\(VirtioNetABI.headerSize)...\(VirtioNetABI.maxPacketSize)")
            }
        }
        let limiters = [("receiveRateLimiter", options.receiveRateLimiter, saved.receiveRateLimiter),
                        ("transmitRateLimiter", options.transmitRateLimiter, saved.transmitRateLimiter)]
        for (field, limiter, limiterState) in limiters {
            switch (limiter, limiterState) {
            case (nil, nil): break
            case (nil, .some): throw refuse("\(field): saved with a rate limiter, but this device has none")
            case (.some, nil): throw refuse("\(field): saved without a rate limiter, but this device has one")
            case (.some(let limiter), .some(let limiterState)):
                do { try limiter.checkState(limiterState) } catch { throw refuse("\(field): \(error)") }
            }
        }
        let running = core.withLock { $0.session != nil }
        if running {
            do {
                try applyOffloads(VirtioNetABI.offloads(forGuestFeatures: saved.guestOffloads))
            } catch {
                throw refuse("guestOffloads: \(error)")
            }
        }
        for (_, limiter, limiterState) in limiters {
            if let limiter, let limiterState { try? limiter.restoreState(limiterState) }
        }
        for (pair, packet) in zip(pairs, saved.heldPackets) {
            pair.receiver.withLock { $0.restoreHeld(packet) }
        }
        core.withLock { core in
            core.acknowledged = saved.features
            core.session?.features = saved.features
            core.mac = saved.mac
            core.activePairs = saved.activeQueuePairs
            core.guestOffloads = saved.guestOffloads
            core.counters = saved.counters
            core.failure = saved.receiveError.map { .backend("restored receive failure: \($0)") }
        }
    }
}
