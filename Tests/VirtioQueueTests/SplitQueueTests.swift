import Testing
import GuestMemory
@testable import VirtioQueue

@Suite("Configuration")
struct ConfigurationTests {
    @Test func rejectsBadMaxSize() {
        for bad: UInt16 in [0, 3, 100, 65535] {
            #expect(throws: QueueError.invalidMaxSize(bad)) { _ = try SplitQueue(maxSize: bad) }
        }
        #expect((try? SplitQueue(maxSize: 32768)) != nil)
        #expect((try? SplitQueue(maxSize: 1)) != nil)
    }

    @Test func rejectsBadSize() throws {
        let driver = try Driver()
        for bad: UInt16 in [0, 12, 512] {
            driver.queue.size = bad
            #expect(throws: QueueError.invalidSize(size: bad, maxSize: 256)) { try driver.queue.activate(in: driver.memory) }
            #expect(!driver.queue.isReady)
        }
    }

    @Test func rejectsMisalignedRings() throws {
        let driver = try Driver()
        driver.queue.descriptorTable = GuestAddress(0x1008)
        #expect(throws: QueueError.misalignedRing(.descriptorTable, address: GuestAddress(0x1008), alignment: 16)) {
            try driver.queue.activate(in: driver.memory)
        }
        driver.queue.descriptorTable = GuestAddress(Driver.table)
        driver.queue.availableRing = GuestAddress(0x2001)
        #expect(throws: QueueError.misalignedRing(.availableRing, address: GuestAddress(0x2001), alignment: 2)) {
            try driver.queue.activate(in: driver.memory)
        }
        driver.queue.availableRing = GuestAddress(Driver.avail)
        driver.queue.usedRing = GuestAddress(0x3002)
        #expect(throws: QueueError.misalignedRing(.usedRing, address: GuestAddress(0x3002), alignment: 4)) {
            try driver.queue.activate(in: driver.memory)
        }
    }

    @Test func rejectsRingsOutsideMemory() throws {
        let driver = try Driver()
        driver.queue.usedRing = GuestAddress(Driver.memorySize - 8)
        #expect(throws: QueueError.ringOutOfMemory(.usedRing, address: GuestAddress(Driver.memorySize - 8), length: 134)) {
            try driver.queue.activate(in: driver.memory)
        }
        driver.queue.usedRing = GuestAddress(Driver.used)
        driver.queue.descriptorTable = GuestAddress(0xFFFF_FFFF_FFFF_FFF0)
        #expect(throws: QueueError.ringOutOfMemory(.descriptorTable, address: GuestAddress(0xFFFF_FFFF_FFFF_FFF0), length: 256)) {
            try driver.queue.activate(in: driver.memory)
        }
    }

    @Test func changingConfigurationDropsReadiness() throws {
        let driver = try Driver()
        #expect(driver.queue.isReady)
        driver.queue.availableRing = GuestAddress(0x2100)
        #expect(!driver.queue.isReady)
        #expect(throws: QueueError.notReady) { _ = try driver.pop() }
        #expect(throws: QueueError.notReady) { try driver.queue.addUsed(head: 0, length: 0, in: driver.memory) }
        try driver.queue.activate(in: driver.memory)
        #expect(try driver.pop() == nil)
    }

    @Test func resetRestoresDefaults() throws {
        let driver = try Driver(size: 8, eventIndex: true, startIndex: 5)
        driver.queue.reset()
        #expect(!driver.queue.isReady)
        #expect(driver.queue.size == 256)
        #expect(driver.queue.descriptorTable == .zero)
        #expect(driver.queue.nextAvailable == 0 && driver.queue.nextUsed == 0)
        #expect(!driver.queue.eventIndex)
        #expect(driver.queue.signalledUsed == nil)
    }

    @Test func ringLengths() {
        #expect(SplitQueue.descriptorTableLength(size: 256) == 4096)
        #expect(SplitQueue.availableRingLength(size: 256) == 518)
        #expect(SplitQueue.usedRingLength(size: 256) == 2054)
    }
}

@Suite("Popping chains")
struct PopTests {
    @Test func emptyQueueReturnsNil() throws {
        let driver = try Driver()
        #expect(try driver.pop() == nil)
        #expect(driver.queue.nextAvailable == 0)
    }

    @Test func singleDescriptor() throws {
        let driver = try Driver()
        try driver.setDescriptor(3, address: Driver.data, length: 64)
        try driver.publish(3)
        let chain = try #require(try driver.pop())
        #expect(chain.head == 3)
        #expect(chain.descriptors == [Descriptor(address: GuestAddress(Driver.data), length: 64, isWritable: false)])
        #expect(!chain.isIndirect)
        #expect(chain.readableLength == 64 && chain.writableLength == 0)
        #expect(try driver.pop() == nil)
        #expect(driver.queue.nextAvailable == 1)
    }

    @Test func multiDescriptorChainSplitsReadableAndWritable() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 16, flags: .next, next: 5)
        try driver.setDescriptor(5, address: Driver.data + 0x100, length: 512, flags: .next, next: 2)
        try driver.setDescriptor(2, address: Driver.data + 0x400, length: 1, flags: .write)
        try driver.publish(0)
        let chain = try #require(try driver.pop())
        #expect(chain.descriptors.count == 3)
        #expect(chain.readable.map(\.length) == [16, 512])
        #expect(chain.writable.map(\.length) == [1])
        #expect(chain.firstWritable == 2)
        #expect(chain.readableLength == 528 && chain.writableLength == 1)
    }

    @Test func severalChainsComeOutInOrder() throws {
        let driver = try Driver()
        for index: UInt16 in 0..<4 {
            try driver.setDescriptor(index, address: Driver.data + UInt64(index) * 0x100, length: UInt32(index + 1))
        }
        try driver.publish(2, 0, 3)
        #expect(try driver.queue.pendingCount(in: driver.memory) == 3)
        #expect(try driver.pop()?.head == 2)
        #expect(try driver.pop()?.head == 0)
        #expect(try driver.pop()?.head == 3)
        #expect(try driver.pop() == nil)
    }

    @Test func indirectChain() throws {
        let driver = try Driver()
        let table: UInt64 = 0x8000
        try driver.setDescriptor(0, address: Driver.data, length: 8, flags: .next, next: 2, table: table)
        try driver.setDescriptor(2, address: Driver.data + 0x10, length: 8, flags: .next, next: 1, table: table)
        try driver.setDescriptor(1, address: Driver.data + 0x20, length: 32, flags: .write, table: table)
        // The WRITE flag on the indirect descriptor itself is ignored.
        try driver.setDescriptor(7, address: table, length: 48, flags: [.indirect, .write])
        try driver.publish(7)
        let chain = try #require(try driver.pop())
        #expect(chain.head == 7 && chain.isIndirect)
        #expect(chain.descriptors.map(\.address.rawValue) == [Driver.data, Driver.data + 0x10, Driver.data + 0x20])
        #expect(chain.readable.count == 2 && chain.writable.count == 1)
    }

    /// An indirect table in one region is read in place; one across two regions is copied
    /// out first. Both give the same chain.
    @Test func indirectTableAcrossRegions() throws {
        for (split, table) in [(UInt64?.none, UInt64(0x8000)), (UInt64(0x9000), UInt64(0x9000 - 16))] {
            let driver = try Driver(splitAt: split)
            try driver.setDescriptor(0, address: Driver.data, length: 12, flags: .next, next: 1, table: table)
            try driver.setDescriptor(1, address: Driver.data + 0x100, length: 1514, table: table)
            try driver.setDescriptor(3, address: table, length: 32, flags: .indirect)
            try driver.publish(3)
            let chain = try #require(try driver.pop())
            #expect(chain.head == 3 && chain.isIndirect)
            #expect(chain.descriptors.map(\.address.rawValue) == [Driver.data, Driver.data + 0x100])
            #expect(chain.descriptors.map(\.length) == [12, 1514])
            #expect(chain.readableLength == 1526)
        }
    }

    @Test func directDescriptorsBeforeIndirectTable() throws {
        let driver = try Driver()
        let table: UInt64 = 0x8000
        try driver.setDescriptor(0, address: Driver.data + 0x40, length: 4, flags: .write, table: table)
        try driver.setDescriptor(1, address: Driver.data, length: 8, flags: .next, next: 2)
        try driver.setDescriptor(2, address: table, length: 16, flags: .indirect)
        try driver.publish(1)
        let chain = try #require(try driver.pop())
        #expect(chain.descriptors.count == 2 && chain.firstWritable == 1)
    }

    @Test func availableIndexWrapsAround() throws {
        let driver = try Driver(startIndex: 65534)
        for index: UInt16 in 0..<3 { try driver.setDescriptor(index, address: Driver.data, length: 1) }
        try driver.publish(0, 1, 2)
        #expect(try driver.queue.pendingCount(in: driver.memory) == 3)
        #expect(try driver.pop()?.head == 0)
        #expect(try driver.pop()?.head == 1)
        #expect(try driver.pop()?.head == 2)
        #expect(driver.queue.nextAvailable == 1)
        #expect(try driver.pop() == nil)
    }

    @Test func zeroLengthDirectDescriptorIsAllowed() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.memorySize, length: 0)
        try driver.publish(0)
        #expect(try driver.pop()?.descriptors.first?.length == 0)
    }
}
