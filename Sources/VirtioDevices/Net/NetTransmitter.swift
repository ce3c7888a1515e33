import GuestMemory
import RateLimiter
import VirtioQueue

/// The transmit side of a queue pair: each chain's device-readable buffers are one
/// packet (header and frame), handed to the backend straight from guest memory.
enum NetTransmitter {
    /// Sends every available chain of `queue`, returning each with used length 0, and
    /// re-arms the driver's notifications (publishing `avail_event` with event index). With
    /// `interrupt` and event index, each chain is published as soon as it is sent and the
    /// driver interrupted when the used index passes its `used_event`; otherwise the batch is
    /// published with one used-index store and the caller interrupts.
    ///
    /// A packet shorter than its header, longer than ``VirtioNetABI/maxPacketSize``, or
    /// refused by a full backend is dropped and counted; device-writable buffers after
    /// the readable ones are ignored.
    ///
    /// With a `limiter`, each packet costs one operation and its frame bytes; a packet it
    /// refuses stays in the ring and the queue stops until the limiter's wake-up.
    ///
    /// With a `burst`, the call yields as QEMU's transmit bottom half does: it returns `true`
    /// (serve the queue again soon: the driver will not notify for what is waiting) after
    /// `burst` packets, or when chains keep coming after it re-armed notifications and sent
    /// once more; without one it sends until the queue stays empty.
    ///
    /// - Throws: ``VirtioDeviceError/queue(index:_:)`` when the driver broke the ring
    ///   rules, ``VirtioDeviceError/backend(_:)`` when the backend failed; `traffic`
    ///   holds what was done before.
    @discardableResult
    static func transmit(_ queue: inout SplitQueue, queueIndex: Int, to backend: any NetBackend, memory: GuestMemory,
                         limiter: RateLimiter? = nil, interrupt: (any VirtioInterrupt)? = nil, burst: Int? = nil,
                         traffic: inout NetTraffic) throws(VirtioDeviceError) -> Bool {
        // The chains sent go back staged and are published (per chain with `interrupt`, else
        // with one used-index store per batch) before re-arming notifications and on every way out.
        defer { try? queue.publishUsed(in: memory) }
        // One list of host buffers for the whole batch, refilled for each packet.
        var buffers: [UnsafeRawBufferPointer] = []
        buffers.reserveCapacity(8)
        var sent = 0, drains = 0
        repeat {
            drains += 1
            while let chain = try step(queueIndex, { () throws(QueueError) in try queue.popDescriptorChain(in: memory) }) {
                if let limiter, !limiter.consume(bytes: UInt64(max(0, chain.readableLength - VirtioNetABI.headerSize))) {
                    queue.undoPop()
                    return false
                }
                try send(chain, queueIndex: queueIndex, to: backend, memory: memory, buffers: &buffers, traffic: &traffic)
                try step(queueIndex) { () throws(QueueError) in try queue.stageUsed(head: chain.head, length: 0, in: memory) }
                traffic.used = true
                // Each packet sent is returned at once and the driver interrupted as soon as its
                // used_event asks, as QEMU's virtio_net_flush_tx does: a Linux driver asks at 3/4
                // of what it queued, so it frees those buffers (its socket's send budget) while
                // the rest of the batch goes out, and its acknowledgements arrive while it is
                // still polling, not in an interrupt of their own (measured nested: receive
                // interrupts per 128 MiB ~1,030 -> ~410, guest softirq time about halved).
                if let interrupt, queue.eventIndex, try step(queueIndex, { () throws(QueueError) in try queue.needsNotification(in: memory) }) {
                    interrupt.signalQueue(queueIndex)
                }
                sent += 1
                // A full burst: more are probably coming; the caller serves the queue again
                // after the other events waiting (notifications stay off meanwhile).
                if let burst, sent >= burst { return true }
            }
            try step(queueIndex) { () throws(QueueError) in try queue.publishUsed(in: memory) }
            guard try step(queueIndex, { () throws(QueueError) in try queue.enableNotification(in: memory) }) else { return false }
        } while burst == nil || drains < 2
        return true
    }

    /// Hands one chain's packet to the backend, or counts it dropped. `buffers` is the
    /// batch's reusable list (emptied and refilled here: no allocation per packet once it
    /// has grown to the longest chain).
    private static func send(_ chain: DescriptorChain, queueIndex: Int, to backend: any NetBackend, memory: GuestMemory,
                             buffers: inout [UnsafeRawBufferPointer], traffic: inout NetTraffic) throws(VirtioDeviceError) {
        let length = chain.readableLength
        guard length >= VirtioNetABI.headerSize, length <= VirtioNetABI.maxPacketSize else {
            traffic.dropped += 1
            return
        }
        buffers.removeAll(keepingCapacity: true)
        do {
            try ChainSpan.forEachHostBuffer(chain.readable, start: 0, count: length, in: memory) { buffers.append(UnsafeRawBufferPointer($0)) }
        } catch {
            throw .queue(index: queueIndex, .memory(error))
        }
        let taken: Bool
        do {
            taken = try backend.send(buffers)
        } catch {
            throw .backend("sending from queue \(queueIndex) failed: \(error)")
        }
        if taken {
            traffic.moved(length)
        } else {
            traffic.dropped += 1
        }
    }

    /// Runs a queue operation, wrapping its error for queue `index`.
    private static func step<T>(_ index: Int, _ body: () throws(QueueError) -> T) throws(VirtioDeviceError) -> T {
        do { return try body() } catch { throw .queue(index: index, error) }
    }
}
