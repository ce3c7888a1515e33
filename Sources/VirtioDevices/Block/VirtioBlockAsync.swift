import BlockStorage
import GuestMemory
import VirtioQueue

// The asynchronous request path: reads, writes and flushes handed to a queue's io_uring,
// finished when their completions arrive.
extension VirtioBlock {
    /// Hands a read, write-back write or flush to the ring, keeping the chain's status
    /// address by its head; `false` leaves the request to the synchronous path (every
    /// other type, malformed requests, which that path reports, and requests the ring
    /// does not take). `writeThrough` is the cache mode (``writesThrough(_:)``).
    func dispatch(_ chain: DescriptorChain, to async: AsyncBlockQueue, pending: inout [Pending?], queue: Int, memory: GuestMemory,
                  writeThrough: Bool) throws(VirtioDeviceError) -> Bool {
        let writable = chain.writableLength
        let head = Int(chain.head)
        guard writable >= 1, chain.readableLength >= VirtioBlockABI.headerSize, head < pending.count, pending[head] == nil else { return false }
        let (rawType, sector) = try Self.header(of: chain, queue: queue, memory: memory)
        guard let statusAddress = ChainSpan.lastByte(of: chain.writable) else { return false }
        switch VirtioBlockABI.RequestType(rawValue: rawType) {
        case .read:
            let length = writable - 1
            guard let offset = checkedOffset(sector: sector, length: length) else { return false }
            let span = ChainSpan(chain.writable, start: 0, count: length)
            let buffers = try Self.hostViews(chain.writable, start: 0, count: length, memory: memory, queue: queue)
            guard (try? async.read(slot: head, into: buffers, at: offset)) == true else { return false }
            pending[head] = Pending(kind: .read, statusAddress: statusAddress, length: length, span: span)
        case .write:
            let length = chain.readableLength - VirtioBlockABI.headerSize
            // Write-through needs the write durable before completion: the synchronous path does both.
            guard !backend.isReadOnly, !writeThrough, let offset = checkedOffset(sector: sector, length: length) else { return false }
            let buffers = try Self.hostViews(chain.readable, start: VirtioBlockABI.headerSize, count: length, memory: memory, queue: queue)
                .map { UnsafeRawBufferPointer($0) }
            guard (try? async.write(slot: head, from: buffers, at: offset)) == true else { return false }
            pending[head] = Pending(kind: .write, statusAddress: statusAddress, length: length, span: nil)
        case .flush:
            guard (try? async.flush(slot: head)) == true else { return false }
            pending[head] = Pending(kind: .flush, statusAddress: statusAddress, length: 0, span: nil)
        default:
            return false
        }
        return true
    }

    /// Submits the queued requests; a ring that refuses even after its completions were
    /// waited for is a backend failure (the transport then asks for a reset).
    static func submit(_ async: AsyncBlockQueue, queue: Int) -> VirtioDeviceError? {
        do throws(BlockError) {
            try async.submit()
            return nil
        } catch {
            // A full completion ring (EBUSY) clears once the kernel finishes something.
            if (try? async.wait()) != nil, (try? async.submit()) != nil { return nil }
            return .backend("queue \(queue): \(error)")
        }
    }

    /// Finishes the requests of queue `index` whose completions arrived (the event loop
    /// calls it when the queue's ``AsyncBlockQueue/eventDescriptor`` fires): status bytes
    /// written, used ring updated, the driver signalled if it asked.
    ///
    /// - Throws: ``VirtioDeviceError`` when the driver broke the ring meanwhile.
    public func processCompletions(_ index: Int) throws(VirtioDeviceError) {
        guard asyncQueues.indices.contains(index) else { return }
        asyncQueues[index].clearEvent()
        guard let state = core.withLock({ $0.running }), state.queues.indices.contains(index) else { return }
        let box = state.queues[index]
        guard let async = box.async else { return }
        let result: Result<Void, VirtioDeviceError> = box.work.withLock { work in
            guard !work.retired else { return .success(()) }
            return finish(&work, async: async, index: index, state: state, waiting: false)
        }
        if case .failure(let error) = result { throw error }
    }

    /// Waits for every request in flight on every queue and finishes it (used ring updated,
    /// driver signalled): a pause, snapshot or migration saves no half-done request. A ring
    /// the driver broke meanwhile leaves its requests unfinished (the device already needs
    /// a reset).
    public func drain() {
        guard let state = core.withLock({ $0.running }) else { return }
        for (index, box) in state.queues.enumerated() {
            guard let async = box.async else { continue }
            _ = box.work.withLock { work -> Result<Void, VirtioDeviceError> in
                guard !work.retired else { return .success(()) }
                return finish(&work, async: async, index: index, state: state, waiting: true)
            }
        }
    }

    /// Waits for a retiring queue's requests and drops their results (a reset).
    static func retire(_ work: inout QueueWork, async: AsyncBlockQueue?) {
        work.retired = true
        guard let async else { return }
        while async.inFlight > 0 {
            async.reap { _, _ in }
            if async.inFlight > 0, (try? async.wait()) == nil { break }
        }
        for index in work.pending.indices { work.pending[index] = nil }
    }

    /// Reaps completions (with `waiting`, until none is in flight) and finishes their requests.
    private func finish(_ work: inout QueueWork, async: AsyncBlockQueue, index: Int, state: Running, waiting: Bool) -> Result<Void, VirtioDeviceError> {
        let memory = state.memory
        var used = false
        var failure: VirtioDeviceError?
        repeat {
            async.reap { slot, result in
                guard slot < work.pending.count, let request = work.pending[slot] else { return }
                work.pending[slot] = nil
                let ok: Bool
                switch result {
                case .success(let moved): ok = request.kind == .flush || moved == request.length
                case .failure: ok = false
                }
                var usedLength: UInt32 = 1
                if ok {
                    switch request.kind {
                    case .read:
                        if memory.dirtyTracking, let span = request.span {
                            for piece in span.pieces { memory.markDirty(piece.address, length: piece.length) }
                        }
                        core.withLock { $0.counters.readBytes += UInt64(request.length); $0.counters.readOps += 1 }
                        usedLength = UInt32(request.length + 1)
                    case .write:
                        core.withLock { $0.counters.writeBytes += UInt64(request.length); $0.counters.writeOps += 1 }
                    case .flush:
                        break
                    }
                } else {
                    core.withLock { $0.counters.errors += 1 }
                }
                let status = ok ? VirtioBlockABI.Status.ok : .ioError
                do throws(VirtioDeviceError) {
                    do throws(GuestMemoryError) { try memory.write(status.rawValue, at: request.statusAddress) } catch { throw .queue(index: index, .memory(error)) }
                    try Self.queueStep(index) { () throws(QueueError) in
                        try work.queue.addUsed(head: UInt16(slot), length: usedLength, in: memory)
                    }
                    used = true
                } catch {
                    if failure == nil { failure = error }
                }
            }
            if waiting, async.inFlight > 0, (try? async.wait()) == nil { break }
        } while waiting && async.inFlight > 0
        if used, (try? work.queue.needsNotification(in: memory)) == true {
            state.interrupt.signalQueue(index)
        }
        if let failure { return .failure(failure) }
        return .success(())
    }
}
