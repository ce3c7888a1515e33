import GuestMemory
import RateLimiter
import VirtioQueue

/// The receive side of one queue pair: its queue, the chains popped but not filled yet,
/// and at most one packet read from the backend but not delivered.
///
/// A packet goes straight from the backend into guest memory when the first chain can
/// hold any packet (``VirtioNetABI/maxPacketSize`` bytes, as Linux posts them without
/// mergeable buffers but with large receive offloads), or, with mergeable buffers, when
/// the chains available hold one together: the backend then writes across them and the
/// packet takes as many as it fills (`num_buffers` says how many; the others stay in hand
/// for the next packet). Otherwise it is read into a bounce buffer allocated once, then
/// copied into one chain, or with mergeable buffers into as many chains as it needs. A
/// packet is read only when at least one chain waits for it, so packets stay in the
/// backend while the guest posts no buffers.
///
/// Each chain's writable room and host views are worked out once, when it is popped; a
/// packet's chains go to the used ring together, published with one used-index store.
struct NetReceiver: Sendable {
    /// A chain popped for receiving, with what every packet needs of it worked out once.
    struct HandChain: @unchecked Sendable {
        /// The chain as popped.
        let chain: DescriptorChain
        /// The bytes its writable buffers hold.
        let capacity: Int
        /// Host views of its writable buffers, in order.
        // SAFETY: they point into guest memory, which outlives the device's session; the
        // receiver that holds them is only used behind its pair's lock.
        let host: [UnsafeMutableRawBufferPointer]

        /// Resolves `chain`'s writable buffers in `memory`.
        init(_ chain: DescriptorChain, memory: GuestMemory) throws(GuestMemoryError) {
            self.chain = chain
            capacity = chain.writableLength
            var views: [UnsafeMutableRawBufferPointer] = []
            views.reserveCapacity(chain.writable.count)
            // Through the host addresses the queue found when it validated the buffers.
            try ChainSpan.forEachHostBuffer(chain.writable, start: 0, count: capacity, in: memory) { views.append($0) }
            host = views
        }
    }

    /// Reused storage for the host buffers one packet is read into.
    private struct Scratch: @unchecked Sendable {
        // SAFETY: filled and emptied within one delivery, behind the pair's lock.
        var buffers: [UnsafeMutableRawBufferPointer] = []
        var lengths: [Int] = []
    }

    /// The receive queue while the device runs (and the driver enabled it).
    private(set) var queue: SplitQueue?
    /// Chains popped from the queue and not yet used, oldest first.
    private var inHand: [HandChain] = []
    /// Storage reused from packet to packet.
    private var scratch = Scratch()
    /// The length of the packet waiting in ``bounce``, if one does.
    private(set) var held: Int?
    /// Room for one whole packet.
    private var bounce = [UInt8](repeating: 0, count: VirtioNetABI.maxPacketSize)
    /// Whether the last delivery stopped because the guest had no buffer left.
    private(set) var waitingForBuffers = false

    /// Whether packets can flow: a ready queue whose buffers have not run out.
    var isReceiving: Bool { queue?.isReady == true && !waitingForBuffers }

    /// Takes the queue of a newly activated device (`nil` when the driver may not use it).
    mutating func start(_ queue: SplitQueue?) {
        self.queue = queue
        inHand = []
        waitingForBuffers = false
    }

    /// The queue's state with the chains in hand given back (`nextAvailable` moved back
    /// before them, so a restored device pops them again), or `nil` without a queue.
    var savedQueue: SplitQueueState? {
        guard var saved = queue else { return nil }
        saved.nextAvailable &-= UInt16(truncatingIfNeeded: inHand.count)
        return saved.state
    }

    /// The packet read from the backend but not delivered yet, if any.
    var heldPacket: [UInt8]? { held.map { Array(bounce[0..<$0]) } }

    /// Holds `packet` (a restore) in place of any packet held now; its length must be at
    /// most ``VirtioNetABI/maxPacketSize``.
    mutating func restoreHeld(_ packet: [UInt8]?) {
        guard let packet else {
            held = nil
            return
        }
        bounce.replaceSubrange(0..<packet.count, with: packet)
        held = packet.count
    }

    /// Forgets the queue and its chains (a reset); a held packet stays for the next driver.
    mutating func stop() {
        start(nil)
    }

    /// Whether the driver wants an interrupt for the chains used since the last one.
    mutating func needsNotification(in memory: GuestMemory) -> Bool {
        guard queue != nil else { return false }
        return (try? queue!.needsNotification(in: memory)) == true
    }

    /// Moves packets from `backend` into the queue until the backend is empty or the
    /// buffers run out. When the buffers ran out, asks the driver to notify the device of
    /// new ones (publishing `avail_event` with event index, or clearing
    /// `VIRTQ_USED_F_NO_NOTIFY`) and looks again for buffers posted meanwhile; when the
    /// backend ran dry instead, asks the driver not to notify (`VIRTQ_USED_F_NO_NOTIFY`;
    /// with event index `avail_event` stays behind), as vhost-net does, since the next
    /// packet brings the device back to the queue anyway.
    ///
    /// With a `limiter`, a packet is read only when it admits one (``RateLimiter/admitsAny()``)
    /// and then costs one operation and its frame bytes; when it refuses, delivery stops
    /// (notifications left as they are) until the limiter's wake-up.
    ///
    /// - Parameter notified: whether the driver notified the queue; when it did, a queue
    ///   it did not enable is an error, otherwise there is simply nothing to do.
    /// - Throws: ``VirtioDeviceError`` for a broken chain, a chain without writable
    ///   buffers, or a failing backend; `traffic` then holds what was done before.
    mutating func deliver(from backend: any NetBackend, memory: GuestMemory, queueIndex: Int, mergeable: Bool,
                          notified: Bool, limiter: RateLimiter? = nil, traffic: inout NetTraffic) throws(VirtioDeviceError) {
        // No queue: a reset raced with this call (a notification then reports `notActivated`,
        // which the transport ignores).
        guard var queue else {
            if notified { throw .notActivated }
            return
        }
        guard queue.isReady else {
            if notified { throw .queueNotEnabled(index: queueIndex) }
            return
        }
        defer { self.queue = queue }
        let context = Context(backend: backend, memory: memory, index: queueIndex, mergeable: mergeable, limiter: limiter)
        waitingForBuffers = false
        delivering: while true {
            switch try fill(&queue, context, &traffic) {
            case .outOfBuffers:
                // Re-arm notifications, then look again for chains posted meanwhile.
                guard try Self.step(queueIndex, { () throws(QueueError) in try queue.enableNotification(in: memory) }) else {
                    waitingForBuffers = true
                    return
                }
            case .throttled:
                return
            case .backendEmpty:
                break delivering
            }
        }
        // The backend ran dry while buffers remain: the device looks at the queue again when
        // the backend has packets, so the driver need not notify new buffers (fewer exits).
        try Self.step(queueIndex) { () throws(QueueError) in try queue.disableNotification(in: memory) }
    }

    /// What one delivery works with.
    private struct Context {
        let backend: any NetBackend
        let memory: GuestMemory
        let index: Int
        let mergeable: Bool
        let limiter: RateLimiter?
    }

    /// Why ``fill(_:_:_:)`` stopped.
    private enum FillOutcome {
        /// The guest has no buffer left.
        case outOfBuffers
        /// The backend has no packet left.
        case backendEmpty
        /// The rate limiter refused the next packet.
        case throttled
    }

    /// Delivers packets until the buffers, the backend's packets or the rate limit run out.
    private mutating func fill(_ queue: inout SplitQueue, _ context: Context,
                               _ traffic: inout NetTraffic) throws(VirtioDeviceError) -> FillOutcome {
        let headerSize = VirtioNetABI.headerSize
        while true {
            if held == nil {
                guard try ensureInHand(1, &queue, context) else { return .outOfBuffers }
                if let limiter = context.limiter, !limiter.admitsAny() { return .throttled }
                if inHand[0].capacity >= VirtioNetABI.maxPacketSize {
                    guard let length = try receiveDirect(context) else { return .backendEmpty }
                    context.limiter?.charge(bytes: UInt64(max(0, length - headerSize)), operations: 1)
                    guard length >= headerSize else {
                        traffic.dropped += 1
                        continue
                    }
                    try Self.writeNumBuffers(1, into: inHand[0], context)
                    scratch.lengths.removeAll(keepingCapacity: true)
                    scratch.lengths.append(length)
                    try useScratchLengths(&queue, context, &traffic)
                    traffic.moved(length)
                    continue
                }
                // Mergeable buffers: with enough chains in hand for any packet, the backend
                // writes straight into them, as many as the packet fills.
                if context.mergeable, try gatherInHand(covering: VirtioNetABI.maxPacketSize, &queue, context) {
                    guard let length = try receiveAcrossHand(context) else { return .backendEmpty }
                    context.limiter?.charge(bytes: UInt64(max(0, length - headerSize)), operations: 1)
                    guard length >= headerSize else {
                        traffic.dropped += 1
                        continue
                    }
                    try Self.writeNumBuffers(UInt16(scratch.lengths.count), into: inHand[0], context)
                    try useScratchLengths(&queue, context, &traffic)
                    traffic.moved(length)
                    continue
                }
                guard let length = try receiveIntoBounce(context) else { return .backendEmpty }
                context.limiter?.charge(bytes: UInt64(max(0, length - headerSize)), operations: 1)
                guard length >= headerSize else {
                    traffic.dropped += 1
                    continue
                }
                held = length
            }
            guard let length = held else { continue }
            guard let count = try chainsNeeded(for: length, &queue, context) else { return .outOfBuffers }
            held = nil
            guard count > 0 else {
                traffic.dropped += 1
                continue
            }
            try place(length, chains: count, &queue, context, &traffic)
            traffic.moved(length)
        }
    }

    /// How many chains from the front of the hand the held packet of `length` bytes
    /// fills; `nil` when the queue has too few chains for now, 0 when the packet can
    /// never fit (without mergeable buffers: a chain too small; with them: every
    /// descriptor of the queue in hand and still too small), so it is dropped.
    private mutating func chainsNeeded(for length: Int, _ queue: inout SplitQueue,
                                       _ context: Context) throws(VirtioDeviceError) -> Int? {
        guard context.mergeable else {
            guard try ensureInHand(1, &queue, context) else { return nil }
            return inHand[0].capacity >= length ? 1 : 0
        }
        var total = 0
        var position = 0
        while total < length {
            if position == inHand.count {
                let descriptors = inHand.reduce(0) { $0 + ($1.chain.isIndirect ? 1 : $1.chain.descriptors.count) }
                // The driver cannot post more than the queue holds: the packet will never fit.
                if descriptors >= Int(queue.size) { return 0 }
                guard try ensureInHand(position + 1, &queue, context) else { return nil }
            }
            total += inHand[position].capacity
            position += 1
        }
        return position
    }

    /// Copies the held packet of `length` bytes into the first `count` chains in hand,
    /// `num_buffers` set to `count`, and puts them in the used ring.
    private mutating func place(_ length: Int, chains count: Int, _ queue: inout SplitQueue,
                                _ context: Context, _ traffic: inout NetTraffic) throws(VirtioDeviceError) {
        bounce[VirtioNetABI.numBuffersOffset] = UInt8(truncatingIfNeeded: count)
        bounce[VirtioNetABI.numBuffersOffset + 1] = UInt8(truncatingIfNeeded: count >> 8)
        var offset = 0
        scratch.lengths.removeAll(keepingCapacity: true)
        for hand in inHand.prefix(count) {
            let take = min(hand.capacity, length - offset)
            for piece in ChainSpan(hand.chain.writable, start: 0, count: take).pieces {
                do {
                    try context.memory.write(bytes: bounce[offset..<(offset + piece.length)], at: piece.address)
                } catch {
                    throw .queue(index: context.index, .memory(error))
                }
                offset += piece.length
            }
            scratch.lengths.append(take)
        }
        try useScratchLengths(&queue, context, &traffic)
    }

    /// Puts the first chains in hand in the used ring, one for each of `scratch.lengths`
    /// with that length, and publishes them with one used-index store (the guest sees
    /// the packet whole, `num_buffers` chains at once).
    private mutating func useScratchLengths(_ queue: inout SplitQueue, _ context: Context,
                                            _ traffic: inout NetTraffic) throws(VirtioDeviceError) {
        let memory = context.memory
        let count = scratch.lengths.count
        for position in 0..<count {
            let head = inHand[position].chain.head
            let length = UInt32(scratch.lengths[position])
            try Self.step(context.index) { () throws(QueueError) in
                try queue.stageUsed(head: head, length: length, in: memory)
            }
        }
        try Self.step(context.index) { () throws(QueueError) in try queue.publishUsed(in: memory) }
        if count > 0 { traffic.used = true }
        inHand.removeFirst(count)
    }

    /// Pops chains until `count` are in hand; `false` when the queue runs out first.
    ///
    /// - Throws: a broken chain, or ``VirtioDeviceError/noWritableBuffer(queue:head:)``.
    private mutating func ensureInHand(_ count: Int, _ queue: inout SplitQueue, _ context: Context) throws(VirtioDeviceError) -> Bool {
        let memory = context.memory
        while inHand.count < count {
            guard let chain = try Self.step(context.index, { () throws(QueueError) in try queue.popDescriptorChain(in: memory) }) else {
                return false
            }
            guard !chain.writable.isEmpty else { throw .noWritableBuffer(queue: context.index, head: chain.head) }
            do {
                inHand.append(try HandChain(chain, memory: memory))
            } catch {
                throw .queue(index: context.index, .memory(error))
            }
        }
        return true
    }

    /// Pops chains until those in hand can hold `bytes` together; `false` when the queue
    /// runs out first (the chains popped stay in hand).
    private mutating func gatherInHand(covering bytes: Int, _ queue: inout SplitQueue, _ context: Context) throws(VirtioDeviceError) -> Bool {
        var total = inHand.reduce(0) { $0 + $1.capacity }
        while total < bytes {
            guard try ensureInHand(inHand.count + 1, &queue, context) else { return false }
            total += inHand[inHand.count - 1].capacity
        }
        return true
    }

    /// Lets the backend write the next packet straight across the chains in hand (which
    /// hold at least ``VirtioNetABI/maxPacketSize`` bytes); leaves in `scratch.lengths` the
    /// bytes each chain got, first to last, only the chains the packet reached (at least
    /// one), and returns the packet's length, or `nil` when the backend had no packet.
    private mutating func receiveAcrossHand(_ context: Context) throws(VirtioDeviceError) -> Int? {
        scratch.buffers.removeAll(keepingCapacity: true)
        var left = VirtioNetABI.maxPacketSize
        var reached = 0
        while left > 0, reached < inHand.count {
            left -= Self.append(inHand[reached].host, upTo: left, into: &scratch.buffers)
            reached += 1
        }
        let capacity = VirtioNetABI.maxPacketSize - left
        guard let length = try Self.receive(from: context.backend, into: scratch.buffers, capacity: capacity,
                                            queue: context.index) else {
            return nil
        }
        scratch.lengths.removeAll(keepingCapacity: true)
        var remaining = length
        for hand in inHand.prefix(reached) where remaining > 0 || scratch.lengths.isEmpty {
            let take = min(hand.capacity, remaining)
            // The backend wrote through host pointers, which dirty tracking does not see.
            if context.memory.dirtyTracking { Self.markDirty(hand, bytes: take, context) }
            scratch.lengths.append(take)
            remaining -= take
        }
        return length
    }

    /// Lets the backend write the next packet straight into the first chain in hand's
    /// writable buffers (which hold at least ``VirtioNetABI/maxPacketSize`` bytes).
    private mutating func receiveDirect(_ context: Context) throws(VirtioDeviceError) -> Int? {
        scratch.buffers.removeAll(keepingCapacity: true)
        let first = inHand[0]
        let capacity = Self.append(first.host, upTo: VirtioNetABI.maxPacketSize, into: &scratch.buffers)
        guard let length = try Self.receive(from: context.backend, into: scratch.buffers, capacity: capacity,
                                            queue: context.index) else {
            return nil
        }
        // The backend wrote through host pointers, which dirty tracking does not see.
        if context.memory.dirtyTracking { Self.markDirty(first, bytes: length, context) }
        return length
    }

    /// Appends `host`'s buffers to `buffers`, cut after `limit` bytes; returns the bytes appended.
    private static func append(_ host: [UnsafeMutableRawBufferPointer], upTo limit: Int,
                               into buffers: inout [UnsafeMutableRawBufferPointer]) -> Int {
        var taken = 0
        for buffer in host where taken < limit {
            let count = min(buffer.count, limit - taken)
            buffers.append(count == buffer.count ? buffer : UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
            taken += count
        }
        return taken
    }

    /// Marks the first `bytes` of `hand`'s writable buffers dirty.
    private static func markDirty(_ hand: HandChain, bytes: Int, _ context: Context) {
        var left = bytes
        for piece in ChainSpan(hand.chain.writable, start: 0, count: bytes).pieces where left > 0 {
            context.memory.markDirty(piece.address, length: min(left, piece.length))
            left -= piece.length
        }
    }

    /// Reads the next packet into the bounce buffer.
    private mutating func receiveIntoBounce(_ context: Context) throws(VirtioDeviceError) -> Int? {
        let capacity = bounce.count
        let outcome: Result<Int?, VirtioDeviceError> = bounce.withUnsafeMutableBytes { buffer in
            do throws(VirtioDeviceError) {
                return .success(try Self.receive(from: context.backend, into: [buffer], capacity: capacity, queue: context.index))
            } catch {
                return .failure(error)
            }
        }
        return try outcome.get()
    }

    /// Asks the backend for a packet, checking the length it reports.
    private static func receive(from backend: any NetBackend, into buffers: [UnsafeMutableRawBufferPointer],
                                capacity: Int, queue: Int) throws(VirtioDeviceError) -> Int? {
        let length: Int?
        do {
            length = try backend.receive(into: buffers)
        } catch {
            throw .backend("receiving for queue \(queue) failed: \(error)")
        }
        guard let length else { return nil }
        guard (0...capacity).contains(length) else {
            throw .backend("the backend of queue \(queue) reported \(length) bytes received into \(capacity) bytes of buffers")
        }
        return length
    }

    /// Writes `num_buffers` (le16 at header offset 10) into `chain`'s writable buffers.
    private static func writeNumBuffers(_ value: UInt16, into hand: HandChain, _ context: Context) throws(VirtioDeviceError) {
        let bytes = VirtioNet.le16(value)
        var index = 0
        for piece in ChainSpan(hand.chain.writable, start: VirtioNetABI.numBuffersOffset, count: 2).pieces {
            do {
                try context.memory.write(bytes: bytes[index..<(index + piece.length)], at: piece.address)
            } catch {
                throw .queue(index: context.index, .memory(error))
            }
            index += piece.length
        }
    }

    /// Runs a queue operation, wrapping its error for queue `index`.
    private static func step<T>(_ index: Int, _ body: () throws(QueueError) -> T) throws(VirtioDeviceError) -> T {
        do { return try body() } catch { throw .queue(index: index, error) }
    }
}
