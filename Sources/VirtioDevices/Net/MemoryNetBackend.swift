import Synchronization

/// A ``NetBackend`` in memory, for tests and fuzzing: a bounded FIFO of incoming packets
/// that the test injects, the list of packets the guest sent, and a record of every
/// ``setOffloads(_:)`` call. It has no readiness descriptor: callers tell the device
/// when they injected packets.
///
/// ```swift
/// let backend = MemoryNetBackend()
/// backend.inject(header + frame)               // a packet for the guest
/// net.backendReadable(pair: 0)
/// let sent = backend.takeSent()                // packets the guest transmitted
/// ```
public final class MemoryNetBackend: NetBackend {
    /// One backend operation, to script failures.
    public enum Operation: Sendable, Hashable {
        /// ``receive(into:)``.
        case receive
        /// ``send(_:)``.
        case send
        /// ``setOffloads(_:)``.
        case setOffloads
    }

    struct State {
        var incoming: [[UInt8]] = []
        var incomingStart = 0
        var sent: [[UInt8]] = []
        var offloads: [NetOffloads] = []
        var failures: [Operation: NetBackendError] = [:]
        var receiveCalls = 0
    }

    /// The most injected packets waiting at once.
    public let receiveCapacity: Int
    /// The most sent packets kept before ``send(_:)`` answers `false` (a full queue);
    /// `nil` for no bound.
    public let sendCapacity: Int?
    private let state = Mutex(State())

    /// An empty backend holding up to `receiveCapacity` incoming packets (at least one)
    /// and, when `sendCapacity` is given, refusing packets once that many were sent and not taken.
    public init(receiveCapacity: Int = 256, sendCapacity: Int? = nil) {
        self.receiveCapacity = max(1, receiveCapacity)
        self.sendCapacity = sendCapacity.map { max(0, $0) }
    }

    /// Always `nil`: the test says when packets arrived.
    public var readinessDescriptor: Int32? { nil }

    /// Queues `packet` (header and frame) for the guest; `false` when the FIFO is full and
    /// the packet was not taken.
    @discardableResult
    public func inject(_ packet: [UInt8]) -> Bool {
        state.withLock { state in
            guard state.incoming.count - state.incomingStart < receiveCapacity else { return false }
            state.incoming.append(packet)
            return true
        }
    }

    /// Injected packets not received yet.
    public var pendingCount: Int { state.withLock { $0.incoming.count - $0.incomingStart } }
    /// The packets sent so far and not taken, in order.
    public var sent: [[UInt8]] { state.withLock { $0.sent } }
    /// Every offload set the device asked for, in order.
    public var offloadHistory: [NetOffloads] { state.withLock { $0.offloads } }
    /// How many times ``receive(into:)`` was called (to check the device does not poll needlessly).
    public var receiveCalls: Int { state.withLock { $0.receiveCalls } }

    /// Returns the packets sent so far and forgets them (making room under ``sendCapacity``).
    public func takeSent() -> [[UInt8]] {
        state.withLock { state in
            defer { state.sent.removeAll() }
            return state.sent
        }
    }

    /// Makes the next call of `operation` throw `error` (once).
    public func failNext(_ operation: Operation, with error: NetBackendError) {
        state.withLock { $0.failures[operation] = error }
    }

    /// Copies the oldest injected packet into `buffers` (cut at their end) and returns the
    /// bytes stored, or `nil` when none waits.
    public func receive(into buffers: [UnsafeMutableRawBufferPointer]) throws(NetBackendError) -> Int? {
        let next: Result<[UInt8]?, NetBackendError> = state.withLock { state in
            state.receiveCalls += 1
            if let error = state.failures.removeValue(forKey: .receive) { return .failure(error) }
            guard state.incomingStart < state.incoming.count else { return .success(nil) }
            let packet = state.incoming[state.incomingStart]
            state.incomingStart += 1
            if state.incomingStart > 64, state.incomingStart * 2 > state.incoming.count {
                state.incoming.removeFirst(state.incomingStart)
                state.incomingStart = 0
            }
            return .success(packet)
        }
        guard let packet = try next.get() else { return nil }
        var copied = 0
        for buffer in buffers where copied < packet.count {
            let count = min(buffer.count, packet.count - copied)
            guard count > 0 else { continue }
            packet[copied..<(copied + count)].withUnsafeBytes { source in
                // SAFETY: `source` holds `count` bytes and `buffer` at least as many.
                buffer.copyMemory(from: source)
            }
            copied += count
        }
        return copied
    }

    /// Keeps a copy of the packet gathered from `buffers`; `false` when ``sendCapacity``
    /// packets are already kept.
    public func send(_ buffers: [UnsafeRawBufferPointer]) throws(NetBackendError) -> Bool {
        var packet: [UInt8] = []
        packet.reserveCapacity(buffers.reduce(0) { $0 + $1.count })
        for buffer in buffers { packet += buffer }
        let outcome: Result<Bool, NetBackendError> = state.withLock { state in
            if let error = state.failures.removeValue(forKey: .send) { return .failure(error) }
            if let limit = sendCapacity, state.sent.count >= limit { return .success(false) }
            state.sent.append(packet)
            return .success(true)
        }
        return try outcome.get()
    }

    /// Records `offloads`.
    public func setOffloads(_ offloads: NetOffloads) throws(NetBackendError) {
        let failure: NetBackendError? = state.withLock { state in
            if let error = state.failures.removeValue(forKey: .setOffloads) { return error }
            state.offloads.append(offloads)
            return nil
        }
        if let failure { throw failure }
    }
}
