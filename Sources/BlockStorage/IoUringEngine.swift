#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CIOUring
import Synchronization

/// One io_uring instance for one request queue (liburing underneath): requests are put on
/// numbered slots (virtio-blk uses the descriptor head), submitted in a batch, and their
/// completions reaped later, in whatever order the kernel finishes them. Each slot keeps its
/// own iovec list until completion, in storage made once for the engine (only a request
/// with more than ``inlineVectors`` buffers allocates); short transfers are resubmitted
/// inside the engine and reported once whole.
///
/// An eventfd registered with the ring (``eventDescriptor``) is signalled on every
/// completion, so an epoll loop can reap them. The engine is not thread-safe: its owner
/// calls it under one lock.
public final class IoUringEngine: @unchecked Sendable {
    /// What a slot runs.
    public enum Operation: Int32, Sendable {
        /// `IORING_OP_READV`.
        case read = 0
        /// `IORING_OP_WRITEV`.
        case write = 1
        /// `IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`.
        case dataSync = 2
    }

    /// The iovecs each slot holds without allocating.
    public static let inlineVectors = 16

    /// Whether this host runs io_uring with the operations a disk needs (readv, writev,
    /// fsync), probed once per process as Cloud Hypervisor's `block_io_uring_is_supported`
    /// does: `nil` when it does, otherwise the reason (the kernel or a seccomp filter
    /// refusing `io_uring_setup`, or an opcode missing).
    public static let unsupportedReason: String? = {
        let result = ciouring_probe()
        if result == 0 { return nil }
        if result == -EOPNOTSUPP { return "the kernel's io_uring lacks READV, WRITEV or FSYNC" }
        return "io_uring_setup failed: \(hostErrorString(-result)) (errno \(-result))"
    }()

    /// Whether io_uring can be used (``unsupportedReason`` is nil).
    public static var isSupported: Bool { unsupportedReason == nil }

    private let engine: OpaquePointer
    /// The number of slots (valid slot numbers are `0..<slots`).
    public let slots: Int

    /// An engine with `slots` slots and a ring of as many entries.
    ///
    /// - Throws: ``BlockError/host(call:errno:)`` naming `io_uring_setup` (or the eventfd
    ///   registration) when the ring cannot be made.
    public init(slots: Int) throws(BlockError) {
        var error: Int32 = 0
        let count = UInt32(max(1, min(slots, 32768)))
        guard let engine = ciouring_create(count, count, UInt32(Self.inlineVectors), &error) else {
            throw .host(call: "io_uring_setup(\(count) entries)", errno: -error)
        }
        self.engine = engine
        self.slots = Int(count)
    }

    deinit {
        // Waits for requests still in flight: the kernel may write into their buffers.
        ciouring_destroy(engine)
    }

    /// The eventfd signalled on each completion (non-blocking).
    public var eventDescriptor: Int32 { ciouring_eventfd(engine) }

    /// The number of slots with a request not yet reaped.
    public var inFlight: Int { Int(ciouring_in_flight(engine)) }

    /// Adds one to the eventfd's counter, as a completion does: a request finished without the
    /// ring (synchronously) is then reaped by the same event-loop path.
    public func signalEvent() { ciouring_signal_event(engine) }

    /// Resets the eventfd's counter (call before reaping, so no completion is missed).
    public func clearEvent() { ciouring_clear_event(engine) }

    /// Queues `operation` on `slot` over `buffers` (ignored for ``Operation/dataSync``) at
    /// `offset` of `descriptor`; nothing reaches the kernel before ``submit()``.
    ///
    /// The buffers must stay valid until the slot's completion is reaped.
    ///
    /// - Throws: ``BlockError/host(call:errno:)`` with `EBUSY` (the slot is taken), `EINVAL`
    ///   (no such slot), `EAGAIN` (the submission queue is full), `ENOMEM`.
    public func prepare(slot: Int, _ operation: Operation, descriptor: Int32, buffers: [UnsafeMutableRawBufferPointer],
                        offset: UInt64) throws(BlockError) {
        guard slot >= 0, slot < slots else { throw .host(call: "io_uring prepare (slot \(slot) of \(slots))", errno: EINVAL) }
        let result = withUnsafeTemporaryAllocation(of: iovec.self, capacity: max(1, buffers.count)) { vectors -> Int32 in
            for (index, buffer) in buffers.enumerated() {
                vectors[index] = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            }
            // SAFETY: the engine copies the iovecs; the buffers they name outlive the request (caller's contract).
            return ciouring_prepare(engine, UInt32(slot), operation.rawValue, descriptor, vectors.baseAddress,
                                    UInt32(buffers.count), offset)
        }
        if result < 0 { throw .host(call: "io_uring prepare (slot \(slot))", errno: -result) }
    }

    /// Hands every queued request to the kernel (`io_uring_enter`).
    public func submit() throws(BlockError) {
        let result = ciouring_submit(engine)
        if result < 0 { throw .host(call: "io_uring_enter (submit)", errno: -result) }
    }

    /// Takes every finished request without blocking and calls `body` with its slot and
    /// result: the bytes moved, or a negative errno (`-ENODATA` for a read that met the end
    /// of the file). Returns how many there were.
    @discardableResult
    public func reap(_ body: (_ slot: Int, _ result: Int32) -> Void) -> Int {
        var total = 0
        let batch = 32
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: batch) { slotsOut in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: batch) { resultsOut in
                while true {
                    // SAFETY: both arrays hold `batch` elements, the count passed.
                    let found = Int(ciouring_reap(engine, slotsOut.baseAddress, resultsOut.baseAddress, UInt32(batch)))
                    for index in 0..<found { body(Int(slotsOut[index]), resultsOut[index]) }
                    total += found
                    if found < batch { break }
                }
            }
        }
        return total
    }

    /// Blocks until a completion is waiting (returns at once when nothing is in flight).
    public func wait() throws(BlockError) {
        let result = ciouring_wait(engine)
        if result < 0 { throw .host(call: "io_uring_enter (wait)", errno: -result) }
    }
}
