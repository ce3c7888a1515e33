import BlockStorage
import Foundation
import Qcow
import TestSupport
import Testing

/// Batches of overlapping reads and writes in flight at once on two io_uring queues of one
/// qcow2 image, the same writes applied to a raw copy: every read returns, byte for byte,
/// what the raw copy held before or after the batch (overlapping writes of a batch write the
/// same bytes, so the order they land in does not matter), and at the end qemu-img finds the
/// image clean and equal to the raw copy.
struct AsyncWorkload {
    let image: QcowImage
    let raw: RawFileBackend
    let queues: [AsyncBlockQueue]
    var model: [UInt8]
    var random: SplitMix64
    /// The most ring entries seen in flight at once on one queue.
    var mostOnRing = 0
    /// Requests the queues took (the rest would have run synchronously).
    var taken = 0

    /// The byte a write of batch `batch` puts at disk offset `position`.
    static func byte(batch: Int, at position: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: (position &* 2_654_435_761) >> 7 ^ (batch &* 97) ^ position >> 9)
    }

    struct Request {
        var queue: Int
        var write: Bool
        var offset: Int
        var buffer: UnsafeMutableRawBufferPointer
        var done = false
    }

    /// `batches` batches of `perBatch` requests; each batch also discards (or zeroes) a range
    /// and flushes queue 0 while the first half of it is in flight.
    mutating func run(batches: Int, perBatch: Int, clusterSize: Int) throws {
        let size = model.count
        for batch in 0..<batches {
            let before = model
            var requests: [Request] = []
            var covered = [Bool](repeating: false, count: size)
            for _ in 0..<perBatch {
                let length = min(512 * Int(1 + random.next() % UInt64(3 * clusterSize / 512)), size)
                let offset = 512 * Int(random.next() % UInt64((size - length) / 512 + 1))
                let write = random.next() % 2 == 0
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 4096)
                if write {
                    for index in 0..<length { buffer[index] = Self.byte(batch: batch, at: offset + index) }
                    for index in offset..<(offset + length) { covered[index] = true }
                } else {
                    buffer.initializeMemory(as: UInt8.self, repeating: 0xEE)
                }
                requests.append(Request(queue: Int(random.next() % 2), write: write, offset: offset, buffer: buffer))
            }
            defer { for request in requests { request.buffer.deallocate() } }
            // The range discarded mid-batch: its bytes are unspecified for this batch (rewritten after it).
            let holeLength = clusterSize * Int(1 + random.next() % 4)
            let hole = (start: clusterSize * Int(random.next() % UInt64(size / clusterSize - 4)), length: holeLength)

            let half = requests.count / 2
            for (slot, request) in requests.enumerated() where slot < half { try put(request, slot: slot) }
            for queue in queues { try queue.submit() }
            mostOnRing = max(mostOnRing, queues.map { $0.engine.inFlight }.max() ?? 0)
            if random.next() % 2 == 0 {
                try image.discard(offset: UInt64(hole.start), length: UInt64(hole.length))
            } else {
                try image.writeZeroes(offset: UInt64(hole.start), length: UInt64(hole.length), unmap: random.next() % 2 == 0)
            }
            #expect(try queues[0].flush(slot: perBatch))
            for (slot, request) in requests.enumerated() where slot >= half { try put(request, slot: slot) }
            for queue in queues { try queue.submit() }
            mostOnRing = max(mostOnRing, queues.map { $0.engine.inFlight }.max() ?? 0)

            for queue in queues {
                while queue.inFlight > 0 {
                    queue.reap { slot, result in
                        if slot == perBatch {
                            #expect((try? result.get()) == 0, "flush: \(result)")
                            return
                        }
                        #expect((try? result.get()) == requests[slot].buffer.count, "request \(slot): \(result)")
                        requests[slot].done = true
                    }
                    if queue.inFlight > 0 { try queue.wait() }
                }
            }
            #expect(requests.filter { !$0.done }.isEmpty)

            for index in 0..<size where covered[index] { model[index] = Self.byte(batch: batch, at: index) }
            for (slot, request) in requests.enumerated() where !request.write {
                for index in 0..<request.buffer.count {
                    let position = request.offset + index
                    if position >= hole.start && position < hole.start + hole.length { continue }
                    let value = request.buffer[index]
                    if value != before[position] && value != model[position] {
                        Issue.record("batch \(batch) read \(slot) at disk byte \(position): \(value), expected \(before[position]) or \(model[position])")
                        return
                    }
                }
            }
            for request in requests where request.write {
                try raw.write(from: [UnsafeRawBufferPointer(request.buffer)], at: UInt64(request.offset))
            }
            // Make the discarded range definite again, on both disks.
            let refill = (0..<hole.length).map { Self.byte(batch: batch &+ 1000, at: hole.start + $0) }
            try image.write(bytes: refill, at: UInt64(hole.start))
            try raw.write(bytes: refill, at: UInt64(hole.start))
            model.replaceSubrange(hole.start..<(hole.start + hole.length), with: refill)
        }
    }

    private mutating func put(_ request: Request, slot: Int) throws {
        let queue = queues[request.queue]
        let took = request.write
            ? try queue.write(slot: slot, from: [UnsafeRawBufferPointer(request.buffer)], at: UInt64(request.offset))
            : try queue.read(slot: slot, into: [request.buffer], at: UInt64(request.offset))
        #expect(took)
        if took { taken += 1 }
    }
}

@Suite("qcow2 through io_uring", .enabled(if: Qemu.available && IoUringEngine.isSupported,
                                         "needs qemu-img and a kernel with io_uring"))
struct AsyncQcowTests {
    /// Runs the workload on `qcow` (its raw copy at `rawPath`) and lets qemu-img judge.
    static func exercise(qcow: String, rawPath: String, clusterSize: Int, backingFiles: Bool = false, direct: Bool = false,
                         seed: UInt64, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let model = try readFile(rawPath)
        var mostOnRing = 0
        do {
            let image = try QcowImage(path: qcow, options: .init(direct: direct, backingFiles: backingFiles, ioUring: true))
            let raw = try RawFileBackend(path: rawPath)
            let queues = try (0..<2).map { _ in try #require(try image.makeAsyncQueue(slots: 64)) }
            var workload = AsyncWorkload(image: image, raw: raw, queues: queues, model: model, random: SplitMix64(seed: seed))
            try workload.run(batches: 12, perBatch: 40, clusterSize: clusterSize)
            #expect(workload.taken == 12 * 40)
            mostOnRing = workload.mostOnRing
            // Everything reads back as the raw copy, through the ring too.
            let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(image.size), alignment: 4096)
            defer { whole.deallocate() }
            #expect(try queues[1].read(slot: 0, into: [whole], at: 0))
            try queues[1].submit()
            while queues[1].inFlight > 0 {
                queues[1].reap { _, result in #expect((try? result.get()) == whole.count) }
                if queues[1].inFlight > 0 { try queues[1].wait() }
            }
            #expect(Array(whole) == workload.model, sourceLocation: sourceLocation)
            #expect(try raw.readBytes(count: model.count, at: 0) == workload.model, sourceLocation: sourceLocation)
            try image.flush()
        }
        #expect(mostOnRing > 1, "several extents on one ring at once (most seen: \(mostOnRing))", sourceLocation: sourceLocation)
        try Qemu.check(qcow, sourceLocation: sourceLocation)
        try Qemu.compare(raw: rawPath, qcow2: qcow, sourceLocation: sourceLocation)
    }

    @Test("An image made by qemu-img create, cluster sizes 4 KiB and 64 KiB", arguments: [4096, 65536])
    func created(clusterSize: Int) throws {
        let folder = try ScratchFolder()
        let qcow = folder.file("disk.qcow2"), raw = folder.file("disk.raw")
        try Qemu.run(Qemu.img, ["create", "-q", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)", qcow, "8M"])
        try writeFile(raw, [UInt8](repeating: 0, count: 8 << 20))
        try Self.exercise(qcow: qcow, rawPath: raw, clusterSize: clusterSize, seed: UInt64(clusterSize))
    }

    @Test("Compressed clusters (qemu-img convert -c) read and rewritten while other requests are in flight")
    func compressed() throws {
        let folder = try ScratchFolder()
        let qcow = folder.file("disk.qcow2"), raw = folder.file("disk.raw")
        try writeFile(raw, diskPattern(count: 8 << 20, seed: 11, grain: 16384, compressible: true))
        try Qemu.run(Qemu.img, ["convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw, qcow])
        try Self.exercise(qcow: qcow, rawPath: raw, clusterSize: 65536, seed: 12)
    }

    @Test("An overlay over a raw backing file (qemu-img create -b)")
    func overBackingFile() throws {
        let folder = try ScratchFolder()
        let base = folder.file("base.raw"), qcow = folder.file("overlay.qcow2"), raw = folder.file("copy.raw")
        let pattern = diskPattern(count: 8 << 20, seed: 21)
        try writeFile(base, pattern)
        try writeFile(raw, pattern)
        try Qemu.run(Qemu.img, ["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", "-o", "cluster_size=65536", qcow])
        try Self.exercise(qcow: qcow, rawPath: raw, clusterSize: 65536, backingFiles: true, seed: 22)
        #expect(try readFile(base) == pattern, "the backing file is never written")
    }

    @Test("O_DIRECT on a file system that has it: unaligned extents move synchronously, the rest on the ring")
    func direct() throws {
        let folder = try ScratchFolder(onDisk: true)
        let qcow = folder.file("disk.qcow2"), raw = folder.file("disk.raw")
        try Qemu.run(Qemu.img, ["create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", qcow, "8M"])
        try writeFile(raw, [UInt8](repeating: 0, count: 8 << 20))
        do {
            _ = try QcowImage(path: qcow, options: .init(direct: true))
        } catch {
            return // no O_DIRECT here (tmpfs): nothing to test
        }
        try Self.exercise(qcow: qcow, rawPath: raw, clusterSize: 65536, direct: true, seed: 31)
    }

    @Test("A cluster freed while a ring request still targets it is not reused until that request is done")
    func freedClusterNotReusedWhileInFlight() throws {
        let folder = try ScratchFolder()
        let qcow = folder.file("disk.qcow2")
        try Qemu.run(Qemu.img, ["create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", qcow, "4M"])
        let cluster = 65536
        do {
            let image = try QcowImage(path: qcow, options: .init(ioUring: true))
            try image.write(bytes: [UInt8](repeating: 1, count: cluster), at: 0)
            let stale = UnsafeMutableRawBufferPointer.allocate(byteCount: cluster, alignment: 4096)
            defer { stale.deallocate() }
            stale.initializeMemory(as: UInt8.self, repeating: 2)
            // A write over the allocated cluster, mapped but not yet on the file (a ring request in flight).
            let extents = try image.mapWrite(from: [UnsafeRawBufferPointer(stale)], at: 0)
            let host = try #require(extents.first?.offset)
            #expect(extents.count == 1)
            // Meanwhile the guest discards the cluster, flushes, and writes elsewhere.
            try image.discard(offset: 0, length: UInt64(cluster))
            try image.flush()
            try image.write(bytes: [UInt8](repeating: 3, count: cluster), at: UInt64(cluster))
            let probe = UnsafeMutableRawBufferPointer.allocate(byteCount: cluster, alignment: 4096)
            defer { probe.deallocate() }
            let newHost = try #require(try image.mapRead(into: [probe], at: UInt64(cluster)).first?.offset)
            image.finishedExtents()
            #expect(newHost != host, "the new cluster reuses host offset \(host) while a ring write to it is in flight")
            // Once the request is done (the late write lands where nothing points), the space comes back.
            let late = try #require(FileHandle(forWritingAtPath: qcow))
            try late.seek(toOffset: host)
            try late.write(contentsOf: Data(UnsafeRawBufferPointer(stale)))
            try late.close()
            image.finishedExtents()
            try image.flush()
            #expect(try image.readBytes(count: cluster, at: 0) == [UInt8](repeating: 0, count: cluster))
            #expect(try image.readBytes(count: cluster, at: UInt64(cluster)) == [UInt8](repeating: 3, count: cluster))
            try image.write(bytes: [UInt8](repeating: 4, count: cluster), at: UInt64(2 * cluster))
            let reused = try #require(try image.mapRead(into: [probe], at: UInt64(2 * cluster)).first?.offset)
            image.finishedExtents()
            #expect(reused == host, "the freed cluster is reused after the request")
            try image.flush()
        }
        try Qemu.check(qcow)
    }

    @Test("Without ioUring (_disable_io_uring, or no io_uring on the host) the image offers no queue and runs synchronously")
    func fallback() throws {
        let folder = try ScratchFolder()
        let qcow = folder.file("disk.qcow2")
        try Qemu.run(Qemu.img, ["create", "-q", "-f", "qcow2", qcow, "4M"])
        do {
            let image = try DiskImage.open(path: qcow, options: .init(ioUring: false))
            #expect(try image.makeAsyncQueue(slots: 8) == nil)
            let bytes = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            try image.write(bytes: bytes, at: 70_000)
            try image.flush()
            #expect(try image.readBytes(count: bytes.count, at: 70_000) == bytes)
        }
        do {
            let image = try DiskImage.open(path: qcow, options: .init(ioUring: true))
            #expect(try image.makeAsyncQueue(slots: 8) != nil)
        }
        try Qemu.check(qcow)
    }
}
