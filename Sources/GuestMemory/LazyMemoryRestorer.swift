import CLinux
import HostSystem
import Synchronization

/// Restores guest memory from a snapshot on demand (Cloud Hypervisor's
/// `memory_restore_mode=ondemand`): every region is registered with a userfaultfd, and one
/// handler thread fills each chunk of guest memory from the snapshot file the first time
/// anything touches it, so the vCPUs can start before the memory is read.
///
/// Faults come from any thread of the process and from the kernel acting for it: KVM
/// reading or writing guest memory for a vCPU, `read(2)`/`write(2)` with a guest buffer. Each
/// waits until the handler has filled its chunk: `UFFDIO_COPY` of the chunk's data from the
/// file, `UFFDIO_ZEROPAGE` for its pages that are all zero (holes in the file, or zero
/// data), which allocates nothing until the guest writes them. Chunks nobody touches are
/// never read. `prefaultRemaining()` asks the handler to fill the rest in the background
/// between faults; when every chunk is filled the regions are unregistered and the handler
/// thread ends, leaving ordinary memory behind.
///
/// Use it on freshly mapped memory before the guest runs: the regions' pages are dropped
/// before they are registered, so nothing written to them earlier survives. A page dropped
/// again after it was filled (a balloon's `MADV_DONTNEED`) faults again and gets the zero
/// page, as without the restorer. Regions with huge pages are refused (`UFFDIO_ZEROPAGE`
/// does not exist there); restore them with `restoreSnapshot(from:table:)`.
///
/// Nothing is marked dirty, as with `restoreSnapshot(from:table:)`.
public final class LazyMemoryRestorer: @unchecked Sendable {
    /// What the handler has done so far.
    public struct Statistics: Equatable, Sendable, CustomStringConvertible {
        /// Page-fault events read from the userfaultfd.
        public var faults: Int
        /// Chunks filled (because of a fault or by prefaulting).
        public var chunksFilled: Int
        /// Chunks filled by prefaulting.
        public var chunksPrefaulted: Int
        /// 4 KiB pages filled with `UFFDIO_COPY` (data read from the file).
        public var pagesCopied: Int
        /// 4 KiB pages filled with `UFFDIO_ZEROPAGE`.
        public var pagesZeroed: Int
        /// Faults on chunks already filled (the same page faulted twice before it was
        /// filled, or a page dropped after it was filled).
        public var repeatedFaults: Int

        /// One line with every counter.
        public var description: String {
            "\(faults) faults, \(chunksFilled) chunks filled (\(chunksPrefaulted) prefaulted), "
                + "\(pagesCopied) pages copied, \(pagesZeroed) zero pages, \(repeatedFaults) repeated faults"
        }
    }

    /// The size of the unit filled per fault, a multiple of the host page size.
    public let chunkSize: Int
    /// The guest memory being restored.
    public let memory: GuestMemory
    /// The userfaultfd the regions are registered with.
    public let userFaultFD: UserFaultFD

    private let handler: Handler
    private let control: EventFD
    private let finished: EventFD
    private var thread: HostThread?
    private let stopLock = Mutex(false)

    /// Checks the snapshot, registers every region and starts the handler thread
    /// (`ch-uffd-restore`). Returns once faults are being served: start the vCPUs then.
    ///
    /// - Parameters:
    ///   - memory: freshly mapped guest memory whose regions `table` describes.
    ///   - file: the snapshot's memory file (read with `pread`, so it may be shared).
    ///   - table: the snapshot's range table.
    ///   - chunkSize: bytes filled per fault (a multiple of the host page size, 4 KiB by
    ///     default); bigger chunks mean fewer faults and more data read per fault.
    ///   - creator: where the userfaultfd comes from.
    /// - Throws: the checks of `restoreSnapshot(from:table:)` (`.snapshotMismatch`,
    ///   `.readOnlyRegion`, `.snapshotIO`), `.userfaultfdUnavailable` when the host refuses
    ///   userfaultfd (the reason names the setting), `.onDemandRestoreUnsupported` for a
    ///   region that cannot be served, `.userfaultfdFailed` when registering fails.
    public init(
        memory: GuestMemory, file: OwnedFileDescriptor, table: MemoryRangeTable,
        chunkSize: Int = 4096, creator: UserFaultFD.Creator = .kernel
    ) throws(GuestMemoryError) {
        let page = MemoryMapping.pageSize
        guard chunkSize >= page, chunkSize % page == 0 else {
            throw .onDemandRestoreUnsupported(
                region: memory.regions[0].start, reason: "the chunk size \(chunkSize) is not a multiple of the host page size \(page)")
        }
        try memory.checkSnapshot(file: file, table: table)
        for region in memory.regions {
            if region.mapping.options.contains(.hugePages) {
                throw .onDemandRestoreUnsupported(
                    region: region.start, reason: "it is backed by huge pages, where UFFDIO_ZEROPAGE does not exist; use copy mode")
            }
            if region.size % UInt64(page) != 0 {
                throw .onDemandRestoreUnsupported(
                    region: region.start, reason: "its size 0x\(String(region.size, radix: 16)) is not a multiple of the page size")
            }
        }
        let shared = memory.regions.contains { $0.mapping.options.contains(.shared) || $0.mapping.file != nil }
        do {
            userFaultFD = try UserFaultFD(features: shared ? [.missingShmem] : [], creator: creator)
        } catch {
            throw .userfaultfdUnavailable(error)
        }
        do {
            control = try EventFD()
            finished = try EventFD()
        } catch {
            throw .userfaultfdFailed(error)
        }
        self.memory = memory
        self.chunkSize = chunkSize
        handler = Handler(memory: memory, file: file, offsets: table.fileOffsets, chunkSize: chunkSize, uffd: userFaultFD)
        do {
            for index in memory.regions.indices {
                // Every page must be missing for its first touch to reach the handler.
                try memory.zeroHostRange(index, offset: 0, length: memory.spans[index].size)
                let span = memory.spans[index]
                let allowed = try userFaultFD.registerMissing(span.host, length: span.size)
                handler.registered[index] = true
                guard allowed.contains([.copy, .zeroPage]) else {
                    handler.unregisterAll()
                    throw GuestMemoryError.onDemandRestoreUnsupported(
                        region: memory.regions[index].start,
                        reason: "the kernel does not allow UFFDIO_COPY and UFFDIO_ZEROPAGE on it (ioctls 0x\(String(allowed.rawValue, radix: 16)))")
                }
            }
        } catch let error as GuestMemoryError {
            throw error
        } catch let error as SystemError {
            handler.unregisterAll()
            throw .userfaultfdFailed(error)
        } catch {
            throw .userfaultfdFailed(SystemError(call: "register guest memory with userfaultfd", errno: EIO))
        }
        let handler = self.handler
        let control = self.control
        let finished = self.finished
        do {
            thread = try HostThread(name: "ch-uffd-restore") { handler.run(control: control, finished: finished) }
        } catch {
            handler.unregisterAll()
            throw .userfaultfdFailed(error)
        }
    }

    deinit {
        stop()
    }

    /// Asks the handler to fill every chunk not yet touched, in address order, between
    /// serving faults (which keep priority). Returns at once; `waitUntilComplete` waits.
    public func prefaultRemaining() {
        handler.prefault.store(true, ordering: .releasing)
        try? control.signal()
    }

    /// Waits until every chunk is filled (the regions are then unregistered and the handler
    /// thread has ended), for at most `timeoutMilliseconds` (-1: no limit). Returns false on
    /// timeout, or when `stop()` ended the handler first. Without `prefaultRemaining()`, this
    /// happens only once everything was touched.
    ///
    /// - Throws: the handler's failure, if it failed.
    public func waitUntilComplete(timeoutMilliseconds: Int32 = -1) throws(GuestMemoryError) -> Bool {
        let ready: [Bool]
        do { ready = try pollReadable([finished.rawValue], timeoutMilliseconds: timeoutMilliseconds) } catch {
            throw .userfaultfdFailed(error)
        }
        guard ready[0] else { return false }
        thread?.join()
        if let failure { throw failure }
        return isComplete
    }

    /// Whether every chunk has been filled and the regions unregistered.
    public var isComplete: Bool { handler.complete.load(ordering: .acquiring) }

    /// The error that stopped the handler, if any. Threads faulting on unfilled memory then
    /// wait until `stop()`; the VM should be torn down.
    public var failure: GuestMemoryError? { handler.failure.withLock { $0 } }

    /// What the handler has done so far.
    public var statistics: Statistics { handler.statistics() }

    /// Stops the handler thread and unregisters the regions. Chunks not filled yet then read
    /// as zeros (threads waiting on them are woken), so stop early only to discard the VM;
    /// after completion it only joins the ended thread. Calling it twice is harmless.
    public func stop() {
        let alreadyStopped = stopLock.withLock { stopped in
            defer { stopped = true }
            return stopped
        }
        if alreadyStopped { return }
        handler.stopRequested.store(true, ordering: .releasing)
        try? control.signal()
        thread?.join()
        handler.unregisterAll()
    }
}

/// The handler thread's state. Everything except the atomics and the failure is touched
/// only by the handler thread (or before it starts and after it ends).
private final class Handler: @unchecked Sendable {
    let memory: GuestMemory
    let file: OwnedFileDescriptor
    let offsets: [UInt64]
    let chunkSize: Int
    let uffd: UserFaultFD
    var registered: [Bool]
    /// One bit per chunk per region: filled.
    var filled: [[UInt64]]
    let chunkCounts: [Int]
    var remaining: Int
    /// Regions in host address order, for finding a fault's region.
    let byHost: [(start: UInt, end: UInt, index: Int)]
    var cursor = (region: 0, chunk: 0)
    /// Scratch for file data: a chunk, or a prefault run.
    let buffer: UnsafeMutableRawPointer
    let bufferSize: Int
    /// The most bytes one prefault step fills at once.
    static let prefaultRun = 2 << 20

    let prefault = Atomic(false)
    let stopRequested = Atomic(false)
    let complete = Atomic(false)
    let failure = Mutex<GuestMemoryError?>(nil)
    let faults = Atomic(0), chunksFilled = Atomic(0), chunksPrefaulted = Atomic(0)
    let pagesCopied = Atomic(0), pagesZeroed = Atomic(0), repeatedFaults = Atomic(0)

    init(memory: GuestMemory, file: OwnedFileDescriptor, offsets: [UInt64], chunkSize: Int, uffd: UserFaultFD) {
        self.memory = memory
        self.file = file
        self.offsets = offsets
        self.chunkSize = chunkSize
        self.uffd = uffd
        registered = Array(repeating: false, count: memory.spans.count)
        chunkCounts = memory.spans.map { ($0.size + chunkSize - 1) / chunkSize }
        filled = chunkCounts.map { Array(repeating: 0, count: ($0 + 63) / 64) }
        remaining = chunkCounts.reduce(0, +)
        byHost = memory.spans.enumerated()
            .map { (start: UInt(bitPattern: $0.element.host), end: UInt(bitPattern: $0.element.host) + UInt($0.element.size), index: $0.offset) }
            .sorted { $0.start < $1.start }
        bufferSize = max(chunkSize, Self.prefaultRun)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: MemoryMapping.pageSize)
    }

    deinit { buffer.deallocate() }

    func statistics() -> LazyMemoryRestorer.Statistics {
        LazyMemoryRestorer.Statistics(
            faults: faults.load(ordering: .relaxed), chunksFilled: chunksFilled.load(ordering: .relaxed),
            chunksPrefaulted: chunksPrefaulted.load(ordering: .relaxed), pagesCopied: pagesCopied.load(ordering: .relaxed),
            pagesZeroed: pagesZeroed.load(ordering: .relaxed), repeatedFaults: repeatedFaults.load(ordering: .relaxed))
    }

    /// The loop: serve faults; when prefaulting and idle, fill a few chunks; stop on request.
    func run(control: EventFD, finished: EventFD) {
        defer { try? finished.signal() }
        do {
            while !stopRequested.load(ordering: .acquiring) {
                if remaining == 0 {
                    unregisterAll()
                    complete.store(true, ordering: .releasing)
                    return
                }
                let idlePrefault = prefault.load(ordering: .acquiring)
                let ready = try pollReadable([uffd.rawValue, control.rawValue], timeoutMilliseconds: idlePrefault ? 0 : -1)
                if ready[1] { _ = try control.read() }
                if ready[0] {
                    for fault in try uffd.readFaults() { try serve(fault) }
                } else if idlePrefault {
                    try prefaultSome(1)
                }
            }
        } catch {
            failure.withLock { $0 = .userfaultfdFailed(error) }
        }
    }

    func serve(_ fault: UserFaultFD.PageFault) throws(SystemError) {
        faults.add(1, ordering: .relaxed)
        let address = UInt(fault.address)
        guard let entry = byHost.last(where: { $0.start <= address }), address < entry.end else { return }
        let offset = Int(address - entry.start)
        let chunk = offset / chunkSize
        if isFilled(entry.index, chunk) {
            // Filled already: a second message for the same page, or a page dropped since.
            repeatedFaults.add(1, ordering: .relaxed)
            let page = MemoryMapping.pageSize
            let pageStart = memory.spans[entry.index].host + offset / page * page
            do {
                try uffd.zeroPage(pageStart, length: page)
            } catch where error.errno == EEXIST {
                try uffd.wake(pageStart, length: page)
            }
            return
        }
        try fill(entry.index, chunk)
    }

    /// Fills up to `count` runs of chunks not yet filled, from the cursor on, each run up to
    /// `prefaultRun` bytes filled with as few calls as the file's extents allow.
    func prefaultSome(_ count: Int) throws(SystemError) {
        var done = 0
        while done < count, cursor.region < chunkCounts.count {
            let chunks = chunkCounts[cursor.region]
            if cursor.chunk >= chunks {
                cursor = (cursor.region + 1, 0)
                continue
            }
            if isFilled(cursor.region, cursor.chunk) {
                cursor.chunk += 1
                continue
            }
            var run = 1
            while cursor.chunk + run < chunks, (run + 1) * chunkSize <= bufferSize, !isFilled(cursor.region, cursor.chunk + run) {
                run += 1
            }
            try fill(cursor.region, cursor.chunk, count: run)
            chunksPrefaulted.add(run, ordering: .relaxed)
            cursor.chunk += run
            done += 1
        }
    }

    /// Fills `count` chunks from `first` (none filled yet): the zero page over the file's
    /// holes and over data pages that are all zero, a copy of the data elsewhere; then marks
    /// them filled and wakes the threads waiting on them (in that order, so a woken thread
    /// sees the counters already updated).
    func fill(_ region: Int, _ first: Int, count: Int = 1) throws(SystemError) {
        let span = memory.spans[region]
        let page = MemoryMapping.pageSize
        let start = first * chunkSize
        let end = min((first + count) * chunkSize, span.size)
        let base = Int64(offsets[region])
        var position = start
        while position < end {
            let fileOffset = base + Int64(position)
            // Where the next data starts, in region offsets, rounded down to a page: a block
            // smaller than a page still needs its page copied.
            let dataAt = try file.nextData(atOrAfter: fileOffset).map { Int($0 - base) } ?? end
            let holeEnd = min(dataAt, end) / page * page
            if holeEnd > position {
                try fillZero(span.host + position, length: holeEnd - position)
                position = holeEnd
                continue
            }
            let extentEnd = Int(try file.nextHole(atOrAfter: base + Int64(max(position, dataAt))) - base)
            let dataEnd = min((extentEnd + page - 1) / page * page, end, position + bufferSize)
            let length = dataEnd - position
            let read = try file.readFully(into: UnsafeMutableRawBufferPointer(start: buffer, count: length), at: fileOffset)
            guard read == length else {
                throw SystemError(call: "pread(memory file, \(length) bytes at \(fileOffset)): the file ended early", errno: EIO)
            }
            // Runs of data pages and of zero pages, each filled with one call.
            var runStart = 0
            while runStart < length {
                let runIsZero = Self.isZero(buffer + runStart, length: min(page, length - runStart))
                var runEnd = min(runStart + page, length)
                while runEnd < length, Self.isZero(buffer + runEnd, length: min(page, length - runEnd)) == runIsZero {
                    runEnd = min(runEnd + page, length)
                }
                if runIsZero {
                    try fillZero(span.host + position + runStart, length: runEnd - runStart)
                } else {
                    try fillCopy(span.host + position + runStart, from: buffer + runStart, length: runEnd - runStart)
                }
                runStart = runEnd
            }
            position = dataEnd
        }
        for chunk in first..<(first + count) { setFilled(region, chunk) }
        chunksFilled.add(count, ordering: .relaxed)
        remaining -= count
        try uffd.wake(span.host + start, length: end - start)
    }

    private func fillZero(_ destination: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
        do {
            try uffd.zeroPage(destination, length: length, wake: false)
        } catch where error.errno == EEXIST {
            // A page of the range is present already: fill the others one by one.
            try eachMissingPage(destination, length: length) { page, size throws(SystemError) in
                try uffd.zeroPage(page, length: size, wake: false)
            }
        }
        pagesZeroed.add(length / MemoryMapping.pageSize, ordering: .relaxed)
    }

    private func fillCopy(_ destination: UnsafeMutableRawPointer, from source: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
        do {
            try uffd.copy(to: destination, from: source, length: length, wake: false)
        } catch where error.errno == EEXIST {
            try eachMissingPage(destination, length: length) { page, size throws(SystemError) in
                try uffd.copy(to: page, from: source + (page - destination), length: size, wake: false)
            }
        }
        pagesCopied.add(length / MemoryMapping.pageSize, ordering: .relaxed)
    }

    /// Runs `body` on each page of the range, ignoring `EEXIST` (the page is present).
    private func eachMissingPage(
        _ start: UnsafeMutableRawPointer, length: Int, _ body: (UnsafeMutableRawPointer, Int) throws(SystemError) -> Void
    ) throws(SystemError) {
        let page = MemoryMapping.pageSize
        for offset in stride(from: 0, to: length, by: page) {
            do { try body(start + offset, min(page, length - offset)) } catch where error.errno == EEXIST {}
        }
    }

    static func isZero(_ bytes: UnsafeMutableRawPointer, length: Int) -> Bool {
        // SAFETY: callers pass a range inside the chunk buffer. The bytes equal the bytes one
        // further on exactly when all are equal, so a zero first byte means all are zero.
        bytes.load(as: UInt8.self) == 0 && (length < 2 || memcmp(bytes, bytes + 1, length - 1) == 0)
    }

    func isFilled(_ region: Int, _ chunk: Int) -> Bool { filled[region][chunk / 64] & (1 << UInt64(chunk % 64)) != 0 }
    func setFilled(_ region: Int, _ chunk: Int) { filled[region][chunk / 64] |= 1 << UInt64(chunk % 64) }

    /// Unregisters every region still registered; failures are ignored (closing the
    /// descriptor unregisters too).
    func unregisterAll() {
        for (index, isRegistered) in registered.enumerated() where isRegistered {
            let span = memory.spans[index]
            try? uffd.unregister(span.host, length: span.size)
            registered[index] = false
        }
    }
}
