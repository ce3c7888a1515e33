import BlockStorage
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The io_uring engine on real files and pipes (this host has io_uring; the VMM falls back
/// to the synchronous path where it has not).
@Suite struct IoUringEngineTests {
    /// Reaps until `count` completions arrived; returns them in arrival order.
    func collect(_ engine: IoUringEngine, count: Int) throws -> [(slot: Int, result: Int32)] {
        var done: [(slot: Int, result: Int32)] = []
        while done.count < count {
            try engine.wait()
            engine.reap { done.append(($0, $1)) }
        }
        return done
    }

    @Test func theProbeFindsIoUringOnThisHost() {
        #expect(IoUringEngine.isSupported, "\(IoUringEngine.unsupportedReason ?? "")")
    }

    @Test("64 reads in flight at once, each slot gets its own bytes")
    func manyReadsInFlight() throws {
        let size = 64 * 4096
        let image = try ScratchImage(size: size)
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 / 4096 &* 37 &+ $0) }
        try Data(bytes).write(to: URL(fileURLWithPath: image.path))
        let disk = try RawFileBackend(path: image.path, options: .init(ioUring: true))
        let queue = try #require(try disk.makeAsyncQueue(slots: 64))
        var buffers = [UInt8](repeating: 0, count: size)
        try buffers.withUnsafeMutableBytes { all in
            for slot in 0..<64 {
                // Slot s reads block 63 - s.
                let piece = UnsafeMutableRawBufferPointer(rebasing: all[(slot * 4096)..<((slot + 1) * 4096)])
                #expect(try queue.read(slot: slot, into: [piece], at: UInt64((63 - slot) * 4096)))
            }
            #expect(queue.inFlight == 64)
            try queue.submit()
            var seen = Set<Int>()
            while seen.count < 64 {
                try queue.wait()
                queue.reap { slot, result in
                    #expect((try? result.get()) == 4096)
                    seen.insert(slot)
                }
            }
            #expect(queue.inFlight == 0)
        }
        for slot in 0..<64 {
            let block = 63 - slot
            #expect(Array(buffers[(slot * 4096)..<((slot + 1) * 4096)]) == Array(bytes[(block * 4096)..<((block + 1) * 4096)]))
        }
    }

    @Test("completions arrive in the order the kernel finishes them, not the submission order")
    func outOfOrderCompletion() throws {
        var first: [Int32] = [0, 0], second: [Int32] = [0, 0]
        #expect(pipe(&first) == 0 && pipe(&second) == 0)
        defer { for fd in first + second { close(fd) } }
        let engine = try IoUringEngine(slots: 4)
        var a = [UInt8](repeating: 0, count: 3), b = [UInt8](repeating: 0, count: 3)
        try a.withUnsafeMutableBytes { bufferA in
            try b.withUnsafeMutableBytes { bufferB in
                try engine.prepare(slot: 0, .read, descriptor: first[0], buffers: [bufferA], offset: UInt64.max)
                try engine.prepare(slot: 1, .read, descriptor: second[0], buffers: [bufferB], offset: UInt64.max)
                try engine.submit()
                #expect(write(second[1], "two", 3) == 3)
                let early = try collect(engine, count: 1)
                #expect(early.map(\.slot) == [1] && early[0].result == 3)
                #expect(write(first[1], "one", 3) == 3)
                let late = try collect(engine, count: 1)
                #expect(late.map(\.slot) == [0] && late[0].result == 3)
            }
        }
        #expect(a == Array("one".utf8) && b == Array("two".utf8))
    }

    @Test("a short read is resubmitted and reported once whole; a read past the end of the file is ENODATA")
    func shortTransfers() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        let engine = try IoUringEngine(slots: 2)
        var buffer = [UInt8](repeating: 0, count: 8)
        try buffer.withUnsafeMutableBytes { whole in
            // Two iovecs, and the bytes arrive in two writes: the first completion is short.
            let pieces = [UnsafeMutableRawBufferPointer(rebasing: whole[0..<5]), UnsafeMutableRawBufferPointer(rebasing: whole[5..<8])]
            try engine.prepare(slot: 1, .read, descriptor: ends[0], buffers: pieces, offset: UInt64.max)
            try engine.submit()
            #expect(write(ends[1], "abc", 3) == 3)
            usleep(50_000)
            engine.reap { slot, _ in Issue.record("slot \(slot) reported before it was whole") }
            #expect(engine.inFlight == 1)
            #expect(write(ends[1], "defgh", 5) == 5)
            let done = try collect(engine, count: 1)
            #expect(done.count == 1 && done[0].slot == 1 && done[0].result == 8)
        }
        #expect(buffer == Array("abcdefgh".utf8))

        let image = try ScratchImage(size: 6000)
        let file = try RawFileBackend(path: image.path, options: .init(lock: .none))
        var room = [UInt8](repeating: 0, count: 8192)
        try room.withUnsafeMutableBytes { all in
            try engine.prepare(slot: 0, .read, descriptor: file.file.rawValue, buffers: [all], offset: 0)
            try engine.submit()
            let done = try collect(engine, count: 1)
            #expect(done[0].result == -ENODATA)
        }
    }

    @Test("a bad descriptor fails its own request with EBADF; a busy or unknown slot is refused")
    func errors() throws {
        let engine = try IoUringEngine(slots: 2)
        var buffer = [UInt8](repeating: 0, count: 512)
        try buffer.withUnsafeMutableBytes { all in
            try engine.prepare(slot: 0, .read, descriptor: 987_654, buffers: [all], offset: 0)
            #expect(throws: BlockError.host(call: "io_uring prepare (slot 0)", errno: EBUSY)) {
                try engine.prepare(slot: 0, .read, descriptor: 987_654, buffers: [all], offset: 0)
            }
            #expect(throws: BlockError.self) { try engine.prepare(slot: 2, .read, descriptor: 0, buffers: [all], offset: 0) }
            try engine.submit()
            let done = try collect(engine, count: 1)
            #expect(done[0].slot == 0 && done[0].result == -EBADF)
        }
    }

    @Test("writes with more iovecs than a slot holds inline, then fdatasync, reach the file")
    func longWriteAndSync() throws {
        let image = try ScratchImage(size: 40 * 512)
        let disk = try RawFileBackend(path: image.path, options: .init(ioUring: true))
        let queue = try #require(try disk.makeAsyncQueue(slots: 4))
        let bytes = (0..<(40 * 512)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        try bytes.withUnsafeBytes { all in
            let pieces = (0..<40).map { UnsafeRawBufferPointer(rebasing: all[($0 * 512)..<(($0 + 1) * 512)]) }
            #expect(try queue.write(slot: 3, from: pieces, at: 0))
            try queue.submit()
            var results: [Int] = []
            while results.isEmpty { try queue.wait(); queue.reap { _, result in results.append((try? result.get()) ?? -1) } }
            #expect(results == [40 * 512])
        }
        #expect(try queue.flush(slot: 2))
        try queue.submit()
        var flushed = false
        while !flushed { try queue.wait(); queue.reap { slot, result in flushed = slot == 2 && (try? result.get()) != nil } }
        #expect(image.contents == bytes)
        bytes.withUnsafeBytes { all in
            let past = UnsafeRawBufferPointer(rebasing: all[0..<512])
            #expect(throws: BlockError.outOfRange(offset: 40 * 512, length: 512, size: 40 * 512)) {
                _ = try queue.write(slot: 0, from: [past], at: UInt64(40 * 512))
            }
        }
        let emptyTaken = try queue.write(slot: 0, from: [], at: 0)
        #expect(!emptyTaken, "an empty write stays synchronous")
    }

    @Test func aSynchronousBackendOffersNoQueue() throws {
        let image = try ScratchImage(size: 4096)
        #expect(try RawFileBackend(path: image.path).makeAsyncQueue(slots: 8) == nil)
        #expect(try MemoryBlockBackend(size: 4096).makeAsyncQueue(slots: 8) == nil)
    }
}
