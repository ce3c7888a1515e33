import Foundation
import GuestMemory
import Testing
import VirtioQueue

@Suite("Queue state")
struct QueueStateTests {
    /// A ready queue of 16 entries at aligned rings, with positions moved.
    func readyQueue(memory: GuestMemory) throws -> SplitQueue {
        var queue = try SplitQueue(maxSize: 256)
        queue.size = 16
        queue.descriptorTable = GuestAddress(0x1000)
        queue.availableRing = GuestAddress(0x2000)
        queue.usedRing = GuestAddress(0x3000)
        queue.eventIndex = true
        try queue.activate(in: memory)
        queue.nextAvailable = 65533
        queue.nextUsed = 65530
        return queue
    }

    @Test func roundTripsThroughJSON() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x10000)])
        let queue = try readyQueue(memory: memory)
        let data = try JSONEncoder().encode(queue.state)
        let decoded = try JSONDecoder().decode(SplitQueueState.self, from: data)
        let restored = try SplitQueue(restoring: decoded, memory: memory)
        #expect(restored.state == queue.state)
        #expect(restored.isReady && restored.nextAvailable == 65533 && restored.nextUsed == 65530 && restored.eventIndex)
        var other = try SplitQueue(maxSize: 256)
        try other.restore(decoded)
        #expect(other.state == queue.state)
    }

    @Test func refusesDamagedStates() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x10000)])
        let good = try readyQueue(memory: memory).state
        func field(_ change: (inout SplitQueueState) -> Void) -> String? {
            var state = good
            change(&state)
            do {
                _ = try SplitQueue(restoring: state, memory: memory)
                return nil
            } catch {
                return error.field
            }
        }
        #expect(field { $0.size = 12 } == "size")
        #expect(field { $0.size = 512 } == "size")
        #expect(field { $0.maxSize = 100 } == "maxSize")
        #expect(field { $0.descriptorTable = GuestAddress(0x1008) } == "descriptorTable")
        #expect(field { $0.availableRing = GuestAddress(0x2001) } == "availableRing")
        #expect(field { $0.usedRing = GuestAddress(0x3002) } == "usedRing")
        #expect(field { $0.usedRing = GuestAddress(0xfff0) } == "usedRing")
        #expect(field { $0.nextUsed = 65533 &- 17 } == "nextUsed")
        // Indices wrap: any value is acceptable as long as few enough chains are in flight.
        #expect(field { $0.nextAvailable = 5; $0.nextUsed = 65535 } == nil)
        // A queue that was not ready keeps what the driver wrote.
        #expect(field { $0.ready = false; $0.size = 3 } == nil)
        var queue = try SplitQueue(maxSize: 128)
        #expect(throws: QueueStateError.self) { try queue.restore(good) }
        #expect(queue.state == (try SplitQueue(maxSize: 128)).state)
    }
}
