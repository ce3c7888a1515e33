import Testing
import GuestMemory
@testable import VirtioQueue

/// Every breach of the virtio rules must come out as its own error, leave the queue's
/// state unchanged, and never hang.
@Suite("Hostile drivers")
struct HostileTests {
    func expectError(_ expected: QueueError, _ driver: Driver, sourceLocation: SourceLocation = #_sourceLocation) {
        let before = driver.queue.nextAvailable
        #expect(throws: expected, sourceLocation: sourceLocation) { _ = try driver.pop() }
        #expect(driver.queue.nextAvailable == before, sourceLocation: sourceLocation)
    }

    @Test func headIndexOutOfRange() throws {
        let driver = try Driver()
        try driver.publish(16)
        expectError(.headIndexOutOfRange(head: 16, size: 16), driver)
    }

    @Test func nextIndexOutOfRange() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 8, flags: .next, next: 40)
        try driver.publish(0)
        expectError(.nextIndexOutOfRange(head: 0, next: 40, limit: 16), driver)
    }

    @Test func loopingChain() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 8, flags: .next, next: 1)
        try driver.setDescriptor(1, address: Driver.data, length: 8, flags: .next, next: 0)
        try driver.publish(0)
        expectError(.chainTooLong(head: 0, limit: 16), driver)
    }

    @Test func selfLoop() throws {
        let driver = try Driver(size: 1)
        try driver.setDescriptor(0, address: Driver.data, length: 8, flags: .next, next: 0)
        try driver.publish(0)
        expectError(.chainTooLong(head: 0, limit: 1), driver)
    }

    @Test func descriptorOutsideMemory() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.memorySize - 4, length: 8)
        try driver.publish(0)
        let pop = { _ = try driver.pop() }
        let error = try #require(throws: QueueError.self, performing: pop)
        guard case let .descriptorOutOfMemory(head, address, length, _) = error else {
            Issue.record("unexpected \(error)")
            return
        }
        #expect(head == 0 && address == GuestAddress(Driver.memorySize - 4) && length == 8)
    }

    @Test func descriptorAddressOverflow() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: UInt64.max - 2, length: 8)
        try driver.publish(0)
        expectError(.descriptorAddressOverflow(head: 0, address: GuestAddress(UInt64.max - 2), length: 8), driver)
    }

    @Test func emptyIndirectTable() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: 0x8000, length: 0, flags: .indirect)
        try driver.publish(0)
        expectError(.emptyIndirectTable(head: 0), driver)
    }

    @Test func indirectLengthNotMultipleOf16() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: 0x8000, length: 24, flags: .indirect)
        try driver.publish(0)
        expectError(.indirectTableLengthNotMultiple(head: 0, length: 24), driver)
    }

    @Test func indirectTableTooLarge() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: 0x8000, length: 17 * 16, flags: .indirect)
        try driver.publish(0)
        expectError(.indirectTableTooLarge(head: 0, entries: 17, limit: 16), driver)
    }

    @Test func indirectTableOutsideMemoryOrOverflowing() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.memorySize - 16, length: 32, flags: .indirect)
        try driver.setDescriptor(1, address: UInt64.max - 15, length: 32, flags: .indirect)
        try driver.publish(0)
        expectError(.indirectTableOutOfMemory(head: 0, address: GuestAddress(Driver.memorySize - 16), length: 32), driver)
        driver.queue.nextAvailable = 0
        try driver.memory.write(UInt16(1), at: GuestAddress(Driver.avail + 4))
        expectError(.indirectTableOutOfMemory(head: 1, address: GuestAddress(UInt64.max - 15), length: 32), driver)
    }

    @Test func nestedIndirect() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 8, flags: .next, next: 1, table: 0x8000)
        try driver.setDescriptor(1, address: 0x9000, length: 16, flags: .indirect, table: 0x8000)
        try driver.setDescriptor(0, address: 0x8000, length: 32, flags: .indirect)
        try driver.publish(0)
        expectError(.nestedIndirect(head: 0), driver)
    }

    @Test func indirectWithNextFlag() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: 0x8000, length: 16, flags: [.indirect, .next], next: 1)
        try driver.publish(0)
        expectError(.indirectWithNext(head: 0), driver)
    }

    @Test func badLinksInsideIndirectTable() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 8, flags: .next, next: 2, table: 0x8000)
        try driver.setDescriptor(1, address: Driver.data, length: 8, flags: .next, next: 0, table: 0x8000)
        try driver.setDescriptor(0, address: 0x8000, length: 32, flags: .indirect)
        try driver.publish(0)
        expectError(.nextIndexOutOfRange(head: 0, next: 2, limit: 2), driver)
        try driver.setDescriptor(0, address: Driver.data, length: 8, flags: .next, next: 1, table: 0x8000)
        expectError(.chainTooLong(head: 0, limit: 2), driver)
    }

    @Test func readableAfterWritable() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 8, flags: [.write, .next], next: 1)
        try driver.setDescriptor(1, address: Driver.data, length: 8)
        try driver.publish(0)
        expectError(.readableAfterWritable(head: 0, position: 1), driver)
    }

    @Test func readableAfterWritableInsideIndirectTable() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 8, flags: [.write, .next], next: 1, table: 0x8000)
        try driver.setDescriptor(1, address: Driver.data, length: 8, table: 0x8000)
        try driver.setDescriptor(4, address: 0x8000, length: 32, flags: .indirect)
        try driver.publish(4)
        expectError(.readableAfterWritable(head: 4, position: 1), driver)
    }

    @Test func availableIndexJump() throws {
        let driver = try Driver()
        try driver.setAvailIndex(17)
        expectError(.availableIndexJump(lastSeen: 0, published: 17, size: 16), driver)
        try driver.setAvailIndex(0xFFFF)
        expectError(.availableIndexJump(lastSeen: 0, published: 0xFFFF, size: 16), driver)
    }

    @Test func availableIndexJumpAcrossWrap() throws {
        let driver = try Driver(startIndex: 65530)
        try driver.setAvailIndex(10)  // 16 ahead: allowed
        #expect(try driver.queue.pendingCount(in: driver.memory) == 16)
        try driver.setAvailIndex(11)  // 17 ahead
        expectError(.availableIndexJump(lastSeen: 65530, published: 11, size: 16), driver)
    }

    @Test func addUsedRejectsBadHead() throws {
        let driver = try Driver()
        #expect(throws: QueueError.usedHeadOutOfRange(head: 16, size: 16)) {
            try driver.queue.addUsed(head: 16, length: 0, in: driver.memory)
        }
        #expect(driver.queue.nextUsed == 0)
    }

    @Test func chainInitRefusesReadableAfterWritable() {
        let readable = Descriptor(address: GuestAddress(0), length: 1, isWritable: false)
        let writable = Descriptor(address: GuestAddress(0), length: 1, isWritable: true)
        #expect(throws: QueueError.readableAfterWritable(head: 9, position: 2)) {
            _ = try DescriptorChain(head: 9, descriptors: [readable, writable, readable])
        }
        #expect((try? DescriptorChain(head: 9, descriptors: [writable, writable]))?.firstWritable == 0)
    }

    @Test func errorsExplainThemselves() {
        let errors: [QueueError] = [
            .invalidMaxSize(3), .invalidSize(size: 3, maxSize: 8), .notReady,
            .misalignedRing(.usedRing, address: GuestAddress(2), alignment: 4),
            .availableIndexJump(lastSeen: 1, published: 40, size: 16),
            .chainTooLong(head: 1, limit: 16), .nestedIndirect(head: 2),
            .readOverrun(requested: 4, remaining: 1), .memory(.noRegions),
        ]
        for error in errors { #expect(error.description.count > 20) }
        #expect(QueueError.misalignedRing(.usedRing, address: GuestAddress(2), alignment: 4).description.contains("used ring"))
    }
}
