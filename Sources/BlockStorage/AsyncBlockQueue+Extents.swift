#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// The mapped mode of AsyncBlockQueue: a request cut by its format (qcow2) into file extents,
// each one ring entry, reported when the last of them is done. What needs no file data, or
// what the format did synchronously (allocating writes, flushes), is reported at the next
// reap, and the eventfd is signalled so the event loop comes to reap it.

/// One guest request of a mapped queue.
struct MappedRequest {
    /// The extents still on the ring.
    var remaining: Int
    /// The bytes the request moves (what a success reports).
    var length: Int
    /// The first failure of one of its extents.
    var failure: BlockError?
    /// Whether the format counted the request in flight (``AsyncExtentMapper/finishedExtents()`` owed).
    var counted: Bool
}

extension AsyncBlockQueue {
    func mappedRead(slot: Int, into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64, length: Int) throws(BlockError) -> Bool {
        guard length > 0, length <= Self.largestRequest, let mapper, try takes(slot) else { return false }
        let extents = try mapper.mapRead(into: buffers, at: offset)
        start(slot: slot, extents: extents, operation: .read, length: length)
        return true
    }

    func mappedWrite(slot: Int, from buffers: [UnsafeRawBufferPointer], at offset: UInt64, length: Int) throws(BlockError) -> Bool {
        guard length > 0, length <= Self.largestRequest, let mapper, try takes(slot) else { return false }
        let extents = try mapper.mapWrite(from: buffers, at: offset)
        start(slot: slot, extents: extents, operation: .write, length: length)
        return true
    }

    func mappedFlush(slot: Int) throws(BlockError) -> Bool {
        guard let mapper, try takes(slot) else { return false }
        // Writes this queue started before the flush are on the file before it syncs.
        while engine.inFlight > 0 {
            collect()
            if engine.inFlight > 0 { try engine.wait() }
        }
        collect()
        requests[slot] = MappedRequest(remaining: 0, length: 0, failure: nil, counted: false)
        mappedInFlight += 1
        do { try mapper.flush() } catch { requests[slot]!.failure = error }
        complete(slot)
        return true
    }

    /// Whether `slot` is a free request slot (a taken one is the caller's mistake).
    private func takes(_ slot: Int) throws(BlockError) -> Bool {
        guard slot >= 0, slot < requests.count else { throw .host(call: "io_uring prepare (slot \(slot) of \(requests.count))", errno: EINVAL) }
        guard requests[slot] == nil else { throw .host(call: "io_uring prepare (slot \(slot))", errno: EBUSY) }
        return true
    }

    /// Puts a mapped request's extents on the ring; an extent the ring cannot take (no free
    /// ring slot, or unaligned under `O_DIRECT`) moves synchronously now.
    private func start(slot: Int, extents: [HostExtent], operation: IoUringEngine.Operation, length: Int) {
        requests[slot] = MappedRequest(remaining: 0, length: length, failure: nil, counted: !extents.isEmpty)
        mappedInFlight += 1
        for extent in extents {
            let aligned = !isDirect || ImageFile.isAligned(extent.buffers.map { UnsafeRawBufferPointer($0) }, offset: extent.offset)
            if aligned, extent.buffers.count <= ImageFile.maxVectors, let ring = freeExtentSlots.popLast() {
                do throws(BlockError) {
                    try engine.prepare(slot: ring, operation, descriptor: descriptor, buffers: extent.buffers, offset: extent.offset)
                    extentOwner[ring] = slot
                    requests[slot]!.remaining += 1
                    continue
                } catch {
                    freeExtentSlots.append(ring)
                }
            }
            do throws(BlockError) {
                if operation == .read {
                    try file.read(into: extent.buffers, at: extent.offset)
                } else {
                    try file.write(extent.buffers.map { UnsafeRawBufferPointer($0) }, at: extent.offset)
                }
            } catch {
                if requests[slot]!.failure == nil { requests[slot]!.failure = error }
            }
        }
        if requests[slot]!.remaining == 0 { complete(slot) }
    }

    /// Moves a request whose extents are all done to the finished list and wakes the event loop.
    private func complete(_ slot: Int) {
        guard let request = requests[slot] else { return }
        if request.counted { mapper?.finishedExtents() }
        requests[slot]!.counted = false
        finished.append((slot, request.failure.map { .failure($0) } ?? .success(request.length)))
        engine.signalEvent()
    }

    /// Takes the ring's finished extents (without blocking) and completes their requests.
    private func collect() {
        engine.reap { ring, result in
            guard ring < extentOwner.count else { return }
            let slot = extentOwner[ring]
            extentOwner[ring] = -1
            freeExtentSlots.append(ring)
            guard slot >= 0, slot < requests.count, requests[slot] != nil else { return }
            if result < 0, requests[slot]!.failure == nil {
                requests[slot]!.failure = .host(call: "io_uring request", errno: -result)
            }
            requests[slot]!.remaining -= 1
            if requests[slot]!.remaining == 0 { complete(slot) }
        }
    }

    func mappedReap(_ body: (_ slot: Int, _ result: Result<Int, BlockError>) -> Void) -> Int {
        collect()
        let done = finished
        finished.removeAll()
        for (slot, result) in done {
            requests[slot] = nil
            mappedInFlight -= 1
            body(slot, result)
        }
        return done.count
    }

    /// Waits for every extent on the ring and ends the format's in-flight counts.
    func drainMapped() {
        while engine.inFlight > 0 {
            collect()
            if engine.inFlight > 0, (try? engine.wait()) == nil { break }
        }
        collect()
    }
}
