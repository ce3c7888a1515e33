/// Encoders for the actions ``GuestQueue`` and ``DeviceHarness`` decode, so seed corpora
/// start from well-formed queues and chains rather than from noise.
extension FuzzInputBuilder {
    /// A buffer of a seed chain: offset into the data area, length, direction, and the
    /// bytes a readable buffer carries (at most 40).
    public struct SeedBuffer {
        /// Offset from the start of ``FuzzGuest/dataArea``.
        public var offset: UInt32
        /// Length in bytes (up to 64 KiB).
        public var length: UInt16
        /// Whether the device writes it.
        public var writable: Bool
        /// Contents for a readable buffer.
        public var payload: [UInt8]

        /// Creates a buffer description.
        public init(offset: UInt32, length: UInt16, writable: Bool, payload: [UInt8] = []) {
            self.offset = offset
            self.length = length
            self.writable = writable
            self.payload = payload
        }
    }

    /// A queue set-up as ``GuestQueue/init(_:index:maxSize:)`` reads it: size `1 << sizeLog2`
    /// (capped at the device maximum), normal ring layout.
    public mutating func queueSetup(sizeLog2: UInt8, eventIndex: Bool = false) {
        byte(sizeLog2)
        byte(eventIndex ? 1 : 0)
        byte(0)
    }

    /// A ``GuestQueue/act(_:)`` chain action: `buffers` (readable ones first) linked from `head`, then published.
    public mutating func chain(head: UInt8, _ buffers: [SeedBuffer]) {
        precondition((1...6).contains(buffers.count), "a seed chain has 1 to 6 buffers")
        byte(0)
        byte(head)
        byte(UInt8(buffers.count - 1))
        byte(UInt8(buffers.firstIndex(where: \.writable) ?? buffers.count))
        for buffer in buffers {
            byte(0)  // address in the data area
            integer(buffer.offset)
            if buffer.length < 256 {
                byte(0)
                byte(UInt8(buffer.length))
            } else {
                byte(5)
                integer(buffer.length)
            }
            if !buffer.writable { run(buffer.payload, maxCount: 40) }
        }
    }

    /// A ``DeviceHarness`` start: all offered features accepted, then each queue's set-up.
    public mutating func deviceStart(queues: Int, sizeLog2: UInt8 = 4, eventIndex: Bool = false) {
        integer(UInt64.max)
        for _ in 0..<queues { queueSetup(sizeLog2: sizeLog2, eventIndex: eventIndex) }
    }

    /// A ``DeviceHarness`` action putting a chain on queue `queue`.
    public mutating func deviceChain(queue: UInt8, head: UInt8, _ buffers: [SeedBuffer]) {
        byte(0)
        byte(queue)
        chain(head: head, buffers)
    }

    /// A ``DeviceHarness`` notification of queue `queue`.
    public mutating func deviceNotify(queue: UInt8) {
        byte(3)
        byte(queue + 1)  // int(in: -1...count) maps byte b to b - 1 for small counts
    }
}
