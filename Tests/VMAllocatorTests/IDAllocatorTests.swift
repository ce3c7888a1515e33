import Testing
import VMAllocator

@Suite("IDAllocator")
struct IDAllocatorTests {
    @Test("hands out the lowest free id and reuses freed ones first")
    func lowestFreeAndReuse() throws {
        var slots = IDAllocator(name: "PCI slots", range: 1...31)
        #expect(try slots.allocate() == 1)
        #expect(try slots.allocate() == 2)
        #expect(try slots.allocate() == 3)
        #expect(try slots.allocate() == 4)
        try slots.free(2)
        try slots.free(3)
        #expect(!slots.isAllocated(2))
        #expect(try slots.allocate() == 2)
        #expect(try slots.allocate() == 3)
        #expect(try slots.allocate() == 5)
        #expect(slots.allocatedIDs == [1, 2, 3, 4, 5])
        #expect(slots.freeCount == 26)
    }

    @Test("exhaustion is reported with the range, and freeing recovers")
    func exhaustion() throws {
        var ids = IDAllocator(name: "vCPU ids", range: 5...7)
        #expect(try ids.allocate() == 5)
        #expect(try ids.allocate() == 6)
        #expect(try ids.allocate() == 7)
        #expect(throws: AllocatorError.idsExhausted(pool: "vCPU ids", range: 5...7)) { try ids.allocate() }
        try ids.free(6)
        #expect(try ids.allocate() == 6)
        #expect(ids.freeCount == 0)
    }

    @Test("specific ids: taken ones are skipped, duplicates and strangers rejected")
    func specificIDs() throws {
        var ids = IDAllocator(name: "memory zones", range: 0...9)
        try ids.allocate(0)
        try ids.allocate(2)
        try ids.allocate(9)
        #expect(ids.isAllocated(2))
        #expect(!ids.isAllocated(10))
        #expect(try ids.allocate() == 1)
        #expect(try ids.allocate() == 3)
        #expect(throws: AllocatorError.alreadyAllocated(2, pool: "memory zones")) { try ids.allocate(2) }
        #expect(throws: AllocatorError.idOutOfRange(10, pool: "memory zones", range: 0...9)) { try ids.allocate(10) }
        #expect(throws: AllocatorError.idOutOfRange(10, pool: "memory zones", range: 0...9)) { try ids.free(10) }
        #expect(throws: AllocatorError.idNotAllocated(5, pool: "memory zones")) { try ids.free(5) }
        try ids.free(9)
        #expect(throws: AllocatorError.idNotAllocated(9, pool: "memory zones")) { try ids.free(9) }
        #expect(ids.allocatedIDs == [0, 1, 2, 3])
    }

    @Test("the full UInt32 range works without overflow")
    func fullRange() throws {
        var ids = IDAllocator(name: "everything", range: 0...UInt32.max)
        #expect(ids.capacity == 1 << 32)
        try ids.allocate(UInt32.max)
        #expect(try ids.allocate() == 0)
        #expect(ids.isAllocated(UInt32.max))
        var top = IDAllocator(name: "top", range: UInt32.max...UInt32.max)
        #expect(try top.allocate() == UInt32.max)
        #expect(throws: AllocatorError.idsExhausted(pool: "top", range: UInt32.max...UInt32.max)) {
            try top.allocate()
        }
    }
}
