import GuestMemory
import Testing
@testable import VirtioQueue

/// Pops reuse the storage of the chain popped last once it is dropped; a chain a device
/// still holds must keep its own descriptors.
@Suite("Chain storage reuse")
struct ChainStorageTests {
    @Test("a held chain keeps its descriptors while later pops reuse storage")
    func heldChainSurvivesLaterPops() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 16, flags: .next, next: 1)
        try driver.setDescriptor(1, address: Driver.data + 0x100, length: 1, flags: .write)
        try driver.setDescriptor(2, address: Driver.data + 0x200, length: 32, flags: .next, next: 3)
        try driver.setDescriptor(3, address: Driver.data + 0x300, length: 8, flags: .next, next: 4)
        try driver.setDescriptor(4, address: Driver.data + 0x400, length: 2, flags: .write)
        try driver.publish(0, 2, 0, 2)
        let first = try #require(try driver.pop())
        let second = try #require(try driver.pop())
        #expect(first.descriptors == [Descriptor(address: GuestAddress(Driver.data), length: 16, isWritable: false),
                                      Descriptor(address: GuestAddress(Driver.data + 0x100), length: 1, isWritable: true)])
        #expect(second.descriptors.map(\.length) == [32, 8, 2] && second.firstWritable == 2)
        // Drop the chains one by one between pops: the contents stay right whichever storage is reused.
        var lengths: [[UInt32]] = []
        for _ in 0..<2 {
            let chain = try #require(try driver.pop())
            lengths.append(chain.descriptors.map(\.length))
        }
        #expect(lengths == [[16, 1], [32, 8, 2]])
        #expect(first.descriptors.map(\.length) == [16, 1] && second.descriptors.map(\.length) == [32, 8, 2])
        #expect(try driver.pop() == nil)
    }

    @Test("a refused chain after a good one neither corrupts the good one nor moves the index")
    func badChainAfterGoodOne() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 4, flags: .write)
        try driver.setDescriptor(1, address: Driver.memorySize, length: 4)
        try driver.publish(0, 1)
        let good = try #require(try driver.pop())
        #expect(throws: QueueError.self) { _ = try driver.pop() }
        #expect(driver.queue.nextAvailable == 1)
        #expect(good.descriptors == [Descriptor(address: GuestAddress(Driver.data), length: 4, isWritable: true)])
        // Fixed by the driver, the same slot pops after the failure.
        try driver.setDescriptor(1, address: Driver.data + 8, length: 4)
        #expect(try driver.pop()?.descriptors.map(\.address) == [GuestAddress(Driver.data + 8)])
    }
}

/// The descriptor table is read through one host address per chain when it lies in one
/// region; a table that straddles two contiguous regions is read entry by entry instead,
/// with the same result.
@Suite("Descriptor table across regions")
struct TableAcrossRegionsTests {
    @Test("a table straddling two regions pops the same chains, and used entries land whole")
    func straddlingTable() throws {
        // Two regions meeting at 0x2000; the 16-entry table (256 bytes) starts at 0x1f80.
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x2000),
                                                (start: GuestAddress(0x2000), size: 0x3e000)])
        var queue = try SplitQueue(maxSize: 16)
        queue.size = 16
        let table: UInt64 = 0x1f80
        queue.descriptorTable = GuestAddress(table)
        queue.availableRing = GuestAddress(0x3000)
        queue.usedRing = GuestAddress(0x4000)
        try queue.activate(in: memory)
        #expect(throws: GuestMemoryError.self) { _ = try memory.hostAddress(for: GuestAddress(table), length: 256) }
        func put(_ index: UInt64, _ address: UInt64, _ length: UInt32, _ flags: UInt16, _ next: UInt16) throws {
            let entry = table + 16 * index
            try memory.write(address, at: GuestAddress(entry))
            try memory.write(length, at: GuestAddress(entry + 8))
            try memory.write(flags, at: GuestAddress(entry + 12))
            try memory.write(next, at: GuestAddress(entry + 14))
        }
        // Entry 7 lies below the boundary, 8 and 9 above it.
        try put(7, 0x10000, 16, 1, 8)
        try put(8, 0x11000, 512, 1 | 2, 9)
        try put(9, 0x12000, 1, 2, 0)
        try memory.write(UInt16(7), at: GuestAddress(0x3004))
        try memory.storeRelease(UInt16(1), at: GuestAddress(0x3002))
        let chain = try #require(try queue.popDescriptorChain(in: memory))
        #expect(chain.head == 7)
        #expect(chain.descriptors == [Descriptor(address: GuestAddress(0x10000), length: 16, isWritable: false),
                                      Descriptor(address: GuestAddress(0x11000), length: 512, isWritable: true),
                                      Descriptor(address: GuestAddress(0x12000), length: 1, isWritable: true)])
        try queue.stageUsed(head: 7, length: 513, in: memory)
        try queue.publishUsed(in: memory)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x4004)) == 7)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x4008)) == 513)
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x4002)) == 1)
    }
}

/// Host addresses found while validating: each buffer and ring area mapped once, with the
/// checked accessors taking over wherever a range crosses regions or may not be written.
@Suite("Descriptor and ring host addresses")
struct HostAddressTests {
    /// A queue of 16 over `memory`, table at 0x1000, rings at 0x3000 and `used`.
    static func queue(_ memory: GuestMemory, used: UInt64 = 0x4000) throws -> SplitQueue {
        var queue = try SplitQueue(maxSize: 16)
        queue.size = 16
        queue.descriptorTable = GuestAddress(0x1000)
        queue.availableRing = GuestAddress(0x3000)
        queue.usedRing = GuestAddress(used)
        try queue.activate(in: memory)
        return queue
    }

    static func put(_ memory: GuestMemory, _ index: UInt64, _ address: UInt64, _ length: UInt32, _ flags: UInt16, _ next: UInt16) throws {
        let entry = 0x1000 + 16 * index
        try memory.write(address, at: GuestAddress(entry))
        try memory.write(length, at: GuestAddress(entry + 8))
        try memory.write(flags, at: GuestAddress(entry + 12))
        try memory.write(next, at: GuestAddress(entry + 14))
    }

    @Test("a buffer inside one region carries its host address; one across two regions carries none and still reads whole")
    func descriptorHosts() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x20000),
                                                (start: GuestAddress(0x20000), size: 0x20000)])
        var queue = try Self.queue(memory)
        try Self.put(memory, 0, 0x10000, 16, 1, 1)
        try Self.put(memory, 1, 0x1f000, 0x2000, 1 | 2, 2)  // crosses 0x20000
        try Self.put(memory, 2, 0x30000, 1, 2, 0)
        try memory.write(UInt16(0), at: GuestAddress(0x3004))
        try memory.storeRelease(UInt16(1), at: GuestAddress(0x3002))
        let chain = try #require(try queue.popDescriptorChain(in: memory))
        #expect(chain.descriptors[0].host == (try memory.hostAddress(for: GuestAddress(0x10000), length: 16)))
        #expect(chain.descriptors[1].host == nil)
        #expect(chain.descriptors[2].host == (try memory.hostAddress(for: GuestAddress(0x30000), length: 1)))
        // Equality is the guest range and direction, whatever the host address.
        #expect(chain.descriptors[0] == Descriptor(address: GuestAddress(0x10000), length: 16, isWritable: false))
    }

    @Test("used entries written through the ring's host address mark the page dirty under dirty tracking")
    func usedDirty() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x40000)])
        var queue = try Self.queue(memory)
        try Self.put(memory, 0, 0x10000, 16, 0, 0)
        try memory.write(UInt16(0), at: GuestAddress(0x3004))
        try memory.storeRelease(UInt16(1), at: GuestAddress(0x3002))
        let chain = try #require(try queue.popDescriptorChain(in: memory))
        _ = memory.takeDirtyBitmaps()
        memory.enableDirtyTracking()
        try queue.stageUsed(head: chain.head, length: 0, in: memory)
        #expect(memory.region(containing: GuestAddress(0x4000))?.isDirty(page: 4) == true)
        try queue.publishUsed(in: memory)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x4004)) == 0)
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x4002)) == 1)
    }

    @Test("a used ring in read-only memory is refused by the checked accessor, not written through")
    func readOnlyUsedRing() throws {
        let memory = try GuestMemory(regions: [try GuestMemoryRegion(start: GuestAddress(0), size: 0x4000),
                                               try GuestMemoryRegion(start: GuestAddress(0x4000), size: 0x1000, options: [.readOnly])])
        var queue = try Self.queue(memory)
        try Self.put(memory, 0, 0x2000, 16, 0, 0)
        try memory.write(UInt16(0), at: GuestAddress(0x3004))
        try memory.storeRelease(UInt16(1), at: GuestAddress(0x3002))
        let chain = try #require(try queue.popDescriptorChain(in: memory))
        let error = #expect(throws: QueueError.self) { try queue.stageUsed(head: chain.head, length: 0, in: memory) }
        guard case .memory(.readOnlyRegion)? = error else {
            Issue.record("expected a read-only refusal, got \(String(describing: error))")
            return
        }
    }

    @Test("a queue served from a second memory object looks its rings up there")
    func secondMemory() throws {
        let first = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x40000)])
        let second = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x40000)])
        var queue = try Self.queue(first)
        for memory in [first, second] {
            try Self.put(memory, 0, 0x10000, 16, 0, 0)
            try memory.write(UInt16(0), at: GuestAddress(0x3004))
            try memory.write(UInt16(0), at: GuestAddress(0x3006))
        }
        try first.storeRelease(UInt16(1), at: GuestAddress(0x3002))
        _ = try #require(try queue.popDescriptorChain(in: first))
        try queue.addUsed(head: 0, length: 0, in: first)
        // The driver's side moves to the other memory (a restored or rebuilt map).
        try second.storeRelease(UInt16(2), at: GuestAddress(0x3002))
        try second.write(UInt16(1), at: GuestAddress(0x4002))
        _ = try #require(try queue.popDescriptorChain(in: second))
        try queue.addUsed(head: 0, length: 7, in: second)
        #expect(try second.read(UInt32.self, at: GuestAddress(0x4010)) == 7)
        #expect(try second.read(UInt16.self, at: GuestAddress(0x4002)) == 2)
        #expect(try first.read(UInt32.self, at: GuestAddress(0x4010)) == 0)
    }
}
