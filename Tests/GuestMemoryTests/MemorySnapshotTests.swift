import Testing
import HostSystem
@testable import GuestMemory

#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An unlinked temporary file in `$TMPDIR` (or `/tmp`), open for reading and writing.
func temporaryFile() throws -> OwnedFileDescriptor {
    let directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    let path = "\(directory)/guest-memory-snapshot-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    let file = try OwnedFileDescriptor(path: path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o600)
    unlink(path)
    return file
}

/// Fills `memory` with a recognisable pattern: a run across the boundary of the two
/// contiguous regions, a page in the middle of the first, the last bytes of the third;
/// everything else stays zero.
func writePattern(_ memory: GuestMemory) throws {
    try memory.write(bytes: (0..<64).map { UInt8($0 + 1) }, at: GuestAddress(0xFFE0))
    try memory.write(bytes: (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }, at: GuestAddress(0x3000))
    try memory.write(bytes: [0xAA, 0xBB], at: GuestAddress(0x10FFFE))
    try memory.write(UInt32(0xDEAD_BEEF), at: GuestAddress(0x100800))
}

/// Every byte of `memory`, region by region.
func allBytes(_ memory: GuestMemory) throws -> [UInt8] {
    var bytes: [UInt8] = []
    for region in memory.regions { bytes += try memory.readBytes(count: Int(region.size), at: region.start) }
    return bytes
}

@Suite("Memory snapshots", .serialized)
struct MemorySnapshotTests {
    @Test func rangeTableJSONMatchesCloudHypervisor() throws {
        let memory = try makeMemory()
        let table = memory.rangeTable
        #expect(table.data == [MemoryRange(gpa: 0, length: 0x10000), MemoryRange(gpa: 0x10000, length: 0x10000),
                               MemoryRange(gpa: 0x100000, length: 0x10000)])
        #expect(table.totalLength == 0x30000)
        #expect(table.fileOffsets == [0, 0x10000, 0x20000])
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = try encoder.encode(MemoryRangeTable([MemoryRange(gpa: 4096, length: 8192)]))
        #expect(String(decoding: json, as: UTF8.self) == #"{"data":[{"gpa":4096,"length":8192}]}"#)
        let decoded = try JSONDecoder().decode(MemoryRangeTable.self, from: Data(#"{"data":[{"gpa":0,"length":1073741824}]}"#.utf8))
        #expect(decoded.ranges == [MemoryRange(gpa: 0, length: 1 << 30)])
    }

    @Test func roundTripAcrossRegionsWithDataZeroPagesAndABoundary() throws {
        let source = try makeMemory()
        try writePattern(source)
        let file = try temporaryFile()
        let table = try source.saveSnapshot(to: file)
        #expect(table == source.rangeTable)
        #expect(try file.size() == 0x30000)

        // The destination starts with garbage everywhere: holes must come back as zeros.
        let destination = try makeMemory(dirtyTracking: true)
        for region in destination.regions { try destination.fill(0x5A, count: Int(region.size), at: region.start) }
        _ = destination.takeDirtyBitmaps()
        try destination.restoreSnapshot(from: file, table: table)
        #expect(try allBytes(destination) == allBytes(source))
        #expect(try destination.readBytes(count: 64, at: GuestAddress(0xFFE0)) == (0..<64).map { UInt8($0 + 1) })
        #expect(try destination.read(UInt32.self, at: GuestAddress(0x100800)) == 0xDEAD_BEEF)
        // A restore marks nothing dirty: the memory equals the snapshot it came from.
        #expect(destination.dirtyPageCount == 0)
    }

    @Test func prefaultedRestoreHasTheSameContents() throws {
        let source = try makeMemory()
        try writePattern(source)
        let file = try temporaryFile()
        let table = try source.saveSnapshot(to: file)
        let destination = try makeMemory()
        try destination.restoreSnapshot(from: file, table: table, prefault: true)
        #expect(try allBytes(destination) == allBytes(source))
    }

    @Test func savedFileIsSparse() throws {
        let size: UInt64 = 64 << 20
        let memory = try GuestMemory.anonymous([(GuestAddress(0), size)])
        // 16 pages of data spread over the guest, the rest never touched.
        for index in 0..<16 {
            try memory.write(bytes: [UInt8](repeating: UInt8(index + 1), count: 4096), at: GuestAddress(UInt64(index) * (4 << 20)))
        }
        let file = try temporaryFile()
        try memory.saveSnapshot(to: file)
        #expect(try file.size() == Int64(size))
        let allocated = try file.allocatedBytes()
        #expect(allocated < 1 << 20, "a 64 MiB guest with 64 KiB of data should occupy far less than 1 MiB, got \(allocated)")
        #expect(try file.nextData(atOrAfter: 4096) == 4 << 20)
        #expect(try file.nextHole(atOrAfter: 4 << 20) == (4 << 20) + 4096)

        let copy = try GuestMemory.anonymous([(GuestAddress(0), size)])
        try copy.restoreSnapshot(from: file, table: memory.rangeTable)
        for index in 0..<16 {
            let at = GuestAddress(UInt64(index) * (4 << 20))
            #expect(try copy.readBytes(count: 4096, at: at) == [UInt8](repeating: UInt8(index + 1), count: 4096))
            #expect(try copy.read(UInt8.self, at: GuestAddress(at.rawValue + 4096)) == 0)
        }
    }

    @Test func savingOverAnOldFileLeavesNoStaleBytes() throws {
        let file = try temporaryFile()
        try file.writeAll([UInt8](repeating: 0xFF, count: 0x40000))
        let memory = try makeMemory()
        try memory.write(UInt8(1), at: GuestAddress(0x20))
        let table = try memory.saveSnapshot(to: file)
        #expect(try file.size() == 0x30000)
        let copy = try makeMemory()
        try copy.restoreSnapshot(from: file, table: table)
        #expect(try allBytes(copy) == allBytes(memory))
    }

    @Test func restoreRefusesADamagedTableOrFileWithTheReason() throws {
        let memory = try makeMemory()
        try writePattern(memory)
        let file = try temporaryFile()
        let table = try memory.saveSnapshot(to: file)

        func reason(_ table: MemoryRangeTable, file: OwnedFileDescriptor) throws -> String {
            let fresh = try makeMemory()
            do throws(GuestMemoryError) {
                try fresh.restoreSnapshot(from: file, table: table)
                return "restored"
            } catch {
                guard case .snapshotMismatch = error else { return "wrong error: \(error)" }
                return error.description
            }
        }
        var missing = table
        missing.data.removeLast()
        #expect(try reason(missing, file: file).contains("missing [0x100000, 0x110000)"))
        var extra = table
        extra.data.append(MemoryRange(gpa: 0x200000, length: 0x1000))
        #expect(try reason(extra, file: file).contains("extra [0x200000, 0x201000)"))
        var longer = table
        longer.data[1].length = 0x20000
        #expect(try reason(longer, file: file).contains("a different length"))
        var moved = table
        moved.data[2].gpa = 0x180000
        #expect(try reason(moved, file: file).contains("a different range"))

        try file.truncate(to: 0x2F000)
        #expect(try reason(table, file: file).contains("shorter than the table says"))
        try file.truncate(to: 0x31000)
        #expect(try reason(table, file: file).contains("longer than the table says"))
    }

    @Test func onDemandRestoreServesTouchedChunksOnly() throws {
        let source = try makeMemory()
        try writePattern(source)
        let file = try temporaryFile()
        let table = try source.saveSnapshot(to: file)
        let destination = try makeMemory()
        let restorer = try LazyMemoryRestorer(memory: destination, file: file, table: table)
        defer { restorer.stop() }
        #expect(restorer.statistics.chunksFilled == 0)

        // This thread faults; the handler thread fills each page from the file.
        #expect(try destination.readBytes(count: 64, at: GuestAddress(0xFFE0)) == (0..<64).map { UInt8($0 + 1) })
        #expect(try destination.readBytes(count: 4096, at: GuestAddress(0x3000)) == source.readBytes(count: 4096, at: GuestAddress(0x3000)))
        #expect(try destination.read(UInt32.self, at: GuestAddress(0x100800)) == 0xDEAD_BEEF)
        #expect(try destination.read(UInt64.self, at: GuestAddress(0x8000)) == 0)  // a hole
        // Pages 0xF, 0x10 (the boundary), 0x3, 0x100 and 0x8: five chunks, one of them zero.
        let statistics = restorer.statistics
        #expect(statistics.chunksFilled == 5, "\(statistics)")
        #expect(statistics.pagesCopied == 4, "\(statistics)")
        #expect(statistics.pagesZeroed == 1, "\(statistics)")
        #expect(statistics.faults >= 5 && statistics.faults <= 6, "\(statistics)")
        #expect(!restorer.isComplete)

        // Writes fault too, and keep what was written.
        try destination.write(UInt16(0x1234), at: GuestAddress(0x20000 - 0x1000 + 8))
        #expect(try destination.read(UInt16.self, at: GuestAddress(0x1F008)) == 0x1234)
        #expect(restorer.statistics.chunksFilled == 6)
        #expect(restorer.failure == nil)
    }

    @Test func aFaultFillsItsWholeChunk() throws {
        let source = try makeMemory()
        try writePattern(source)
        let file = try temporaryFile()
        let table = try source.saveSnapshot(to: file)
        let destination = try makeMemory()
        let restorer = try LazyMemoryRestorer(memory: destination, file: file, table: table, chunkSize: 0x10000)
        defer { restorer.stop() }
        #expect(try destination.read(UInt8.self, at: GuestAddress(0x3005)) == source.read(UInt8.self, at: GuestAddress(0x3005)))
        var statistics = restorer.statistics
        #expect(statistics.faults == 1 && statistics.chunksFilled == 1, "\(statistics)")
        // Pages 0x3 and 0xF hold data in the first 64 KiB; the other 14 are zero pages.
        #expect(statistics.pagesCopied == 2 && statistics.pagesZeroed == 14, "\(statistics)")
        // The rest of the chunk is present: no further fault.
        #expect(try destination.readBytes(count: 0x10000, at: GuestAddress(0)) == source.readBytes(count: 0x10000, at: GuestAddress(0)))
        statistics = restorer.statistics
        #expect(statistics.faults == 1, "\(statistics)")
    }

    @Test func onDemandRestoreServesTheKernelReadingGuestMemory() throws {
        let source = try makeMemory()
        try writePattern(source)
        let file = try temporaryFile()
        let table = try source.saveSnapshot(to: file)
        let destination = try makeMemory()
        let restorer = try LazyMemoryRestorer(memory: destination, file: file, table: table)
        defer { restorer.stop() }
        // pwrite(2) from guest memory: the kernel's copy faults on the missing page and waits
        // for the handler, as KVM's accesses do.
        let out = try temporaryFile()
        let host = try destination.hostAddress(for: GuestAddress(0x3000), length: 4096)
        try out.writeFully(UnsafeRawBufferPointer(start: host, count: 4096), at: 0)
        var copied = [UInt8](repeating: 0, count: 4096)
        _ = try copied.withUnsafeMutableBytes { try out.readFully(into: $0, at: 0) }
        #expect(copied == (try source.readBytes(count: 4096, at: GuestAddress(0x3000))))
        #expect(restorer.statistics.pagesCopied == 1)
    }

    @Test func prefaultingCompletesAndLeavesOrdinaryMemory() throws {
        let source = try makeMemory()
        try writePattern(source)
        let file = try temporaryFile()
        let table = try source.saveSnapshot(to: file)
        let destination = try makeMemory()
        let restorer = try LazyMemoryRestorer(memory: destination, file: file, table: table, chunkSize: 0x4000)
        _ = try destination.read(UInt8.self, at: GuestAddress(0x100000))
        restorer.prefaultRemaining()
        #expect(try restorer.waitUntilComplete(timeoutMilliseconds: 20_000))
        #expect(restorer.isComplete)
        let statistics = restorer.statistics
        #expect(statistics.chunksFilled == 0x30000 / 0x4000, "\(statistics)")
        #expect(statistics.chunksPrefaulted == statistics.chunksFilled - 1, "\(statistics)")
        #expect(statistics.pagesCopied + statistics.pagesZeroed == 0x30, "\(statistics)")
        #expect(try allBytes(destination) == allBytes(source))
        // Unregistered: dropping a page now simply makes it read as zero.
        try destination.regions[0].mapping.advise(offset: 0x3000, length: 0x1000, advice: MADV_DONTNEED)
        #expect(try destination.read(UInt64.self, at: GuestAddress(0x3000)) == 0)
        restorer.stop()
    }

    @Test func onDemandRestoreChecksTheTableFirst() throws {
        let memory = try makeMemory()
        let file = try temporaryFile()
        var table = try memory.saveSnapshot(to: file)
        table.data.removeFirst()
        #expect {
            _ = try LazyMemoryRestorer(memory: try makeMemory(), file: file, table: table)
        } throws: { error in
            guard case GuestMemoryError.snapshotMismatch = error else { return false }
            return true
        }
    }

    @Test func refusedUserfaultfdIsExplained() throws {
        let memory = try makeMemory()
        let file = try temporaryFile()
        let table = try memory.saveSnapshot(to: file)
        let refusing = UserFaultFD.Creator { _ throws(UserFaultFDError) in
            throw .unavailable(SystemError(call: "userfaultfd(O_CLOEXEC|O_NONBLOCK)", errno: EPERM),
                               device: SystemError(call: "open(/dev/userfaultfd)", errno: EACCES))
        }
        let fresh = try makeMemory()
        do throws(GuestMemoryError) {
            _ = try LazyMemoryRestorer(memory: fresh, file: file, table: table, creator: refusing)
            Issue.record("a refused userfaultfd was not reported")
        } catch {
            guard case .userfaultfdUnavailable = error else { Issue.record("wrong error \(error)"); return }
            #expect(error.description.contains("vm.unprivileged_userfaultfd"), "\(error)")
            #expect(error.description.contains("memory_restore_mode=copy"), "\(error)")
            #expect(error.description.contains("open(/dev/userfaultfd) failed"), "\(error)")
        }
        // A descriptor that is not a userfaultfd fails the handshake, which names the ioctl.
        let notUffd = try EventFD().descriptor.duplicate()
        do throws(GuestMemoryError) {
            _ = try LazyMemoryRestorer(memory: fresh, file: file, table: table, creator: .adopting(notUffd))
            Issue.record("an eventfd passed the userfaultfd handshake")
        } catch {
            #expect(error.description.contains("UFFDIO_API"), "\(error)")
        }
    }
}
