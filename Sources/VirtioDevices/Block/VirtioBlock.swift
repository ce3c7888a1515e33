import BlockStorage
import GuestMemory
import RateLimiter
import Synchronization
import VirtioQueue

/// A virtio block device (type 2, virtio 1.x section 5.2) over a ``BlockBackend``: reads,
/// writes, flush, `GET_ID`, discard and write-zeroes on one or more request queues.
///
/// Request-level failures (a sector past the end, a backend error, a write to a read-only
/// disk) complete the request with `VIRTIO_BLK_S_IOERR`; an unknown request type completes
/// with `VIRTIO_BLK_S_UNSUPP`. A chain that breaks the virtqueue rules, or that has no byte
/// for the status, throws: the transport then sets `DEVICE_NEEDS_RESET`.
///
/// With asynchronous queues (``asyncQueues``, io_uring over a raw or qcow2 image), reads, writes
/// and flushes are handed to the ring and complete later, several at a time and in any
/// order: the event loop calls ``processCompletions(_:)`` when a queue's completion eventfd
/// fires. Everything else (and every request the ring cannot take) runs synchronously.
/// ``drain()`` (pause, snapshot, migration) and ``reset()`` wait for requests in flight.
///
/// With a ``RateLimiter`` in ``Options/rateLimiter``, each request costs one operation and,
/// for reads and writes, its data bytes; a request the limiter refuses stays in the
/// available ring and the queue stops until the limiter's wake-up, when the owner
/// notifies the queues again.
public final class VirtioBlock: VirtioDevice {
    /// Cloud Hypervisor's default queue size.
    public static let defaultQueueSize: UInt16 = 128
    /// The most segments one discard or write-zeroes request may carry.
    public static let maxDiscardSegments = 1

    /// How the device presents its backend.
    public struct Options: Sendable {
        /// The serial returned by `GET_ID` (at most 20 bytes are used).
        public var serial: [UInt8] = []
        /// The number of request queues (`num_queues=`).
        public var queueCount = 1
        /// The maximum size of each queue (`queue_size=`).
        public var queueSize: UInt16 = VirtioBlock.defaultQueueSize
        /// The logical block size advertised to the driver (512 or a power of two up to 4096).
        public var logicalBlockSize: UInt32 = 512

        /// Throttles the requests of every queue together (`nil`: no limit).
        public var rateLimiter: RateLimiter?

        /// One queue of 128 entries, 512-byte blocks, no serial, no rate limit.
        public init(serial: [UInt8] = [], queueCount: Int = 1, queueSize: UInt16 = VirtioBlock.defaultQueueSize,
                    logicalBlockSize: UInt32 = 512, rateLimiter: RateLimiter? = nil) {
            self.serial = serial
            self.queueCount = queueCount
            self.queueSize = queueSize
            self.logicalBlockSize = logicalBlockSize
            self.rateLimiter = rateLimiter
        }
    }

    /// Cumulative request counters (Cloud Hypervisor's `vm.counters` names).
    public struct Counters: Sendable, Equatable, Codable {
        /// Bytes read by the guest.
        public var readBytes: UInt64 = 0
        /// Bytes written by the guest.
        public var writeBytes: UInt64 = 0
        /// Read requests completed.
        public var readOps: UInt64 = 0
        /// Write requests completed.
        public var writeOps: UInt64 = 0
        /// Requests completed with an error status.
        public var errors: UInt64 = 0

        /// Counters with the given values (all zero by default).
        public init(readBytes: UInt64 = 0, writeBytes: UInt64 = 0, readOps: UInt64 = 0, writeOps: UInt64 = 0, errors: UInt64 = 0) {
            self.readBytes = readBytes
            self.writeBytes = writeBytes
            self.readOps = readOps
            self.writeOps = writeOps
            self.errors = errors
        }

        /// Adds `other`'s counts to these.
        mutating func add(_ other: Counters) {
            readBytes &+= other.readBytes
            writeBytes &+= other.writeBytes
            readOps &+= other.readOps
            writeOps &+= other.writeOps
            errors &+= other.errors
        }

        /// The counters as `vm.counters` prints them.
        public var dictionary: [String: UInt64] {
            ["read_bytes": readBytes, "write_bytes": writeBytes, "read_ops": readOps, "write_ops": writeOps]
        }
    }

    /// A request handed to the ring, kept by its descriptor head until it completes.
    struct Pending {
        enum Kind { case read, write, flush }
        var kind: Kind
        /// Where the status byte goes.
        var statusAddress: GuestAddress
        /// The data bytes the request moves (a read's used length less the status byte).
        var length: Int
        /// A read's guest ranges, marked dirty when it completes.
        var span: ChainSpan?
    }

    /// One queue's serving state: the ring, the requests in flight by head, and whether a
    /// reset retired it (a notification or completion that raced with the reset then does nothing).
    struct QueueWork {
        var queue: SplitQueue
        var pending: [Pending?]
        var retired = false
        /// Host buffer lists reused by every synchronous request.
        var scratch = RequestScratch()
    }

    /// One request queue with its own lock, so that queues can be served from several threads.
    final class QueueBox: Sendable {
        let work: Mutex<QueueWork>
        /// The queue's io_uring (used only under `work`'s lock), nil for a synchronous queue.
        let async: AsyncBlockQueue?
        init(_ queue: SplitQueue, slots: Int, async: AsyncBlockQueue?) {
            work = Mutex(QueueWork(queue: queue, pending: Array(repeating: nil, count: async == nil ? 0 : slots)))
            self.async = async
        }
    }

    struct Running: Sendable {
        var memory: GuestMemory
        var queues: [QueueBox]
        var interrupt: any VirtioInterrupt
        var features: UInt64
    }

    /// The disk.
    public let backend: any BlockBackend
    /// The options the device was made with.
    public let options: Options
    /// One asynchronous queue per request queue (empty: every request runs synchronously).
    public let asyncQueues: [AsyncBlockQueue]
    /// Everything the device keeps except the queues (each behind its own lock, so that
    /// queues can be served from several threads): one value behind one lock.
    struct Core: Sendable {
        var running: Running?
        /// The features the driver accepted.
        var negotiated: UInt64 = 0
        /// The config space's `writeback` byte: 1 write-back (flush needed), 0 write-through.
        var writeback: UInt8 = 1
        var counters = Counters()
    }

    let core = Mutex(Core())

    /// Creates the device over `backend`; with `asyncQueues` (one per request queue, as
    /// ``makeAsyncQueues(backend:options:)`` makes them) reads, writes and flushes go through them.
    public init(backend: any BlockBackend, options: Options = Options(), asyncQueues: [AsyncBlockQueue] = []) {
        self.backend = backend
        var options = options
        options.queueCount = max(1, options.queueCount)
        self.options = options
        self.asyncQueues = asyncQueues.count == options.queueCount ? asyncQueues : []
    }

    /// The backend's asynchronous queues for a device with `options` (one per request queue,
    /// each with a slot per descriptor), or none when the backend runs synchronously.
    ///
    /// - Throws: ``BlockError/host(call:errno:)`` when a ring cannot be made.
    public static func makeAsyncQueues(backend: any BlockBackend, options: Options) throws(BlockError) -> [AsyncBlockQueue] {
        var queues: [AsyncBlockQueue] = []
        for _ in 0..<max(1, options.queueCount) {
            guard let queue = try backend.makeAsyncQueue(slots: Int(options.queueSize)) else { return [] }
            queues.append(queue)
        }
        return queues
    }

    /// ``VirtioDeviceType/block``.
    public var deviceType: VirtioDeviceType { .block }

    /// Cloud Hypervisor's set: flush with a switchable cache, block size, topology, segment
    /// limit, read-only when the backend is, several queues when asked, discard and
    /// write-zeroes when the backend frees space, event index and indirect descriptors.
    public var features: UInt64 {
        typealias F = VirtioBlockABI.Feature
        var bits = F.flush | F.configWCE | F.blockSize | F.topology | F.segMax
            | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
        if backend.isReadOnly { bits |= F.readOnly }
        if options.queueCount > 1 { bits |= F.multiQueue }
        if backend.supportsDiscard && !backend.isReadOnly { bits |= F.discard | F.writeZeroes }
        return bits
    }

    /// `queueCount` queues of `queueSize` entries.
    public var queueMaxSizes: [UInt16] { Array(repeating: options.queueSize, count: options.queueCount) }

    /// The counters so far.
    public var counters: Counters { core.withLock { $0.counters } }

    /// Whether the device is running.
    public var isActivated: Bool { core.withLock { $0.running != nil } }

    /// Changes the disk's size (`vm.resize-disk`): the backend grows or shrinks, the
    /// capacity in the configuration space follows and a running device tells the guest
    /// with a configuration-change interrupt (Linux's virtio_blk then reads the new capacity).
    ///
    /// - Throws: ``BlockError/other(_:)`` for a size that is not a multiple of 512 bytes, or
    ///   the backend's refusal; the size is unchanged then.
    public func resize(to newSize: UInt64) throws(BlockError) {
        let sector = UInt64(VirtioBlockABI.sectorSize)
        guard newSize % sector == 0 else { throw .other("the new size \(newSize) is not a multiple of \(sector) bytes") }
        try backend.resize(to: newSize)
        core.withLock { $0.running?.interrupt }?.signalConfig()
    }

    /// The configuration space (`struct virtio_blk_config`, 60 bytes).
    var configSpace: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 60)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            for index in 0..<MemoryLayout<T>.size { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (index * 8)) }
        }
        put(backend.size / VirtioBlockABI.sectorSize, at: 0)            // capacity
        put(UInt32(0), at: 8)                                           // size_max (not offered)
        put(UInt32(max(1, Int(options.queueSize) - 2)), at: 12)         // seg_max
        put(options.logicalBlockSize, at: 20)                           // blk_size
        let exponent = UInt8(max(0, (UInt32(backend.preferredAlignment).trailingZeroBitCount) - options.logicalBlockSize.trailingZeroBitCount))
        bytes[24] = exponent                                            // physical_block_exp
        put(UInt16(1), at: 26)                                          // min_io_size (in logical blocks)
        bytes[32] = core.withLock { $0.writeback }                      // writeback
        put(UInt16(options.queueCount), at: 34)                         // num_queues
        let discardAlignment = options.logicalBlockSize / UInt32(VirtioBlockABI.sectorSize)
        put(UInt32.max / UInt32(VirtioBlockABI.sectorSize), at: 36)     // max_discard_sectors
        put(UInt32(Self.maxDiscardSegments), at: 40)                    // max_discard_seg
        put(discardAlignment, at: 44)                                   // discard_sector_alignment
        put(UInt32.max / UInt32(VirtioBlockABI.sectorSize), at: 48)     // max_write_zeroes_sectors
        put(UInt32(Self.maxDiscardSegments), at: 52)                    // max_write_zeroes_seg
        bytes[56] = 1                                                   // write_zeroes_may_unmap
        return bytes
    }

    /// Reads the configuration space; bytes beyond it read as 0.
    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        VirtioConfigSpace.read(configSpace, offset: offset, size: size)
    }

    /// Only `writeback` (offset 32) is writable, and only with `VIRTIO_BLK_F_CONFIG_WCE`.
    public func writeConfig(offset: UInt64, size: Int, value: UInt64) {
        guard offset <= 32, offset + UInt64(size) > 32 else { return }
        let byte = UInt8(truncatingIfNeeded: value >> ((32 - offset) * 8))
        core.withLock { core in
            guard core.negotiated & VirtioBlockABI.Feature.configWCE != 0 else { return }
            core.writeback = byte == 0 ? 0 : 1
        }
    }

    /// Remembers the negotiated features (flush and write-back depend on them).
    public func acknowledgeFeatures(_ features: UInt64) {
        core.withLock { $0.negotiated = features }
    }

    /// Keeps the queues; every queue must be enabled.
    public func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        guard !queues.isEmpty else { throw .queueIndexOutOfRange(index: 0, count: 0) }
        for (index, queue) in queues.enumerated() where !queue.isReady {
            // Linux enables every queue it was offered; a driver that skips one cannot use it.
            if index == 0 { throw .queueNotEnabled(index: index) }
        }
        let slots = Int(options.queueSize)
        let boxes = queues.enumerated().map { index, queue in
            QueueBox(queue, slots: slots, async: asyncQueues.indices.contains(index) ? asyncQueues[index] : nil)
        }
        core.withLock { core in
            core.running = Running(memory: memory, queues: boxes, interrupt: interrupt, features: core.negotiated)
        }
    }

    /// Waits for the requests in flight (their results are dropped: the driver gave the
    /// buffers up), forgets the queues and returns the cache mode to write-back.
    public func reset() {
        let boxes = core.withLock { $0.running?.queues ?? [] }
        for box in boxes { box.work.withLock { Self.retire(&$0, async: box.async) } }
        core.withLock { core in
            core.running = nil
            core.writeback = 1
        }
    }

    /// Serves every available request on queue `index`, then signals the driver if it asked.
    public func processQueue(_ index: Int) throws(VirtioDeviceError) {
        guard index >= 0, index < options.queueCount else { throw .queueIndexOutOfRange(index: index, count: options.queueCount) }
        guard let state = core.withLock({ $0.running }) else { throw .notActivated }
        let box = state.queues[index]
        let result: Result<Void, VirtioDeviceError> = box.work.withLock { work in
            guard !work.retired else { return .success(()) }
            return serve(&work, async: box.async, index: index, state: state)
        }
        if case .failure(let error) = result { throw error }
    }

    // MARK: - Request handling

    private func serve(_ work: inout QueueWork, async: AsyncBlockQueue?, index: Int, state: Running) -> Result<Void, VirtioDeviceError> {
        guard work.queue.isReady else { return .failure(.queueNotEnabled(index: index)) }
        let memory = state.memory
        var used = false
        var failure: VirtioDeviceError?
        var submitFailure: VirtioDeviceError?
        // Counted here and added to the device's counters once, when the pass ends.
        var tally = Counters()
        // The cache mode at the start of the pass (the driver switches it between requests).
        let writeThrough = writesThrough(state.features)
        do throws(VirtioDeviceError) {
            serving: repeat {
                var submitted = false
                defer { if submitted, let async { submitFailure = Self.submit(async, queue: index) } }
                while let chain = try Self.queueStep(index, { () throws(QueueError) in try work.queue.popDescriptorChain(in: memory) }) {
                    if let limiter = options.rateLimiter, !limiter.consume(bytes: dataBytes(of: chain, memory: memory)) {
                        // Not now: the request stays in the ring until the limiter's wake-up.
                        work.queue.undoPop()
                        break serving
                    }
                    if let async, try dispatch(chain, to: async, pending: &work.pending, queue: index, memory: memory, writeThrough: writeThrough) {
                        submitted = true
                        continue
                    }
                    let length = try handle(chain, queue: index, memory: memory, features: state.features,
                                            writeThrough: writeThrough, scratch: &work.scratch, tally: &tally)
                    try Self.queueStep(index) { () throws(QueueError) in try work.queue.addUsed(head: chain.head, length: length, in: memory) }
                    used = true
                }
                // Re-arm the driver's notifications (with event index: publish avail_event),
                // then look again for chains published meanwhile.
            } while try Self.queueStep(index, { () throws(QueueError) in try work.queue.enableNotification(in: memory) })
        } catch {
            failure = error
        }
        if failure == nil, let submitFailure { failure = submitFailure }
        if tally != Counters() { core.withLock { $0.counters.add(tally) } }
        if used, (try? work.queue.needsNotification(in: memory)) == true {
            state.interrupt.signalQueue(index)
        }
        if let failure { return .failure(failure) }
        return .success(())
    }

    /// The data bytes a request moves, for the rate limiter: a read's room, a write's
    /// payload, 0 for the other types (and for a header that cannot be read, which the
    /// request's handling then reports).
    private func dataBytes(of chain: DescriptorChain, memory: GuestMemory) -> UInt64 {
        var header = ChainReader(chain, memory: memory)
        guard let type = try? header.read(UInt32.self) else { return 0 }
        switch VirtioBlockABI.RequestType(rawValue: type) {
        case .read: return UInt64(max(0, chain.writableLength - 1))
        case .write: return UInt64(max(0, chain.readableLength - VirtioBlockABI.headerSize))
        default: return 0
        }
    }

    /// Runs one request; returns the used length (bytes written into the chain, status included).
    /// `writeThrough` is the cache mode (``writesThrough(_:)``), `scratch` the queue's reusable
    /// buffer lists, and `tally` collects the request's counts.
    func handle(_ chain: DescriptorChain, queue: Int, memory: GuestMemory, features: UInt64, writeThrough: Bool,
                scratch: inout RequestScratch, tally: inout Counters) throws(VirtioDeviceError) -> UInt32 {
        let writable = chain.writableLength
        guard writable >= 1, let last = chain.writable.last(where: { $0.length > 0 }) else {
            throw .noWritableBuffer(queue: queue, head: chain.head)
        }
        let (status, dataWritten) = try execute(chain, queue: queue, memory: memory, features: features, dataRoom: writable - 1,
                                                writeThrough: writeThrough, scratch: &scratch, tally: &tally)
        if status != .ok { tally.errors += 1 }
        // The status is the chain's last writable byte. A validated chain's buffers do not wrap.
        let statusAddress = GuestAddress(last.address.rawValue + UInt64(last.length) - 1)
        if let host = last.host {
            // SAFETY: the queue mapped the whole writable buffer in one region when it validated it.
            (host + Int(last.length) - 1).storeBytes(of: status.rawValue, as: UInt8.self)
            if memory.dirtyTracking { memory.markDirty(statusAddress, length: 1) }
        } else {
            do {
                try memory.write(status.rawValue, at: statusAddress)
            } catch {
                throw .queue(index: queue, .memory(error))
            }
        }
        return UInt32(dataWritten + 1)
    }

    /// Decodes and runs the request; returns its status and the data bytes written to the chain.
    private func execute(_ chain: DescriptorChain, queue: Int, memory: GuestMemory, features: UInt64, dataRoom: Int,
                         writeThrough: Bool, scratch: inout RequestScratch,
                         tally: inout Counters) throws(VirtioDeviceError) -> (VirtioBlockABI.Status, Int) {
        guard chain.readableLength >= VirtioBlockABI.headerSize else { return (.ioError, 0) }
        let (rawType, sector) = try Self.header(of: chain, queue: queue, memory: memory)
        guard let type = VirtioBlockABI.RequestType(rawValue: rawType) else { return (.unsupported, 0) }
        switch type {
        case .read:
            guard let offset = checkedOffset(sector: sector, length: dataRoom) else { return (.ioError, 0) }
            defer { scratch.destinations.removeAll(keepingCapacity: true) }
            do {
                try ChainSpan.forEachHostBuffer(chain.writable, start: 0, count: dataRoom, in: memory) { scratch.destinations.append($0) }
            } catch {
                throw .queue(index: queue, .memory(error))
            }
            do {
                try backend.read(into: scratch.destinations, at: offset)
            } catch {
                return (.ioError, 0)
            }
            if memory.dirtyTracking {
                for piece in ChainSpan(chain.writable, start: 0, count: dataRoom).pieces { memory.markDirty(piece.address, length: piece.length) }
            }
            tally.readBytes += UInt64(dataRoom)
            tally.readOps += 1
            return (.ok, dataRoom)
        case .write:
            let length = chain.readableLength - VirtioBlockABI.headerSize
            guard !backend.isReadOnly else { return (.ioError, 0) }
            guard let offset = checkedOffset(sector: sector, length: length) else { return (.ioError, 0) }
            defer { scratch.sources.removeAll(keepingCapacity: true) }
            do {
                try ChainSpan.forEachHostBuffer(chain.readable, start: VirtioBlockABI.headerSize, count: length, in: memory) {
                    scratch.sources.append(UnsafeRawBufferPointer($0))
                }
            } catch {
                throw .queue(index: queue, .memory(error))
            }
            do {
                try backend.write(from: scratch.sources, at: offset)
                if writeThrough { try backend.flush() }
            } catch {
                return (.ioError, 0)
            }
            tally.writeBytes += UInt64(length)
            tally.writeOps += 1
            return (.ok, 0)
        case .flush:
            do { try backend.flush() } catch { return (.ioError, 0) }
            return (.ok, 0)
        case .getID:
            guard dataRoom > 0 else { return (.ioError, 0) }
            var id = Array(options.serial.prefix(VirtioBlockABI.idBytes))
            id += [UInt8](repeating: 0, count: VirtioBlockABI.idBytes - id.count)
            let count = min(dataRoom, VirtioBlockABI.idBytes)
            var writer = ChainWriter(chain, memory: memory)
            try Self.queueStep(queue) { () throws(QueueError) in try writer.write(bytes: id[0..<count]) }
            return (.ok, count)
        case .discard, .writeZeroes:
            guard features & (type == .discard ? VirtioBlockABI.Feature.discard : VirtioBlockABI.Feature.writeZeroes) != 0 else {
                return (.unsupported, 0)
            }
            guard !backend.isReadOnly else { return (.ioError, 0) }
            let payload = chain.readableLength - VirtioBlockABI.headerSize
            guard payload > 0, payload % VirtioBlockABI.segmentSize == 0 else { return (.ioError, 0) }
            let count = payload / VirtioBlockABI.segmentSize
            guard count <= Self.maxDiscardSegments else { return (.ioError, 0) }
            var reader = ChainReader(chain, memory: memory)
            try Self.queueStep(queue) { () throws(QueueError) in try reader.skip(VirtioBlockABI.headerSize) }
            for _ in 0..<count {
                let (start, sectors, flags) = try Self.queueStep(queue) { () throws(QueueError) -> (UInt64, UInt32, UInt32) in
                    (try reader.read(UInt64.self), try reader.read(UInt32.self), try reader.read(UInt32.self))
                }
                let unmap = flags & 1 != 0
                // Discard takes no flags; write-zeroes only the unmap bit.
                if flags & ~(type == .discard ? 0 : 1) != 0 { return (.unsupported, 0) }
                let length = UInt64(sectors) * VirtioBlockABI.sectorSize
                guard let offset = checkedOffset(sector: start, length: Int(length)) else { return (.ioError, 0) }
                do {
                    if type == .discard {
                        try backend.discard(offset: offset, length: length)
                    } else {
                        try backend.writeZeroes(offset: offset, length: length, unmap: unmap)
                    }
                } catch {
                    return (.ioError, 0)
                }
            }
            return (.ok, 0)
        }
    }

    /// The request's type and sector (the chain carries at least a header's readable bytes).
    static func header(of chain: DescriptorChain, queue: Int, memory: GuestMemory) throws(VirtioDeviceError) -> (type: UInt32, sector: UInt64) {
        let first = chain.descriptors[0]
        // The usual layout: the whole header in the first buffer, which the queue mapped in one
        // region; any other layout (split across buffers or regions) goes through a reader.
        if first.length >= UInt32(VirtioBlockABI.headerSize), let host = first.host {
            // SAFETY: the queue proved the first buffer, header included, lies in one live region.
            return (UInt32(littleEndian: host.loadUnaligned(as: UInt32.self)),
                    UInt64(littleEndian: (host + 8).loadUnaligned(as: UInt64.self)))
        }
        var header = ChainReader(chain, memory: memory)
        return try queueStep(queue) { () throws(QueueError) -> (UInt32, UInt64) in
            let type: UInt32 = try header.read()
            try header.skip(4)
            return (type, try header.read(UInt64.self))
        }
    }

    /// The byte offset of `sector` when `[sector, sector + length)` lies on the disk and
    /// `length` is whole sectors; nil otherwise.
    func checkedOffset(sector: UInt64, length: Int) -> UInt64? {
        guard length >= 0, UInt64(length) % VirtioBlockABI.sectorSize == 0 else { return nil }
        let (offset, overflow) = sector.multipliedReportingOverflow(by: VirtioBlockABI.sectorSize)
        guard !overflow else { return nil }
        let (end, overflow2) = offset.addingReportingOverflow(UInt64(length))
        guard !overflow2, end <= backend.size else { return nil }
        return offset
    }

    /// Without a negotiated flush command, or with the cache switched to write-through,
    /// every write must be durable before it completes.
    func writesThrough(_ features: UInt64) -> Bool {
        features & VirtioBlockABI.Feature.flush == 0 || core.withLock { $0.writeback } == 0
    }

    /// Host views of the bytes `[start, start + count)` of `descriptors` taken as one stream
    /// (through the host addresses the queue found when it validated them).
    static func hostViews(_ descriptors: ArraySlice<Descriptor>, start: Int, count: Int, memory: GuestMemory,
                          queue: Int) throws(VirtioDeviceError) -> [UnsafeMutableRawBufferPointer] {
        var views: [UnsafeMutableRawBufferPointer] = []
        views.reserveCapacity(descriptors.count)
        do {
            try ChainSpan.forEachHostBuffer(descriptors, start: start, count: count, in: memory) { views.append($0) }
        } catch {
            throw .queue(index: queue, .memory(error))
        }
        return views
    }

    static func queueStep<T>(_ queue: Int, _ body: () throws(QueueError) -> T) throws(VirtioDeviceError) -> T {
        do { return try body() } catch { throw .queue(index: queue, error) }
    }
}
