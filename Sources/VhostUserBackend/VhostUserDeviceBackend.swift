#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import HostSystem
import Logging
import Synchronization
import VhostUser
import VirtioDevices
import VirtioQueue

/// Serves one of this package's virtio devices to a vhost-user front-end (a VMM such as
/// cloud-hypervisor or QEMU) over a Unix socket: the device's queues run in this process, on
/// guest memory the front-end shares through `SET_MEM_TABLE`, woken by the kick eventfds and
/// interrupting the guest through the call eventfds.
///
/// The device is the same passive ``VirtioDevice`` the VMM attaches to its own transport:
/// `GET_FEATURES` offers its features (with `VERSION_1` and the protocol-features bit),
/// `GET_CONFIG`/`SET_CONFIG` read and write its configuration space, and a ring's first kick
/// activates it with every ring that is set up, started (a kick eventfd) and enabled.
/// `GET_VRING_BASE` stops the device, keeping where each ring stood, so the front-end can stop
/// rings one by one and start them again later.
///
/// A malformed message ends the connection (``serve(_:)`` returns the reason); a ring the guest
/// breaks fails only that device's processing, logged.
public final class VhostUserDeviceBackend: Sendable {
    /// The device served.
    public let device: any VirtioDevice
    /// The protocol features offered.
    public let protocolFeatures: VhostUserProtocolFeatures
    /// The rings served: the device's first `ringCount` queues (a virtio-net back-end leaves
    /// the control queue to the front-end, as vhost-user-net front-ends serve it themselves).
    public let ringCount: Int
    let logger: Logger

    /// One ring as the front-end described it.
    struct Ring {
        var size: UInt16 = 0
        var address: VhostUserVringAddress?
        var base: UInt16 = 0
        var kick: OwnedFileDescriptor?
        var enabled = false
        /// A kick came while the ring was disabled: served once it is enabled.
        var kickPending = false
    }

    struct State {
        var ackedFeatures: UInt64 = 0
        var ackedProtocol: UInt64 = 0
        var memory: MemoryTable?
        var rings: [Ring]
        var active = false
    }
    let state: Mutex<State>
    let calls: CallInterrupt
    let events: EventManager

    /// A back-end for `device` serving its first `ringCount` queues (all by default),
    /// offering `protocolFeatures` (`MQ` only when it serves several rings).
    public init(device: any VirtioDevice, ringCount: Int? = nil,
                protocolFeatures: VhostUserProtocolFeatures = [.multiQueue, .replyAck, .config],
                logger: Logger = Logger(label: "vhost-user-backend")) throws(SystemError) {
        self.device = device
        self.ringCount = min(ringCount ?? device.queueMaxSizes.count, device.queueMaxSizes.count)
        self.protocolFeatures = protocolFeatures
        self.logger = logger
        state = Mutex(State(rings: Array(repeating: Ring(), count: self.ringCount)))
        calls = CallInterrupt(count: self.ringCount)
        events = try EventManager()
    }

    /// Watches a host descriptor of the device (a TAP queue) on the ring thread, edge-triggered:
    /// `handler` runs while the device is started, under the same lock as the rings' kicks.
    /// What arrives while it is stopped waits for the guest's next notification.
    public func watch(_ descriptor: Int32, _ handler: @escaping @Sendable () -> Void) throws(SystemError) {
        try events.add(descriptor, events: [.readable, .edgeTriggered]) { [weak self] _ in
            self?.state.withLock { state in
                if state.active { handler() }
            }
        }
    }

    /// Listens at `path` (or, with `client`, connects to a front-end listening there, retrying
    /// for 60 s) and serves the one connection; returns why it ended badly, `nil` when the
    /// front-end closed it.
    public func run(socketPath path: String, client: Bool = false) -> String? {
        let connection: UnixSocket
        do {
            if client {
                var waited = 0
                while true {
                    do {
                        connection = try UnixSocket.connect(to: path)
                        break
                    } catch {
                        guard waited < 60_000 else { throw error }
                        usleep(100_000)
                        waited += 100
                    }
                }
            } else {
                _ = UnixSocket.removeSocketFile(at: path)
                let listener = try UnixSocket.listening(at: path, backlog: 1)
                logger.info("listening on \(path)")
                var accepted: UnixSocket?
                while accepted == nil {
                    _ = try listener.wait(for: .readable, timeoutMilliseconds: -1)
                    accepted = try listener.accept()
                }
                connection = accepted!
            }
        } catch {
            return "\(client ? "connecting to" : "listening on") \(path): \(error)"
        }
        return serve(connection)
    }

    /// The virtio features offered: the device's, `VERSION_1` and the protocol-features bit.
    public var offeredFeatures: UInt64 { device.features | VirtioFeature.version1 | vhostUserProtocolFeaturesBit }

    /// Serves `connection` until the front-end closes it (returns `nil`) or sends a message
    /// this back-end refuses (returns the reason). The device is reset afterwards.
    public func serve(_ connection: UnixSocket) -> String? {
        do {
            try events.start(name: "vu-backend-rings")
        } catch {
            return "starting the ring thread: \(error)"
        }
        defer {
            events.stop()
            stopDevice()
        }
        let reader = MessageReader(socket: connection)
        while true {
            let message: (BackendRequest, VhostUserHeader, [OwnedFileDescriptor])
            do {
                guard let next = try reader.next() else { return nil }
                message = next
            } catch {
                return "\(error)"
            }
            let (request, header, descriptors) = message
            let outcome = handle(request, descriptors: descriptors)
            do {
                switch outcome {
                case .reply(let payload):
                    try connection.sendAll(BackendMessage.reply(header.request, payload: payload))
                case .status(let failure):
                    if let failure { logger.warning("\(header.request): \(failure)") }
                    let acknowledged = state.withLock { $0.ackedProtocol } & VhostUserProtocolFeatures.replyAck.rawValue != 0
                    if header.flags & VhostUserFlags.needReply != 0, acknowledged {
                        try connection.sendAll(BackendMessage.reply(header.request, payload: VhostUserPayload.u64(failure == nil ? 0 : 1)))
                    }
                }
            } catch {
                return "replying to \(header.request): \(error)"
            }
        }
    }

    /// What a request gave: a reply payload, or a status (`nil` on success) acknowledged when asked.
    enum Outcome {
        case reply([UInt8])
        case status(String?)
    }

    func handle(_ request: BackendRequest, descriptors: [OwnedFileDescriptor]) -> Outcome {
        switch request {
        case .getFeatures:
            return .reply(VhostUserPayload.u64(offeredFeatures))
        case .setFeatures(let features):
            let unknown = features & ~offeredFeatures
            guard unknown == 0 else { return .status("features 0x\(String(unknown, radix: 16)) were not offered") }
            state.withLock { $0.ackedFeatures = features }
            device.acknowledgeFeatures(features & ~vhostUserProtocolFeaturesBit)
            return .status(nil)
        case .setOwner:
            return .status(nil)
        case .reset:
            stopDevice()
            state.withLock { $0.rings = Array(repeating: Ring(), count: $0.rings.count) }
            return .status(nil)
        case .getProtocolFeatures:
            var offered = protocolFeatures
            if ringCount < 2 { offered.remove(.multiQueue) }
            return .reply(VhostUserPayload.u64(offered.rawValue))
        case .setProtocolFeatures(let features):
            state.withLock { $0.ackedProtocol = features & protocolFeatures.rawValue }
            return .status(nil)
        case .getQueueNum:
            return .reply(VhostUserPayload.u64(UInt64(ringCount)))
        case .getMaxMemSlots:
            return .reply(VhostUserPayload.u64(UInt64(VhostUserPayload.maxMemoryRegions)))
        case .setMemTable(let regions):
            guard !regions.isEmpty else {
                return .status(replaceMemory { _ throws(MemoryTableError) in nil })
            }
            return .status(replaceMemory { _ throws(MemoryTableError) in try MemoryTable(regions: regions, descriptors: descriptors) })
        case .addMemoryRegion(let region):
            return .status(replaceMemory { old throws(MemoryTableError) in
                guard let old else { return try MemoryTable(regions: [region], descriptors: descriptors) }
                return try old.adding(region, descriptor: descriptors[0])
            })
        case .removeMemoryRegion(let region):
            return .status(replaceMemory { old throws(MemoryTableError) in
                guard let old else { throw .unknownRegion(region.guestPhysicalAddress) }
                return try old.removing(region)
            })
        case .setVringNum(let index, let size):
            return .status(withRing(index) { ring in
                guard size != 0, size <= UInt32(device.queueMaxSizes[Int(index)]), size & (size - 1) == 0 else {
                    return "ring \(index): size \(size) is not a power of two up to \(device.queueMaxSizes[Int(index)])"
                }
                ring.size = UInt16(size)
                return nil
            })
        case .setVringAddr(let address):
            return .status(withRing(address.index) { ring in
                ring.address = address
                return nil
            })
        case .setVringBase(let index, let base):
            return .status(withRing(index) { ring in
                guard base <= UInt32(UInt16.max) else { return "ring \(index): base \(base) is not a 16-bit index" }
                ring.base = UInt16(base)
                return nil
            })
        case .getVringBase(let index):
            guard Int(index) < ringCount else { return .status("ring \(index) does not exist") }
            stopDevice()
            let (base, kick) = state.withLock { state in
                let ring = state.rings[Int(index)]
                state.rings[Int(index)].kick = nil
                state.rings[Int(index)].enabled = false
                return (ring.base, ring.kick)
            }
            if let kick { try? events.remove(kick.rawValue) }
            return .reply(VhostUserPayload.vringState(index: index, value: UInt32(base)))
        case .setVringKick(let index, let hasDescriptor):
            return .status(setKick(Int(index), descriptor: hasDescriptor ? descriptors[0] : nil))
        case .setVringCall(let index, let hasDescriptor):
            guard Int(index) < ringCount else { return .status("ring \(index) does not exist") }
            calls.set(Int(index), hasDescriptor ? descriptors[0] : nil)
            return .status(nil)
        case .setVringErr(let index, _):
            guard Int(index) < ringCount else { return .status("ring \(index) does not exist") }
            return .status(nil)  // errors are logged here; the descriptor closes with the message
        case .setVringEnable(let index, let enabled):
            var pending = false
            let failure = withRing(index) { ring in
                ring.enabled = enabled
                pending = enabled && ring.kickPending
                if enabled { ring.kickPending = false }
                return nil
            }
            // A front-end may kick before it enables the ring (a reconnecting one does).
            if failure == nil, pending { kicked(Int(index)) }
            return .status(failure)
        case .getConfig(let offset, let size, let flags):
            var payload = VhostUserPayload.config(offset: offset, size: 0, flags: flags)
            payload[4..<8] = [UInt8(truncatingIfNeeded: size), UInt8(truncatingIfNeeded: size >> 8), 0, 0]
            for byte in 0..<UInt64(size) {
                payload.append(UInt8(truncatingIfNeeded: device.readConfig(offset: UInt64(offset) + byte, size: 1)))
            }
            return .reply(payload)
        case .setConfig(let offset, _, let data):
            for (i, byte) in data.enumerated() {
                device.writeConfig(offset: UInt64(offset) + UInt64(i), size: 1, value: UInt64(byte))
            }
            return .status(nil)
        case .unsupported(let request):
            return .status("\(request) is not served by this back-end")
        }
    }

    /// Runs `body` on ring `index`'s description, stopping the device first (a ring changed
    /// under a running device would desynchronise them; the next kick starts it again).
    private func withRing(_ index: UInt32, _ body: (inout Ring) -> String?) -> String? {
        guard Int(index) < ringCount else { return "ring \(index) does not exist" }
        stopDevice()
        return state.withLock { body(&$0.rings[Int(index)]) }
    }

    private func replaceMemory(_ make: (MemoryTable?) throws(MemoryTableError) -> MemoryTable?) -> String? {
        stopDevice()
        do {
            let old = state.withLock { $0.memory }
            let table = try make(old)
            state.withLock { $0.memory = table }
            return nil
        } catch {
            return "\(error)"
        }
    }

    private func setKick(_ index: Int, descriptor: OwnedFileDescriptor?) -> String? {
        guard index < ringCount else { return "ring \(index) does not exist" }
        let old = state.withLock { state in
            let old = state.rings[index].kick
            state.rings[index].kick = nil
            return old
        }
        if let old { try? events.remove(old.rawValue) }
        guard let descriptor else { return nil }  // polling rings are not served
        let kick = descriptor
        do {
            try events.add(kick.rawValue) { [weak self] _ in
                Self.drain(kick)
                self?.kicked(index)
            }
        } catch {
            return "watching ring \(index)'s kick eventfd: \(error)"
        }
        state.withLock { $0.rings[index].kick = kick }
        // The protocol-features bit makes rings start disabled until SET_VRING_ENABLE;
        // without it a ring runs once it has a kick.
        if state.withLock({ $0.ackedFeatures }) & vhostUserProtocolFeaturesBit == 0 {
            state.withLock { $0.rings[index].enabled = true }
        }
        return nil
    }
}
