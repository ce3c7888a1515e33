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
