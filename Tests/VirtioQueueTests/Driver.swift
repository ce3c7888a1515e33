import GuestMemory
import VirtioQueue

/// A test-side virtio driver: lays out a split queue in anonymous guest memory and writes
/// descriptors and ring entries the way a guest would.
final class Driver {
    static let table: UInt64 = 0x1000
    static let avail: UInt64 = 0x2000
    static let used: UInt64 = 0x3000
    static let data: UInt64 = 0x10000
    static let memorySize: UInt64 = 0x40000

    let memory: GuestMemory
    var queue: SplitQueue
    let size: UInt16
    var availIndex: UInt16 = 0

    /// A driver of a queue of `size`; with `splitAt`, guest memory is two adjacent regions
    /// that meet there (a range across that address crosses regions).
    init(size: UInt16 = 16, eventIndex: Bool = false, startIndex: UInt16 = 0, splitAt: UInt64? = nil) throws {
        if let splitAt {
            memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: splitAt),
                                                (start: GuestAddress(splitAt), size: Self.memorySize - splitAt)])
        } else {
            memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: Self.memorySize)])
        }
        queue = try SplitQueue(maxSize: 256)
        self.size = size
        queue.size = size
        queue.descriptorTable = GuestAddress(Self.table)
        queue.availableRing = GuestAddress(Self.avail)
        queue.usedRing = GuestAddress(Self.used)
        queue.eventIndex = eventIndex
        queue.nextAvailable = startIndex
        queue.nextUsed = startIndex
        availIndex = startIndex
        try memory.write(startIndex, at: GuestAddress(Self.avail + 2))
        try queue.activate(in: memory)
    }

    /// Writes a 16-byte descriptor at `index` of the table at `table`.
    func setDescriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: DescriptorFlags = [],
                       next: UInt16 = 0, table: UInt64 = Driver.table) throws {
        let entry = table + UInt64(index) * 16
        try memory.write(address, at: GuestAddress(entry))
        try memory.write(length, at: GuestAddress(entry + 8))
        try memory.write(flags.rawValue, at: GuestAddress(entry + 12))
        try memory.write(next, at: GuestAddress(entry + 14))
    }

    /// Makes chains available: ring entries first, then the index.
    func publish(_ heads: UInt16...) throws {
        for head in heads {
            try memory.write(head, at: GuestAddress(Self.avail + 4 + 2 * UInt64(availIndex % size)))
            availIndex &+= 1
        }
        try setAvailIndex(availIndex)
    }

    func setAvailIndex(_ value: UInt16) throws {
        try memory.storeRelease(value, at: GuestAddress(Self.avail + 2))
    }

    func setAvailFlags(_ value: UInt16) throws { try memory.write(value, at: GuestAddress(Self.avail)) }
    func setUsedEvent(_ value: UInt16) throws {
        try memory.write(value, at: GuestAddress(Self.avail + 4 + 2 * UInt64(size)))
    }

    var usedIndex: UInt16 { get throws { try memory.read(UInt16.self, at: GuestAddress(Self.used + 2)) } }
    var usedFlags: UInt16 { get throws { try memory.read(UInt16.self, at: GuestAddress(Self.used)) } }
    var availEvent: UInt16 {
        get throws { try memory.read(UInt16.self, at: GuestAddress(Self.used + 4 + 8 * UInt64(size))) }
    }

    func usedElement(slot: UInt16) throws -> (id: UInt32, length: UInt32) {
        let base = Self.used + 4 + 8 * UInt64(slot)
        return (try memory.read(UInt32.self, at: GuestAddress(base)), try memory.read(UInt32.self, at: GuestAddress(base + 4)))
    }

    func pop() throws(QueueError) -> DescriptorChain? { try queue.popDescriptorChain(in: memory) }
}
