/// A fixed-capacity FIFO of host bytes waiting for the guest's receive buffers.
///
/// A ring over storage allocated once, so holding input never grows memory past
/// `capacity` however long the guest leaves its receive queue empty.
struct ConsoleInputBuffer: Sendable {
    /// The most bytes the buffer holds.
    let capacity: Int
    private var storage: [UInt8]
    private var start = 0
    /// The bytes waiting.
    private(set) var count = 0

    /// An empty buffer of `capacity` bytes (at least one).
    init(capacity: Int) {
        self.capacity = max(1, capacity)
        storage = [UInt8](repeating: 0, count: self.capacity)
    }

    /// Whether no bytes are waiting.
    var isEmpty: Bool { count == 0 }
    /// The room left.
    var space: Int { capacity - count }

    /// Appends as many bytes from the front of `bytes` as fit; returns how many.
    mutating func append(_ bytes: ArraySlice<UInt8>) -> Int {
        let taken = min(bytes.count, space)
        var source = bytes.startIndex
        var slot = (start + count) % capacity
        for _ in 0..<taken {
            storage[slot] = bytes[source]
            source += 1
            slot = slot + 1 == capacity ? 0 : slot + 1
        }
        count += taken
        return taken
    }

    /// A copy of the first `limit` bytes (fewer when fewer wait), leaving them queued.
    func peek(_ limit: Int) -> [UInt8] {
        let length = min(max(0, limit), count)
        let firstRun = min(length, capacity - start)
        var result = Array(storage[start..<(start + firstRun)])
        if firstRun < length { result += storage[0..<(length - firstRun)] }
        return result
    }

    /// Drops the first `n` bytes (at most `count`).
    mutating func removeFirst(_ n: Int) {
        let dropped = min(max(0, n), count)
        start = (start + dropped) % capacity
        count -= dropped
    }
}
