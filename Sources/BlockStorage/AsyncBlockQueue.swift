/// Asynchronous reads, writes and flushes of an image for one device queue, through an
/// ``IoUringEngine``: the device puts a request on a slot (its descriptor head), submits
/// the batch, and finishes each request when ``reap(_:)`` reports it.
///
/// A raw image's request is one ring entry on the slot of the same number. A mapped image's
/// (qcow2, with an ``AsyncExtentMapper``) is cut by the format into file extents, each one
/// ring entry on a slot of its own; the request is reported once all of its extents are
/// done (see `AsyncBlockQueue+Extents.swift`).
///
/// A request the engine cannot take as it is returns `false` from ``read(slot:into:at:)``
/// or ``write(slot:from:at:)``: the caller then runs it synchronously on the backend (an
/// `O_DIRECT` image with unaligned buffers goes through the backend's bounce buffer that
/// way). Like the engine, a queue is used under its owner's lock.
public final class AsyncBlockQueue: @unchecked Sendable {
    /// The ring.
    public let engine: IoUringEngine
    let file: ImageFile
    let descriptor: Int32
    let isDirect: Bool
    let isReadOnly: Bool
    private let size: () -> UInt64
    /// The format that maps requests to extents (nil: a raw image, one ring entry per request).
    let mapper: (any AsyncExtentMapper)?
    /// Mapped mode: the requests by slot, the ring slots' owners, and the finished requests
    /// not yet reported.
    var requests: [MappedRequest?] = []
    var extentOwner: [Int] = []
    var freeExtentSlots: [Int] = []
    var finished: [(slot: Int, result: Result<Int, BlockError>)] = []
    var mappedInFlight = 0
    /// Ring slots per request slot in mapped mode.
    static let extentsPerRequest = 4
    /// The largest request handed to the ring (results are 32-bit byte counts).
    static let largestRequest = 1 << 30

    /// A queue of `slots` slots over the open image `file`.
    ///
    /// - Throws: the engine's ``BlockError/host(call:errno:)`` when no ring can be made.
    init(file: ImageFile, slots: Int, size: @escaping () -> UInt64) throws(BlockError) {
        engine = try IoUringEngine(slots: slots)
        self.file = file
        descriptor = file.descriptor.rawValue
        isDirect = file.isDirect
        isReadOnly = file.isReadOnly
        self.size = size
        mapper = nil
    }

    /// A queue of `slots` request slots over the image `file` whose format `mapper` cuts
    /// requests into extents (``extentsPerRequest`` ring slots per request slot).
    ///
    /// - Throws: the engine's ``BlockError/host(call:errno:)`` when no ring can be made.
    public init(file: ImageFile, slots: Int, mapper: any AsyncExtentMapper, size: @escaping () -> UInt64) throws(BlockError) {
        let slots = max(1, slots)
        engine = try IoUringEngine(slots: slots * Self.extentsPerRequest)
        self.file = file
        descriptor = file.descriptor.rawValue
        isDirect = file.isDirect
        isReadOnly = file.isReadOnly
        self.size = size
        self.mapper = mapper
        requests = Array(repeating: nil, count: slots)
        extentOwner = Array(repeating: -1, count: engine.slots)
        freeExtentSlots = Array((0..<engine.slots).reversed())
    }

    deinit {
        // Mapped requests still on the ring: wait for them before the format may reuse their clusters.
        if mapper != nil { drainMapped() }
    }

    /// The eventfd signalled when a request finishes.
    public var eventDescriptor: Int32 { engine.eventDescriptor }
    /// The requests not yet reaped.
    public var inFlight: Int { mapper == nil ? engine.inFlight : mappedInFlight }

    /// Queues a read of `buffers` from `offset`; `false` when the caller must run it itself.
    ///
    /// - Throws: ``BlockError/outOfRange(offset:length:size:)``, or the engine's refusal.
    public func read(slot: Int, into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) -> Bool {
        let length = totalLength(buffers)
        try check(offset: offset, length: length)
        if mapper != nil { return try mappedRead(slot: slot, into: buffers, at: offset, length: length) }
        guard accepts(buffers.map { UnsafeRawBufferPointer($0) }, offset: offset, length: length) else { return false }
        try engine.prepare(slot: slot, .read, descriptor: descriptor, buffers: buffers, offset: offset)
        return true
    }

    /// Queues a write of `buffers` at `offset`; `false` when the caller must run it itself.
    ///
    /// - Throws: ``BlockError/readOnly``, ``BlockError/outOfRange(offset:length:size:)``, or
    ///   the engine's refusal.
    public func write(slot: Int, from buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) -> Bool {
        if isReadOnly { throw .readOnly }
        let length = totalLength(buffers)
        try check(offset: offset, length: length)
        if mapper != nil { return try mappedWrite(slot: slot, from: buffers, at: offset, length: length) }
        guard accepts(buffers, offset: offset, length: length) else { return false }
        // The kernel only reads these buffers for a write.
        try engine.prepare(slot: slot, .write, descriptor: descriptor, buffers: buffers.map { UnsafeMutableRawBufferPointer(mutating: $0) },
                           offset: offset)
        return true
    }

    /// Queues an `fdatasync` (a read-only image has nothing to flush: `false`, run it on the backend).
    /// A mapped image's flush first waits for this queue's extents in flight, then writes the
    /// format's metadata and syncs (synchronously); it is reported by the next ``reap(_:)``.
    public func flush(slot: Int) throws(BlockError) -> Bool {
        if isReadOnly { return false }
        if mapper != nil { return try mappedFlush(slot: slot) }
        try engine.prepare(slot: slot, .dataSync, descriptor: descriptor, buffers: [], offset: 0)
        return true
    }

    /// Hands the queued requests to the kernel.
    public func submit() throws(BlockError) { try engine.submit() }

    /// Reports each finished request: its slot and either the bytes moved or the failure.
    @discardableResult
    public func reap(_ body: (_ slot: Int, _ result: Result<Int, BlockError>) -> Void) -> Int {
        if mapper != nil { return mappedReap(body) }
        return engine.reap { slot, result in
            body(slot, result >= 0 ? .success(Int(result)) : .failure(.host(call: "io_uring request", errno: -result)))
        }
    }

    /// Blocks until a request finishes (at once when none is in flight).
    public func wait() throws(BlockError) {
        if mapper != nil && !finished.isEmpty { return }
        try engine.wait()
    }

    /// Resets the completion eventfd (before reaping).
    public func clearEvent() { engine.clearEvent() }

    private func check(offset: UInt64, length: Int) throws(BlockError) {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
        let size = size()
        if overflow || end > size { throw .outOfRange(offset: offset, length: UInt64(length), size: size) }
    }

    /// Empty requests, huge ones and unaligned `O_DIRECT` ones stay synchronous.
    private func accepts(_ buffers: [UnsafeRawBufferPointer], offset: UInt64, length: Int) -> Bool {
        guard length > 0, length <= Self.largestRequest, buffers.count <= ImageFile.maxVectors else { return false }
        return !isDirect || ImageFile.isAligned(buffers, offset: offset)
    }
}
