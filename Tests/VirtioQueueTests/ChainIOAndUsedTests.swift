import Testing
import GuestMemory
@testable import VirtioQueue

/// A chain of readable buffers of 3, 0 and 5 bytes, then writable buffers of 2 and 6 bytes.
func makeMixedChain(_ driver: Driver) throws -> DescriptorChain {
    try driver.memory.write(bytes: [1, 2, 3], at: GuestAddress(Driver.data))
    try driver.memory.write(bytes: [4, 5, 6, 7, 8], at: GuestAddress(Driver.data + 0x100))
    try driver.setDescriptor(0, address: Driver.data, length: 3, flags: .next, next: 1)
    try driver.setDescriptor(1, address: Driver.data + 0x80, length: 0, flags: .next, next: 2)
    try driver.setDescriptor(2, address: Driver.data + 0x100, length: 5, flags: .next, next: 3)
    try driver.setDescriptor(3, address: Driver.data + 0x200, length: 2, flags: [.write, .next], next: 4)
    try driver.setDescriptor(4, address: Driver.data + 0x300, length: 6, flags: .write)
    try driver.publish(0)
    return try #require(try driver.pop())
}

@Suite("Chain reader and writer")
struct ChainIOTests {
    @Test func readerCrossesDescriptors() throws {
        let driver = try Driver()
        let chain = try makeMixedChain(driver)
        var reader = ChainReader(chain, memory: driver.memory)
        #expect(reader.remaining == 8)
        #expect(try reader.read(UInt16.self) == 0x0201)
        #expect(try reader.read(UInt32.self) == 0x0605_0403)
        #expect(reader.bytesRead == 6)
        #expect(try reader.readBytes(count: 2) == [7, 8])
        #expect(reader.remaining == 0)
        #expect(throws: QueueError.readOverrun(requested: 1, remaining: 0)) { _ = try reader.read(UInt8.self) }
    }

    @Test func readerOverrunConsumesNothing() throws {
        let driver = try Driver()
        let chain = try makeMixedChain(driver)
        var reader = ChainReader(chain, memory: driver.memory)
        try reader.skip(4)
        #expect(throws: QueueError.readOverrun(requested: 8, remaining: 4)) { _ = try reader.read(UInt64.self) }
        #expect(reader.remaining == 4)
        #expect(try reader.readBytes(count: 4) == [5, 6, 7, 8])
        #expect(throws: QueueError.readOverrun(requested: -1, remaining: 0)) { _ = try reader.readBytes(count: -1) }
    }

    @Test func writerCrossesDescriptors() throws {
        let driver = try Driver()
        let chain = try makeMixedChain(driver)
        var writer = ChainWriter(chain, memory: driver.memory)
        #expect(writer.remaining == 8)
        try writer.write(UInt32(0xDDCC_BBAA))
        try writer.write(bytes: [1, 2, 3])
        #expect(writer.bytesWritten == 7 && writer.remaining == 1)
        #expect(try driver.memory.readBytes(count: 2, at: GuestAddress(Driver.data + 0x200)) == [0xAA, 0xBB])
        #expect(try driver.memory.readBytes(count: 5, at: GuestAddress(Driver.data + 0x300)) == [0xCC, 0xDD, 1, 2, 3])
    }

    @Test func writerOverrunWritesNothing() throws {
        let driver = try Driver()
        let chain = try makeMixedChain(driver)
        var writer = ChainWriter(chain, memory: driver.memory)
        #expect(throws: QueueError.writeOverrun(requested: 9, remaining: 8)) {
            try writer.write(bytes: [UInt8](repeating: 0xEE, count: 9))
        }
        #expect(writer.bytesWritten == 0)
        #expect(try driver.memory.read(UInt16.self, at: GuestAddress(Driver.data + 0x200)) == 0)
    }

    @Test func chainWithoutWritableBuffers() throws {
        let driver = try Driver()
        try driver.setDescriptor(0, address: Driver.data, length: 4)
        try driver.publish(0)
        let chain = try #require(try driver.pop())
        var writer = ChainWriter(chain, memory: driver.memory)
        #expect(throws: QueueError.writeOverrun(requested: 1, remaining: 0)) { try writer.write(UInt8(1)) }
        try writer.write(bytes: [])
    }
}

@Suite("Used ring and notifications")
struct UsedRingTests {
    @Test func addUsedWritesElementAndIndex() throws {
        let driver = try Driver()
        try driver.queue.addUsed(head: 5, length: 100, in: driver.memory)
        try driver.queue.addUsed(head: 2, length: 7, in: driver.memory)
        #expect(try driver.usedIndex == 2)
        #expect(try driver.usedElement(slot: 0) == (5, 100))
        #expect(try driver.usedElement(slot: 1) == (2, 7))
    }

    @Test func usedIndexWrapsAround() throws {
        let driver = try Driver(startIndex: 65535)
        try driver.queue.addUsed(head: 1, length: 1, in: driver.memory)
        #expect(try driver.usedIndex == 0)
        #expect(try driver.usedElement(slot: 15) == (1, 1))
        try driver.queue.addUsed(head: 3, length: 9, in: driver.memory)
        #expect(try driver.usedIndex == 1)
        #expect(try driver.usedElement(slot: 0) == (3, 9))
    }

    @Test func vringNeedEventArithmetic() {
        // The driver wants an interrupt once the used index moves past `event`, that is
        // when `event` lies in [old, new).
        #expect(SplitQueue.needsEvent(event: 0, new: 1, old: 0))
        #expect(!SplitQueue.needsEvent(event: 1, new: 1, old: 0))
        #expect(SplitQueue.needsEvent(event: 2, new: 6, old: 2))
        #expect(SplitQueue.needsEvent(event: 5, new: 6, old: 2))
        #expect(!SplitQueue.needsEvent(event: 6, new: 6, old: 2))
        #expect(!SplitQueue.needsEvent(event: 1, new: 6, old: 2))
        // Across the 16-bit wrap.
        #expect(SplitQueue.needsEvent(event: 0xFFFE, new: 2, old: 0xFFFE))
        #expect(SplitQueue.needsEvent(event: 1, new: 2, old: 0xFFFE))
        #expect(!SplitQueue.needsEvent(event: 2, new: 2, old: 0xFFFE))
        #expect(!SplitQueue.needsEvent(event: 0xFFFD, new: 2, old: 0xFFFE))
    }

    @Test func noInterruptFlagWithoutEventIndex() throws {
        let driver = try Driver()
        try driver.queue.addUsed(head: 0, length: 0, in: driver.memory)
        #expect(try driver.queue.needsNotification(in: driver.memory))
        try driver.setAvailFlags(SplitQueue.availableNoInterrupt)
        #expect(!(try driver.queue.needsNotification(in: driver.memory)))
    }

    @Test func eventIndexSuppression() throws {
        let driver = try Driver(eventIndex: true)
        try driver.setUsedEvent(3)
        try driver.queue.addUsed(head: 0, length: 0, in: driver.memory)
        // First decision always notifies.
        #expect(try driver.queue.needsNotification(in: driver.memory))
        try driver.queue.addUsed(head: 0, length: 0, in: driver.memory)  // used idx 2, event 3 not passed
        #expect(!(try driver.queue.needsNotification(in: driver.memory)))
        try driver.queue.addUsed(head: 0, length: 0, in: driver.memory)
        try driver.queue.addUsed(head: 0, length: 0, in: driver.memory)  // used idx 4 passes event 3
        #expect(try driver.queue.needsNotification(in: driver.memory))
        #expect(driver.queue.signalledUsed == 4)
        try driver.setAvailFlags(SplitQueue.availableNoInterrupt)  // ignored with event index
        try driver.setUsedEvent(4)
        try driver.queue.addUsed(head: 0, length: 0, in: driver.memory)
        #expect(try driver.queue.needsNotification(in: driver.memory))
    }

    @Test func eventIndexSuppressionAcrossWrap() throws {
        let driver = try Driver(eventIndex: true, startIndex: 65534)
        try driver.setUsedEvent(65534)
        try driver.queue.addUsed(head: 0, length: 0, in: driver.memory)
        #expect(try driver.queue.needsNotification(in: driver.memory))  // first, signalled = 65535
        try driver.setUsedEvent(0)
        try driver.queue.addUsed(head: 0, length: 0, in: driver.memory)  // new 0: event 0 not yet passed
        #expect(!(try driver.queue.needsNotification(in: driver.memory)))
        try driver.queue.addUsed(head: 0, length: 0, in: driver.memory)  // new 1: passes event 0
        #expect(try driver.queue.needsNotification(in: driver.memory))
    }

    @Test func enableAndDisableWithoutEventIndex() throws {
        let driver = try Driver()
        try driver.queue.disableNotification(in: driver.memory)
        #expect(try driver.usedFlags == SplitQueue.usedNoNotify)
        #expect(!(try driver.queue.enableNotification(in: driver.memory)))
        #expect(try driver.usedFlags == 0)
        try driver.setDescriptor(0, address: Driver.data, length: 1)
        try driver.publish(0)
        #expect(try driver.queue.enableNotification(in: driver.memory))
    }

    @Test func enableWithEventIndexPublishesAvailEvent() throws {
        let driver = try Driver(eventIndex: true, startIndex: 9)
        try driver.queue.disableNotification(in: driver.memory)
        #expect(try driver.usedFlags == 0)
        #expect(!(try driver.queue.enableNotification(in: driver.memory)))
        #expect(try driver.availEvent == 9)
        try driver.setDescriptor(0, address: Driver.data, length: 1)
        try driver.publish(0)
        #expect(try driver.queue.enableNotification(in: driver.memory))
        _ = try driver.pop()
        #expect(!(try driver.queue.enableNotification(in: driver.memory)))
        #expect(try driver.availEvent == 10)
    }
}
