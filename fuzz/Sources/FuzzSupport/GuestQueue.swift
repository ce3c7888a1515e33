import GuestMemory
import VirtioQueue

/// The driver side of one split virtqueue: programs a `SplitQueue` and writes descriptors,
/// chains and ring entries into ``FuzzGuest/memory`` as fuzz input dictates.
public struct GuestQueue {
    /// Where the rings normally are.
    public let layout: QueueLayout
    /// The device-side queue as programmed (ready when it validated).
    public private(set) var queue: SplitQueue
    /// The driver's next available index.
    public private(set) var availableIndex: UInt16 = 0

    /// Programs queue `index` (device maximum `maxSize`, a power of two) the way a driver
    /// would: usually a valid size and the normal layout, sometimes odd sizes or ring
    /// addresses; with or without event index; then enables it (it stays not ready when
    /// the device refuses the configuration).
    public init(_ input: inout FuzzInput, index: Int, maxSize: UInt16) {
        layout = QueueLayout(queue: index)
        do { queue = try SplitQueue(maxSize: maxSize) } catch { fatalError("device offers an invalid queue size \(maxSize)") }
        let choice = input.byte()
        if choice >= 0xf0 {
            queue.size = input.integer(UInt16.self)
        } else {
            queue.size = min(maxSize, UInt16(1) << (choice % 9))
        }
        queue.eventIndex = input.bool()
        var rings = (layout.descriptors, layout.available, layout.used)
        if input.byte() >= 0xf0 {
            rings = (FuzzGuest.address(&input), FuzzGuest.address(&input), FuzzGuest.address(&input))
        }
        queue.descriptorTable = GuestAddress(rings.0)
        queue.availableRing = GuestAddress(rings.1)
        queue.usedRing = GuestAddress(rings.2)
        try? queue.activate(in: FuzzGuest.memory)
    }

    /// Entries the driver addresses (the size, or 1 for a nonsensical size).
    private var entries: UInt16 { max(1, min(queue.size, 256)) }

    /// Writes descriptor `index` of the table at the normal layout.
    public func putDescriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let base = layout.descriptors + 16 * UInt64(index % 256)
        FuzzGuest.poke(address, at: base)
        FuzzGuest.poke(length, at: base + 8)
        FuzzGuest.poke(flags, at: base + 12)
        FuzzGuest.poke(next, at: base + 14)
    }

    /// Puts `head` in the next available slot and publishes it.
    public mutating func publish(_ head: UInt16) {
        FuzzGuest.poke(head, at: layout.available + 4 + 2 * UInt64(availableIndex % entries))
        availableIndex &+= 1
        FuzzGuest.poke(availableIndex, at: layout.available + 2)
    }

    /// One driver action decoded from `input`.
    public mutating func act(_ input: inout FuzzInput) {
        switch input.byte() % 8 {
        case 0, 1, 2:  // A whole chain: readable buffers then writable ones, payload, published.
            let head = UInt16(input.byte()) % entries
            let count = 1 + Int(input.byte() % 6)
            let firstWritable = Int(input.byte()) % (count + 1)
            for position in 0..<count {
                let index = (head + UInt16(position)) % entries
                let address = FuzzGuest.address(&input)
                let flags: UInt16 = (position + 1 < count ? 1 : 0) | (position >= firstWritable ? 2 : 0)
                putDescriptor(index, address: address, length: FuzzGuest.length(&input), flags: flags,
                              next: (index + 1) % entries)
                if position < firstWritable { try? FuzzGuest.memory.write(bytes: input.run(maxCount: 40), at: GuestAddress(address)) }
            }
            publish(head)
        case 3:  // One raw descriptor.
            putDescriptor(UInt16(input.byte()), address: FuzzGuest.address(&input), length: FuzzGuest.length(&input),
                          flags: UInt16(input.byte()) & (input.bool() ? 0xffff : 7), next: UInt16(input.byte()))
        case 4:  // An indirect table of up to 8 entries, and a descriptor pointing at it, published.
            let table = FuzzGuest.address(&input) & ~15
            let count = 1 + Int(input.byte() % 8)
            for entry in 0..<count {
                let base = table &+ 16 * UInt64(entry)
                FuzzGuest.poke(FuzzGuest.address(&input), at: base)
                FuzzGuest.poke(FuzzGuest.length(&input), at: base &+ 8)
                FuzzGuest.poke(UInt16(input.byte() & 7), at: base &+ 12)
                FuzzGuest.poke(UInt16(input.byte() % 9), at: base &+ 14)
            }
            let head = UInt16(input.byte()) % entries
            let length = input.bool() ? UInt32(16 * count) : FuzzGuest.length(&input)
            putDescriptor(head, address: table, length: length, flags: input.bool() ? 4 : 5, next: 0)
            publish(head)
        case 5:  // Publish any head, or jump the available index.
            if input.bool() { publish(UInt16(input.byte())) } else {
                availableIndex &+= input.integer(UInt16.self)
                FuzzGuest.poke(availableIndex, at: layout.available + 2)
            }
        case 6:  // The driver's suppression fields: avail flags, used_event.
            FuzzGuest.poke(input.integer(UInt16.self), at: input.bool() ? layout.available : layout.available + 4 + 2 * UInt64(entries))
        default:  // Scribble anywhere in guest memory (rings included).
            let address = UInt64(input.integer(UInt32.self)) % FuzzGuest.end
            try? FuzzGuest.memory.write(bytes: input.run(maxCount: 64), at: GuestAddress(address))
        }
    }
}
