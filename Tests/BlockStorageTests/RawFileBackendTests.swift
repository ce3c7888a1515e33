import HostSystem
import CLinux
import BlockStorage
import Foundation
import Testing

/// A scratch file of `size` bytes, removed when the test ends.
final class ScratchImage {
    let path: String
    init(size: Int, fill: UInt8 = 0) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("blk-\(UUID().uuidString).img").path
        try Data(repeating: fill, count: size).write(to: URL(fileURLWithPath: path))
    }
    var contents: [UInt8] { [UInt8]((try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()) }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

@Suite struct RawFileBackendTests {
    @Test("resize(to:) grows and shrinks the file; the size and the range checks follow; read-only refuses")
    func resize() throws {
        let image = try ScratchImage(size: 8192, fill: 0x5A)
        let disk = try RawFileBackend(path: image.path)
        try disk.resize(to: 16384)
        #expect(disk.size == 16384)
        #expect(image.contents.count == 16384)
        try disk.write(bytes: [1, 2, 3], at: 16000)
        #expect(try disk.readBytes(count: 2, at: 8191) == [0x5A, 0], "old bytes kept, new ones zero")
        try disk.resize(to: 4096)
        #expect(disk.size == 4096 && image.contents.count == 4096)
        #expect(throws: BlockError.self) { _ = try disk.readBytes(count: 512, at: 4096) }
        let readOnly = try RawFileBackend(path: image.path, options: .init(readOnly: true, lock: .none))
        #expect(throws: BlockError.readOnly) { try readOnly.resize(to: 8192) }
        #expect(readOnly.size == 4096)
        #expect(throws: BlockError.self) { try MemoryBlockBackend(size: 4096).resize(to: 8192) }
    }

    @Test func writesReachTheFileAndReadBack() throws {
        let image = try ScratchImage(size: 64 * 1024)
        let disk = try RawFileBackend(path: image.path)
        #expect(disk.size == 64 * 1024)
        let pattern = (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try disk.write(bytes: pattern, at: 4096)
        try disk.flush()
        #expect(try disk.readBytes(count: 8192, at: 4096) == pattern)
        #expect(Array(image.contents[4096..<(4096 + 8192)]) == pattern)
    }

    @Test func vectoredReadFillsBuffersInOrder() throws {
        let image = try ScratchImage(size: 8192)
        let disk = try RawFileBackend(path: image.path)
        let pattern = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        try disk.write(bytes: pattern, at: 100)
        var first = [UInt8](repeating: 0, count: 1000)
        var second = [UInt8](repeating: 0, count: 2000)
        try first.withUnsafeMutableBytes { a in
            try second.withUnsafeMutableBytes { b in try disk.read(into: [a, b], at: 100) }
        }
        #expect(first + second == pattern)
    }

    @Test func readOnlyRefusesEveryChangeAndLeavesTheFile() throws {
        let image = try ScratchImage(size: 4096, fill: 0x5A)
        let disk = try RawFileBackend(path: image.path, options: .init(readOnly: true))
        #expect(throws: BlockError.readOnly) { try disk.write(bytes: [1, 2, 3], at: 0) }
        #expect(throws: BlockError.readOnly) { try disk.discard(offset: 0, length: 512) }
        #expect(throws: BlockError.readOnly) { try disk.writeZeroes(offset: 0, length: 512, unmap: false) }
        #expect(image.contents == [UInt8](repeating: 0x5A, count: 4096))
    }

    @Test func rangesPastTheEndAreRefused() throws {
        let image = try ScratchImage(size: 4096)
        let disk = try RawFileBackend(path: image.path)
        #expect(throws: BlockError.outOfRange(offset: 4000, length: 200, size: 4096)) { _ = try disk.readBytes(count: 200, at: 4000) }
        #expect(throws: BlockError.self) { try disk.discard(offset: UInt64.max - 1, length: 10) }
    }

    @Test func aWritableImageIsLockedAgainstASecondOpen() throws {
        let image = try ScratchImage(size: 4096)
        let first = try RawFileBackend(path: image.path)
        #expect(throws: BlockError.locked(path: image.path)) { _ = try RawFileBackend(path: image.path) }
        #expect(throws: BlockError.locked(path: image.path)) { _ = try RawFileBackend(path: image.path, options: .init(readOnly: true)) }
        _ = first
    }

    @Test("Cloud Hypervisor's lock granularities: a byte-range lock covers [0, size), so a lock past the end is free; a whole-file lock covers it too")
    func lockGranularities() throws {
        let image = try ScratchImage(size: 4096)
        do {
            let probe = try OwnedFileDescriptor(path: image.path, flags: O_RDWR)
            let ranged = try RawFileBackend(path: image.path, options: .init(lock: .byteRange))
            #expect(throws: BlockError.locked(path: image.path)) { _ = try RawFileBackend(path: image.path, options: .init(lock: .wholeFile)) }
            // Past the locked range: another open file description may lock there.
            #expect(clinux_ofd_lock(probe.rawValue, 1, 4096, 512) == 0)
            _ = ranged
        }
        let probe2 = try OwnedFileDescriptor(path: image.path, flags: O_RDWR)
        do {
            let whole = try RawFileBackend(path: image.path, options: .init(lock: .wholeFile))
            #expect(clinux_ofd_lock(probe2.rawValue, 1, 8192, 512) != 0, "a whole-file lock reaches past the end")
            _ = whole
        }
    }

    @Test func readOnlyOpensShareTheImageAndTheLockGoesWithTheBackend() throws {
        let image = try ScratchImage(size: 4096)
        do {
            let a = try RawFileBackend(path: image.path, options: .init(readOnly: true))
            let b = try RawFileBackend(path: image.path, options: .init(readOnly: true))
            #expect(throws: BlockError.locked(path: image.path)) { _ = try RawFileBackend(path: image.path) }
            _ = (a, b)
        }
        // Both read-only backends are gone, and their locks with them.
        _ = try RawFileBackend(path: image.path)
    }

    @Test func discardAndWriteZeroesReadBackAsZeroes() throws {
        let image = try ScratchImage(size: 1 << 20, fill: 0xFF)
        let disk = try RawFileBackend(path: image.path)
        try disk.discard(offset: 65536, length: 65536)
        try disk.writeZeroes(offset: 4096, length: 4096, unmap: false)
        try disk.writeZeroes(offset: 300_000, length: 1000, unmap: true)
        let contents = image.contents
        #expect(contents[65536..<131072].allSatisfy { $0 == 0 })
        #expect(contents[4096..<8192].allSatisfy { $0 == 0 })
        #expect(contents[300_000..<301_000].allSatisfy { $0 == 0 })
        #expect(contents[65535] == 0xFF && contents[131072] == 0xFF && contents[4095] == 0xFF && contents[8192] == 0xFF)
        #expect(contents[299_999] == 0xFF && contents[301_000] == 0xFF)
    }

    @Test func directIOHandlesAlignedAndUnalignedRequests() throws {
        let image = try ScratchImage(size: 1 << 20, fill: 0x11)
        let disk: RawFileBackend
        do {
            disk = try RawFileBackend(path: image.path, options: .init(direct: true))
        } catch {
            // O_DIRECT is a file-system feature (tmpfs lacks it): nothing to test there.
            return
        }
        #expect(disk.preferredAlignment == 4096)
        let aligned = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        try disk.write(bytes: aligned, at: 8192)   // Array storage is not page-aligned: bounce path.
        #expect(try disk.readBytes(count: 8192, at: 8192) == aligned)
        let odd = [UInt8](repeating: 0xC3, count: 700)
        try disk.write(bytes: odd, at: 513)
        let window = try disk.readBytes(count: 2048, at: 0)
        #expect(window[0..<513].allSatisfy { $0 == 0x11 })
        #expect(Array(window[513..<1213]) == odd)
        #expect(window[1213...].allSatisfy { $0 == 0x11 })
        let page = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { page.deallocate() }
        try disk.read(into: [page], at: 8192)
        #expect(Array(page) == Array(aligned[0..<4096]))
    }

    @Test func aMissingFileIsAnErrorNamingThePath() {
        do {
            _ = try RawFileBackend(path: "/nonexistent/disk.img")
            Issue.record("opened a missing file")
        } catch {
            #expect(error.description.contains("/nonexistent/disk.img"))
            #expect(error.description.contains("No such file"))
        }
    }
}

@Suite struct MemoryBlockBackendTests {
    @Test func roundTripAndZeroing() throws {
        let disk = MemoryBlockBackend(size: 4096)
        try disk.write(bytes: [1, 2, 3, 4], at: 10)
        #expect(try disk.readBytes(count: 6, at: 9) == [0, 1, 2, 3, 4, 0])
        try disk.discard(offset: 11, length: 2)
        #expect(try disk.readBytes(count: 4, at: 10) == [1, 0, 0, 4])
        #expect(throws: BlockError.self) { try disk.write(bytes: [1], at: 4096) }
        let readOnly = MemoryBlockBackend(size: 16, readOnly: true)
        #expect(throws: BlockError.readOnly) { try readOnly.write(bytes: [1], at: 0) }
    }
}
