import Testing
import GuestMemory
@testable import VirtioQueue

/// The available index read once per batch of chains, and used entries staged and
/// published with one used-index store.
@Suite("Batched available and used indices")
struct BatchingTests {
    /// Three one-buffer chains (heads 0, 1, 2) made available.
    func publishThree(_ driver: Driver) throws {
        for head: UInt16 in 0..<3 { try driver.setDescriptor(head, address: Driver.data + 0x100 * UInt64(head), length: 8) }
        try driver.publish(0, 1, 2)
    }

    @Test func aBatchPopsFromTheCachedAvailableIndex() throws {
        let driver = try Driver()
        try publishThree(driver)
        #expect(try driver.pop()?.head == 0)
        // An index the driver could never publish (more than the queue size ahead): read
        // per pop it would break the queue now, but the two chains known are still served.
        try driver.setAvailIndex(driver.availIndex &+ 100)
        #expect(try driver.pop()?.head == 1)
        #expect(try driver.pop()?.head == 2)
        // The known chains ran out: the index is read again, and the jump is caught.
        #expect(throws: QueueError.availableIndexJump(lastSeen: 3, published: 103, size: 16)) { _ = try driver.pop() }
        #expect(driver.queue.nextAvailable == 3)
    }

    @Test func chainsPublishedDuringABatchAreSeenWhenTheKnownOnesRunOut() throws {
        let driver = try Driver()
        try publishThree(driver)
        #expect(try driver.pop()?.head == 0)
        try driver.setDescriptor(3, address: Driver.data + 0x400, length: 8)
        try driver.publish(3)
        #expect(try driver.pop()?.head == 1)
        #expect(try driver.pop()?.head == 2)
        #expect(try driver.pop()?.head == 3)
        #expect(try driver.pop() == nil)
    }

    @Test func enablingNotificationsReadsTheIndexAfresh() throws {
        let driver = try Driver(eventIndex: true)
        try publishThree(driver)
        #expect(try driver.pop()?.head == 0)
        try driver.setDescriptor(3, address: Driver.data + 0x400, length: 8)
        try driver.publish(3)
        #expect(try driver.pop()?.head == 1)
        #expect(try driver.pop()?.head == 2)
        // The re-arm must see chain 3 (published after the cached read), not only the cache.
        #expect(try driver.queue.enableNotification(in: driver.memory))
        #expect(try driver.availEvent == 3)
        #expect(try driver.pop()?.head == 3)
        #expect(!(try driver.queue.enableNotification(in: driver.memory)))
    }

    @Test func anUndonePopIsServedAgainFromTheCache() throws {
        let driver = try Driver()
        try publishThree(driver)
        #expect(try driver.pop()?.head == 0)
        driver.queue.undoPop()
        #expect(try driver.pop()?.head == 0)
        #expect(try driver.pop()?.head == 1)
    }

    @Test func aResetForgetsTheCachedIndex() throws {
        let driver = try Driver()
        try publishThree(driver)
        #expect(try driver.pop()?.head == 0)
        // The driver resets the queue and sets it up again with an empty ring.
        driver.queue.reset()
        driver.queue.size = 16
        driver.queue.descriptorTable = GuestAddress(Driver.table)
        driver.queue.availableRing = GuestAddress(Driver.avail)
        driver.queue.usedRing = GuestAddress(Driver.used)
        try driver.setAvailIndex(0)
        try driver.queue.activate(in: driver.memory)
        #expect(try driver.pop() == nil)
    }

    @Test func stagedEntriesAreInvisibleUntilPublishedOnce() throws {
        let driver = try Driver()
        try driver.queue.stageUsed(head: 4, length: 1536, in: driver.memory)
        try driver.queue.stageUsed(head: 9, length: 1536, in: driver.memory)
        try driver.queue.stageUsed(head: 2, length: 40, in: driver.memory)
        #expect(try driver.usedIndex == 0)
        #expect(driver.queue.nextUsed == 3 && driver.queue.stagedUsed == 3)
        #expect(try driver.usedElement(slot: 0) == (4, 1536))
        #expect(try driver.usedElement(slot: 2) == (2, 40))
        try driver.queue.publishUsed(in: driver.memory)
        #expect(try driver.usedIndex == 3)
        #expect(driver.queue.stagedUsed == 0)
        // Nothing staged: publishing again stores nothing.
        try driver.memory.write(UInt16(77), at: GuestAddress(Driver.used + 2))
        try driver.queue.publishUsed(in: driver.memory)
        #expect(try driver.usedIndex == 77)
    }

    @Test func addUsedPublishesEntriesStagedBeforeIt() throws {
        let driver = try Driver(startIndex: 65535)
        try driver.queue.stageUsed(head: 1, length: 10, in: driver.memory)
        try driver.queue.addUsed(head: 3, length: 30, in: driver.memory)
        #expect(try driver.usedIndex == 1)
        #expect(try driver.usedElement(slot: 15) == (1, 10))
        #expect(try driver.usedElement(slot: 0) == (3, 30))
    }

    @Test func theNotificationDecisionPublishesStagedEntriesFirst() throws {
        let driver = try Driver(eventIndex: true)
        try driver.setUsedEvent(0)
        try driver.queue.stageUsed(head: 0, length: 0, in: driver.memory)
        try driver.queue.stageUsed(head: 1, length: 0, in: driver.memory)
        #expect(try driver.queue.needsNotification(in: driver.memory))
        #expect(try driver.usedIndex == 2)
        #expect(driver.queue.signalledUsed == 2)
        // Two more entries staged, used_event 2 lies in [2, 4): one interrupt for the pair.
        try driver.setUsedEvent(2)
        try driver.queue.stageUsed(head: 2, length: 0, in: driver.memory)
        try driver.queue.stageUsed(head: 3, length: 0, in: driver.memory)
        #expect(try driver.queue.needsNotification(in: driver.memory))
        #expect(try driver.usedIndex == 4)
        // used_event 10 not passed by 4 -> 5: no interrupt.
        try driver.setUsedEvent(10)
        try driver.queue.stageUsed(head: 4, length: 0, in: driver.memory)
        #expect(!(try driver.queue.needsNotification(in: driver.memory)))
        #expect(try driver.usedIndex == 5)
    }

    @Test func aBadStagedHeadChangesNothing() throws {
        let driver = try Driver()
        try driver.queue.stageUsed(head: 1, length: 10, in: driver.memory)
        #expect(throws: QueueError.usedHeadOutOfRange(head: 16, size: 16)) {
            try driver.queue.stageUsed(head: 16, length: 10, in: driver.memory)
        }
        #expect(driver.queue.nextUsed == 1 && driver.queue.stagedUsed == 1)
        try driver.queue.publishUsed(in: driver.memory)
        #expect(try driver.usedIndex == 1)
    }

    @Test func aHostileChainOnOneQueueLeavesAnotherQueueOnTheSameMemoryWorking() throws {
        // Two queues in one guest memory, as two devices have: the driver of the first
        // posts a looping chain after a good one.
        let hostile = try Driver()
        try hostile.setDescriptor(0, address: Driver.data, length: 8)
        try hostile.setDescriptor(1, address: Driver.data, length: 8, flags: .next, next: 2)
        try hostile.setDescriptor(2, address: Driver.data, length: 8, flags: .next, next: 1)
        try hostile.publish(0, 1)
        var other = try SplitQueue(maxSize: 16)
        other.size = 16
        other.descriptorTable = GuestAddress(0x20000)
        other.availableRing = GuestAddress(0x21000)
        other.usedRing = GuestAddress(0x22000)
        try other.activate(in: hostile.memory)
        let memory = hostile.memory
        for head: UInt64 in 0..<2 {
            try memory.write(Driver.data + 0x1000 * head, at: GuestAddress(0x20000 + 16 * head))
            try memory.write(UInt32(64), at: GuestAddress(0x20000 + 16 * head + 8))
            try memory.write(UInt16(head), at: GuestAddress(0x21000 + 4 + 2 * head))
        }
        try memory.storeRelease(UInt16(2), at: GuestAddress(0x21002))

        #expect(try hostile.pop()?.head == 0)
        #expect(throws: QueueError.chainTooLong(head: 1, limit: 16)) { _ = try hostile.pop() }
        #expect(hostile.queue.nextAvailable == 1)
        // The other queue pops, stages and publishes as if nothing happened.
        let first = try #require(try other.popDescriptorChain(in: memory))
        let second = try #require(try other.popDescriptorChain(in: memory))
        try other.stageUsed(head: first.head, length: 64, in: memory)
        try other.stageUsed(head: second.head, length: 64, in: memory)
        try other.publishUsed(in: memory)
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x22002)) == 2)
        #expect(try other.popDescriptorChain(in: memory) == nil)
        // The broken queue keeps failing the same way until the driver resets it.
        #expect(throws: QueueError.chainTooLong(head: 1, limit: 16)) { _ = try hostile.pop() }
    }
}
