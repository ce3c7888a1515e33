/// The UART's receive FIFO: a fixed ring of bytes that never grows.
///
/// Storage is allocated once, at creation; pushing into a full FIFO fails instead of
/// growing it, so a guest that stops reading cannot make the VMM buffer without bound.
struct ReceiveFIFO: Sendable {
    /// How many bytes the FIFO holds (Cloud Hypervisor's serial buffers 64 bytes too).
    static let capacity = 64

    private var storage = [UInt8](repeating: 0, count: capacity)
    private var head = 0
    /// The number of bytes waiting to be read.
    private(set) var count = 0

    /// Whether no byte is waiting.
    var isEmpty: Bool { count == 0 }
    /// How many more bytes fit.
    var freeSpace: Int { Self.capacity - count }

    /// Appends `byte`; returns `false` (and stores nothing) when the FIFO is full.
    mutating func push(_ byte: UInt8) -> Bool {
        guard count < Self.capacity else { return false }
        storage[(head + count) % Self.capacity] = byte
        count += 1
        return true
    }

    /// Removes and returns the oldest byte, or `nil` when empty.
    mutating func pop() -> UInt8? {
        guard count > 0 else { return nil }
        let byte = storage[head]
        head = (head + 1) % Self.capacity
        count -= 1
        return byte
    }

    /// The waiting bytes, oldest first (for a snapshot).
    var contents: [UInt8] { (0..<count).map { storage[(head + $0) % Self.capacity] } }

    /// A FIFO holding the first ``capacity`` bytes of `contents`, oldest first (a restored
    /// snapshot's; callers check the length first).
    init(contents: [UInt8]) {
        for byte in contents.prefix(Self.capacity) { _ = push(byte) }
    }

    /// An empty FIFO.
    init() {}

    /// Drops every waiting byte.
    mutating func removeAll() {
        head = 0
        count = 0
    }
}
