import DeviceModel
import GuestMemory
import Synchronization
import VirtioQueue

/// A virtio socket device (type 19, virtio 1.2 section 5.10) with Cloud Hypervisor's hybrid
/// vsock behind it: guest stream sockets reach host Unix sockets through a
/// ``VsockHostBackend``.
///
/// Queues: 0 receive (host to guest), 1 transmit (guest to host), 2 event (never used,
/// as in Cloud Hypervisor). The configuration space is the guest's 64-bit context id.
/// Host streams are watched through a ``VsockEventWatcher``; the VMM calls
/// ``hostReady(descriptor:events:)`` when one is ready. A failure met there (a broken
/// chain) is kept and thrown at the next queue notification, which sets `DEVICE_NEEDS_RESET`.
public final class VirtioVsock: VirtioDevice {
    /// Cloud Hypervisor's queue size, for all three queues.
    public static let defaultQueueSize: UInt16 = 256
    /// The receive queue's index.
    public static let receiveQueue = 0
    /// The transmit queue's index.
    public static let transmitQueue = 1
    /// The event queue's index.
    public static let eventQueue = 2

    /// What the device keeps in a snapshot: its context id and the connections that were
    /// live. Connections themselves (host streams, buffered bytes, credit) are not saved,
    /// as in Cloud Hypervisor: the restored device sends the guest a reset for each one.
    public struct State: Codable, Equatable, Sendable {
        /// One live connection.
        public struct Connection: Codable, Equatable, Sendable {
            /// The host port.
            public var localPort: UInt32
            /// The guest port.
            public var peerPort: UInt32

            /// A connection between `localPort` and `peerPort`.
            public init(localPort: UInt32, peerPort: UInt32) {
                self.localPort = localPort
                self.peerPort = peerPort
            }
        }

        /// The guest's context id.
        public var cid: UInt64
        /// The connections live when the state was taken.
        public var connections: [Connection]

        /// A state with these fields.
        public init(cid: UInt64, connections: [Connection]) {
            self.cid = cid
            self.connections = connections
        }
    }

    struct Running {
        var memory: GuestMemory
        var queues: [SplitQueue]
        var interrupt: any VirtioInterrupt
    }

    struct Core {
        var running: Running?
        var muxer: VsockMuxer
        var failure: VirtioDeviceError?
    }

    /// The guest's context id.
    public let cid: UInt64
    private let maxQueueSize: UInt16
    private let clock: @Sendable () -> UInt64
    private let core: Mutex<Core>

    /// A device for guest context id `cid`, its connections served by `backend`, host
    /// descriptors watched by `watcher`. `clock` gives milliseconds of a monotonic clock
    /// (for the 2-second request and shutdown deadlines).
    public init(cid: UInt64, backend: any VsockHostBackend, watcher: any VsockEventWatcher,
                queueSize: UInt16 = VirtioVsock.defaultQueueSize,
                clock: @escaping @Sendable () -> UInt64 = VirtioVsock.monotonicMilliseconds) {
        self.cid = cid
        self.maxQueueSize = queueSize
        self.clock = clock
        core = Mutex(Core(running: nil, muxer: VsockMuxer(guestCID: cid, backend: backend, watcher: watcher), failure: nil))
    }

    /// Milliseconds since the first call, on a monotonic clock.
    public static let monotonicMilliseconds: @Sendable () -> UInt64 = {
        let elapsed = ContinuousClock.now - processStart
        return UInt64(max(0, elapsed.components.seconds)) * 1000 + UInt64(max(0, elapsed.components.attoseconds)) / 1_000_000_000_000_000
    }

    /// ``VirtioDeviceType/vsock``.
    public var deviceType: VirtioDeviceType { .vsock }
    /// `VIRTIO_F_IN_ORDER`, as Cloud Hypervisor offers (the transport adds `VIRTIO_F_VERSION_1`).
    public var features: UInt64 { VirtioFeature.inOrder }
    /// Three queues: receive, transmit, event.
    public var queueMaxSizes: [UInt16] { [maxQueueSize, maxQueueSize, maxQueueSize] }
    /// Whether the device is running.
    public var isActivated: Bool { core.withLock { $0.running != nil } }
    /// The live connections as (host port, guest port).
    public var connections: [(localPort: UInt32, peerPort: UInt32)] { core.withLock { $0.muxer.connectionPorts } }
    /// A connection's state, nil when there is none.
    public func connectionState(localPort: UInt32, peerPort: UInt32) -> VsockConnectionState? {
        core.withLock { $0.muxer.connectionState(localPort: localPort, peerPort: peerPort) }
    }
    /// The failure met outside a queue notification, if any since the last reset.
    public var hostSideFailure: VirtioDeviceError? { core.withLock { $0.failure } }

    /// `guest_cid` (u64, little-endian, at offset 0): whole, or as two 32-bit halves.
    /// Other accesses read 0.
    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        switch (offset, size) {
        case (0, 8): cid
        case (0, 4): cid & 0xffff_ffff
        case (4, 4): cid >> 32
        default: 0
        }
    }

    /// Keeps the queues (receive and transmit must be enabled) and starts watching the
    /// host listener.
    public func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        guard queues.count == 3 else { throw .queueIndexOutOfRange(index: queues.count, count: 3) }
        for index in [Self.receiveQueue, Self.transmitQueue] where !queues[index].isReady { throw .queueNotEnabled(index: index) }
        core.withLock { core in
            core.running = Running(memory: memory, queues: queues, interrupt: interrupt)
            core.failure = nil
            core.muxer.startListening()
        }
    }

    /// Forgets the queues. Connections and the listener stay, as in Cloud Hypervisor.
    public func reset() {
        core.withLock { core in
            core.running = nil
            core.failure = nil
        }
    }

    /// Stops watching and closes every host stream (the VM is going away).
    public func close() {
        core.withLock { core in
            core.running = nil
            core.muxer.close()
        }
    }

    /// The context id and live connections, and the three queues while running.
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        core.withLock { core in
            let state = State(cid: cid, connections: core.muxer.connectionPorts.map { State.Connection(localPort: $0.localPort, peerPort: $0.peerPort) })
            var queues: [Int: SplitQueueState] = [:]
            if let running = core.running {
                for (index, queue) in running.queues.enumerated() { queues[index] = queue.state }
            }
            return VirtioDeviceSnapshot(state: .vsock(state), queues: queues)
        }
    }

    /// Takes a saved ``State``: queues a reset for each connection it lists, so the guest
    /// drops sockets whose host side is gone.
    ///
    /// - Throws: `DeviceStateError` for another device type or another context id.
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .vsock(let saved) = state else { throw wrongKind(state) }
        guard saved.cid == cid else {
            throw DeviceStateError(device: "virtio-vsock", reason: "cid: the state is for context id \(saved.cid), this device has \(cid)")
        }
        core.withLock { $0.muxer.queueResets(saved.connections.map { ($0.localPort, $0.peerPort) }) }
    }

    /// Serves a notified queue: transmit packets go to their connections, then owed
    /// packets fill receive buffers.
    ///
    /// - Throws: ``VirtioDeviceError`` for a broken chain (or one met earlier by
    ///   ``hostReady(descriptor:events:)``).
    public func processQueue(_ index: Int) throws(VirtioDeviceError) {
        guard (0..<3).contains(index) else { throw .queueIndexOutOfRange(index: index, count: 3) }
        let now = clock()
        let result: Result<Void, VirtioDeviceError> = core.withLock { core in
            if let failure = core.failure { return .failure(failure) }
            guard core.running != nil else { return .failure(.notActivated) }
            return Self.serve(&core, transmit: index == Self.transmitQueue, receive: index != Self.eventQueue, now: now)
        }
        if case .failure(let error) = result { throw error }
    }

    /// A watched host descriptor is ready (`events` as epoll reported them; errors count as
    /// hang-ups). Serves the queues as a transmit notification would.
    ///
    /// When another thread holds the device (a vCPU whose notification reached the BAR, which
    /// may be removing this very descriptor from the event loop and waiting for this handler
    /// to end), it returns at once without acting: the watch is level-triggered, so the
    /// readiness is reported again.
    public func hostReady(descriptor: Int32, events: VsockInterest) {
        let now = clock()
        _ = core.withLockIfAvailable { core in
            core.muxer.hostReady(descriptor: descriptor, events: events, now: now)
            guard core.running != nil, core.failure == nil else { return }
            if case .failure(let error) = Self.serve(&core, transmit: true, receive: true, now: now) { core.failure = error }
        }
    }

    /// Runs the transmit queue (when asked) and then the receive queue when a packet is
    /// owed, signalling each queue that used buffers.
    private static func serve(_ core: inout Core, transmit: Bool, receive: Bool, now: UInt64) -> Result<Void, VirtioDeviceError> {
        if transmit {
            let result = VsockQueues.transmit(&core.running!, muxer: core.muxer, now: now)
            if case .failure = result { return result }
        }
        if receive, core.muxer.hasPendingRx {
            return VsockQueues.receive(&core.running!, muxer: core.muxer, now: now)
        }
        return .success(())
    }
}

/// The reference instant of ``VirtioVsock/monotonicMilliseconds``.
private let processStart = ContinuousClock.now
