import CLinux
import GuestMemory
import HostSystem
import Testing

@Suite struct DiscardTests {
    @Test func anonymousPagesReadZeroAfterDiscard() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x10_0000), (start: GuestAddress(0x20_0000), size: 0x10_0000)])
        try memory.fill(0x5A, count: 0x10_0000, at: GuestAddress(0))
        #expect(try memory.discard(GuestAddress(0x4000), length: 0x2000) == 0x2000)
        #expect(try memory.readBytes(count: 0x2000, at: GuestAddress(0x4000)).allSatisfy { $0 == 0 })
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x3FFF)) == 0x5A && memory.read(UInt8.self, at: GuestAddress(0x6000)) == 0x5A)
        // Clamped to the region that holds the start; a gap is refused.
        #expect(try memory.discard(GuestAddress(0xFF000), length: 0x10_0000) == 0x1000)
        #expect(throws: GuestMemoryError.self) { try memory.discard(GuestAddress(0x10_0000), length: 0x1000) }
        // WILLNEED must stay inside one region.
        try memory.adviseWillNeed(GuestAddress(0x4000), length: 0x1000)
        #expect(throws: GuestMemoryError.self) { try memory.adviseWillNeed(GuestAddress(0xFF000), length: 0x2000) }
    }

    @Test func sharedMemoryFilePagesArePunchedOut() throws {
        let size = 0x40_0000
        let file = try OwnedFileDescriptor.memoryFile(name: "discard-test", size: Int64(size))
        let mapping = try MemoryMapping(file: file, size: size, options: [.shared])
        let memory = try GuestMemory(regions: [try GuestMemoryRegion(start: GuestAddress(0), mapping: mapping)])
        try memory.fill(0x77, count: size, at: GuestAddress(0))
        let before = try file.allocatedBytes()
        #expect(before >= Int64(size))
        try memory.discard(GuestAddress(0x10_0000), length: 0x20_0000)
        let after = try file.allocatedBytes()
        #expect(before - after >= 0x20_0000)
        #expect(try memory.readBytes(count: 16, at: GuestAddress(0x10_0000)) == [UInt8](repeating: 0, count: 16))
    }

    @Test func discardMarksTheRangeDirtyWhileTracking() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x10_0000)])
        memory.enableDirtyTracking()
        try memory.discard(GuestAddress(0x8000), length: 0x1000)
        #expect(memory.regions[0].isDirty(page: 8) && memory.dirtyPageCount == 1)
    }
}
