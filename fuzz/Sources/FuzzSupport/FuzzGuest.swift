import GuestMemory
import VirtioQueue

/// The guest memory every virtqueue target works in, and the guest-address choices it fuzzes.
///
/// Two adjacent regions (so buffers may straddle a region boundary), a hole, then a small
/// far region. It is mapped once per process and zeroed at the start of every input, so
/// one input's outcome never depends on the one before.
public enum FuzzGuest {
    /// The regions as `(start, size)`.
    public static let ranges: [(start: GuestAddress, size: UInt64)] = [
        (GuestAddress(0), 0x1_0000), (GuestAddress(0x1_0000), 0x1_0000), (GuestAddress(0x3_0000), 0x1000),
    ]
    /// One past the highest guest address.
    public static let end: UInt64 = 0x3_1000
    /// Where buffers usually go: after both queues' rings, across the region boundary.
    public static let dataArea: ClosedRange<UInt64> = 0x8000...0x1_ffff

    /// The mapped memory.
    public static let memory: GuestMemory = {
        do {
            return try GuestMemory.anonymous(ranges)
        } catch {
            fatalError("cannot map the fuzz guest memory: \(error)")
        }
    }()

    /// Zeroes every region.
    public static func clear() {
        for range in ranges {
            do { try memory.fill(0, count: Int(range.size), at: range.start) } catch { fatalError("clearing guest memory: \(error)") }
        }
    }

    /// A guest address: mostly inside the data area, sometimes anywhere near memory
    /// (rings, the hole, the far region, just past the end), sometimes any 64-bit value.
    public static func address(_ input: inout FuzzInput) -> UInt64 {
        switch input.byte() % 8 {
        case 0..<5: dataArea.lowerBound + UInt64(input.integer(UInt32.self)) % UInt64(dataArea.count)
        case 5, 6: UInt64(input.integer(UInt32.self)) % (end + 0x1000)
        default: input.integer(UInt64.self)
        }
    }

    /// A buffer length: mostly small, sometimes up to 64 KiB, sometimes any 32-bit value.
    public static func length(_ input: inout FuzzInput) -> UInt32 {
        switch input.byte() % 8 {
        case 0..<5: UInt32(input.byte())
        case 5, 6: UInt32(input.integer(UInt16.self))
        default: input.integer(UInt32.self)
        }
    }

    /// Writes `value` at `address`, ignoring addresses outside memory (the guest may write anywhere).
    public static func poke<T: FixedWidthInteger>(_ value: T, at address: UInt64) {
        try? memory.write(value, at: GuestAddress(address))
    }
}

/// Where queue `index` of a fuzzed device normally lives: queues 0 and 1 below the data
/// area (room for 256 entries each), later queues (virtio-net's second pair and control
/// queue) together in the far region (room for 64 entries).
public struct QueueLayout: Sendable {
    /// The descriptor table.
    public let descriptors: UInt64
    /// The available (driver) ring.
    public let available: UInt64
    /// The used (device) ring.
    public let used: UInt64

    /// The layout of queue `index` (queues from 2 on share the far region's rings).
    public init(queue index: Int) {
        if index >= 2 {
            descriptors = 0x3_0000
            available = 0x3_0400
            used = 0x3_0800
            return
        }
        let base = UInt64(index) * 0x4000
        descriptors = base
        available = base + 0x1000
        used = base + 0x2000
    }
}
