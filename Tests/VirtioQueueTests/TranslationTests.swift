import GuestMemory
import Testing
import VirtioQueue

/// A translator with fixed windows: IOVA `iova ..< iova + size` maps to `gpa`.
struct WindowTranslator: AddressTranslator {
    var windows: [(iova: UInt64, gpa: UInt64, size: UInt64)]

    func translate(_ address: UInt64, length: UInt64) -> UInt64? {
        for window in windows where address >= window.iova && address - window.iova + length <= window.size {
            return window.gpa + (address - window.iova)
        }
        return nil
    }
}

@Suite struct QueueTranslationTests {
    /// IOVAs 0x100000... (rings) and 0x200000... (buffers) over guest physical 0x1000... and 0x10000...
    static let translator = WindowTranslator(windows: [(0x10_0000, 0x1000, 0x3000), (0x20_0000, 0x1_0000, 0x1_0000)])

    /// A queue whose rings the driver placed at IOVAs 0x100000, 0x101000, 0x102000.
    func makeQueue(_ memory: GuestMemory, translator: (any AddressTranslator)? = Self.translator) throws -> SplitQueue {
        var queue = try SplitQueue(maxSize: 16)
        queue.translator = translator
        queue.descriptorTable = GuestAddress(0x10_0000)
        queue.availableRing = GuestAddress(0x10_1000)
        queue.usedRing = GuestAddress(0x10_2000)
        return queue
    }

    func memory() throws -> GuestMemory { try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x4_0000)]) }

    func descriptor(_ memory: GuestMemory, table: UInt64 = 0x1000, _ index: UInt64, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
        let entry = table + index * 16
        try memory.write(address, at: GuestAddress(entry))
        try memory.write(length, at: GuestAddress(entry + 8))
        try memory.write(flags, at: GuestAddress(entry + 12))
        try memory.write(next, at: GuestAddress(entry + 14))
    }

    func publish(_ memory: GuestMemory, head: UInt16, index: UInt16 = 0) throws {
        try memory.write(head, at: GuestAddress(0x2000 + 4 + 2 * UInt64(index)))
        try memory.write(index + 1, at: GuestAddress(0x2002))
    }

    @Test("rings are found through the translator at activation, buffers at pop, and the used entry lands at the translated ring")
    func ringsAndBuffersTranslated() throws {
        let memory = try memory()
        var queue = try makeQueue(memory)
        try queue.activate(in: memory)
        try descriptor(memory, 0, address: 0x20_0100, length: 16, flags: 1, next: 1)
        try descriptor(memory, 1, address: 0x20_0800, length: 32, flags: 2)
        try publish(memory, head: 0)
        let chain = try #require(try queue.popDescriptorChain(in: memory))
        #expect(chain.descriptors.map(\.address) == [GuestAddress(0x1_0100), GuestAddress(0x1_0800)])
        #expect(chain.descriptors.map(\.length) == [16, 32])
        try queue.addUsed(head: 0, length: 32, in: memory)
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x3002)) == 1)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x3008)) == 32)
        // The driver-visible addresses stay the IOVAs it wrote.
        #expect(queue.descriptorTable == GuestAddress(0x10_0000) && queue.state.usedRing == GuestAddress(0x10_2000))
    }

    @Test("a translator set or removed after activation takes effect only through a new activation")
    func translatorChangeNeedsActivation() throws {
        let memory = try memory()
        // Untranslated rings at 0x1000..., buffers at guest physical addresses.
        var queue = try makeQueue(memory, translator: nil)
        queue.descriptorTable = GuestAddress(0x1000)
        queue.availableRing = GuestAddress(0x2000)
        queue.usedRing = GuestAddress(0x3000)
        try queue.activate(in: memory)
        try descriptor(memory, 0, address: 0x20_0100, length: 16, flags: 2)
        try publish(memory, head: 0)
        // 0x200100 is past guest memory: refused untranslated.
        #expect(throws: QueueError.self) { _ = try queue.popDescriptorChain(in: memory) }
        // A translator that maps the rings' addresses to themselves and 0x200000... to 0x10000...
        queue.translator = WindowTranslator(windows: [(0x1000, 0x1000, 0x3000), (0x20_0000, 0x1_0000, 0x1_0000)])
        #expect(throws: QueueError.notReady) { _ = try queue.popDescriptorChain(in: memory) }
        try queue.activate(in: memory)
        #expect(try queue.popDescriptorChain(in: memory)?.descriptors.map(\.address) == [GuestAddress(0x1_0100)])
        // Removed again: the next chain is read untranslated.
        queue.translator = nil
        try queue.activate(in: memory)
        try descriptor(memory, 1, address: 0x8000, length: 4, flags: 2)
        try publish(memory, head: 1, index: 1)
        #expect(try queue.popDescriptorChain(in: memory)?.descriptors.map(\.address) == [GuestAddress(0x8000)])
    }

    @Test("a ring the translator does not map entirely is refused at activation, naming the part")
    func unmappedRing() throws {
        let memory = try memory()
        var queue = try makeQueue(memory)
        queue.usedRing = GuestAddress(0x10_2ff0)  // the used ring (6 + 8 * 16 bytes) runs past the window
        #expect(throws: QueueError.ringNotMapped(.usedRing, address: 0x10_2ff0, length: 134)) { try queue.activate(in: memory) }
        #expect(!queue.isReady)
        queue.usedRing = GuestAddress(0x50_0000)
        #expect(throws: QueueError.ringNotMapped(.usedRing, address: 0x50_0000, length: 134)) { try queue.activate(in: memory) }
    }

    @Test("a buffer at an unmapped IOVA, or straddling the end of a window, breaks the pop and leaves the queue where it was")
    func unmappedBuffer() throws {
        let memory = try memory()
        var queue = try makeQueue(memory)
        try queue.activate(in: memory)
        // A guest physical address that is valid memory but not mapped: refused all the same.
        try descriptor(memory, 0, address: 0x1_0000, length: 16, flags: 0)
        try publish(memory, head: 0)
        #expect(throws: QueueError.descriptorNotMapped(head: 0, address: 0x1_0000, length: 16)) { try queue.popDescriptorChain(in: memory) }
        #expect(queue.nextAvailable == 0)
        try descriptor(memory, 0, address: 0x20_fff0, length: 32, flags: 2)
        #expect(throws: QueueError.descriptorNotMapped(head: 0, address: 0x20_fff0, length: 32)) { try queue.popDescriptorChain(in: memory) }
        // An empty buffer still needs its address mapped.
        try descriptor(memory, 0, address: 0x90_0000, length: 0, flags: 0)
        #expect(throws: QueueError.descriptorNotMapped(head: 0, address: 0x90_0000, length: 0)) { try queue.popDescriptorChain(in: memory) }
    }

    @Test("an indirect table is read through the translator, and so are the buffers it lists")
    func indirectTranslated() throws {
        let memory = try memory()
        var queue = try makeQueue(memory)
        try queue.activate(in: memory)
        // The table at IOVA 0x204000 (guest physical 0x14000), two entries.
        try descriptor(memory, table: 0x1_4000, 0, address: 0x20_0200, length: 8, flags: 1, next: 1)
        try descriptor(memory, table: 0x1_4000, 1, address: 0x20_0400, length: 8, flags: 2)
        try descriptor(memory, 0, address: 0x20_4000, length: 32, flags: 4)
        try publish(memory, head: 0)
        let chain = try #require(try queue.popDescriptorChain(in: memory))
        #expect(chain.isIndirect && chain.descriptors.map(\.address) == [GuestAddress(0x1_0200), GuestAddress(0x1_0400)])
        // An indirect table at an unmapped IOVA is refused.
        try descriptor(memory, 1, address: 0x70_0000, length: 32, flags: 4)
        try publish(memory, head: 1, index: 1)
        #expect(throws: QueueError.descriptorNotMapped(head: 1, address: 0x70_0000, length: 32)) { try queue.popDescriptorChain(in: memory) }
        // A buffer of the table at an unmapped IOVA too.
        var other = try makeQueue(memory)
        try other.activate(in: memory)
        try descriptor(memory, table: 0x1_4000, 1, address: 0x80_0000, length: 8, flags: 2)
        try descriptor(memory, 2, address: 0x20_4000, length: 32, flags: 4)
        try memory.write(UInt16(2), at: GuestAddress(0x2004))
        try memory.write(UInt16(1), at: GuestAddress(0x2002))
        #expect(throws: QueueError.descriptorNotMapped(head: 2, address: 0x80_0000, length: 8)) { try other.popDescriptorChain(in: memory) }
    }

    @Test("the translator survives a reset and a restore; without one, addresses are guest physical")
    func translatorKept() throws {
        let memory = try memory()
        var queue = try makeQueue(memory)
        try queue.activate(in: memory)
        queue.reset()
        #expect(queue.translator != nil)
        queue.size = 16
        queue.descriptorTable = GuestAddress(0x10_0000)
        queue.availableRing = GuestAddress(0x10_1000)
        queue.usedRing = GuestAddress(0x10_2000)
        try queue.activate(in: memory)
        let saved = queue.state
        try queue.restore(saved, memory: memory)
        #expect(queue.translator != nil && queue.isReady)
        // The same IOVAs without the translator are not guest memory.
        var plain = try makeQueue(memory, translator: nil)
        #expect(throws: QueueError.self) { try plain.activate(in: memory) }
        #expect(throws: QueueStateError.self) { _ = try SplitQueue(restoring: saved, memory: memory) }
    }
}
