import GuestMemory
import Synchronization
import VirtioDevices
import VirtioQueue

/// Records queue and configuration interrupts in order.
final class RecordingInterrupt: VirtioInterrupt {
    enum Event: Equatable, Sendable {
        case queue(Int)
        case config
    }

    private let log = Mutex<[Event]>([])
    var events: [Event] { log.withLock { $0 } }
    func signalQueue(_ queue: Int) { log.withLock { $0.append(.queue(queue)) } }
    func signalConfig() { log.withLock { $0.append(.config) } }
    func clear() { log.withLock { $0.removeAll() } }
}

/// Keeps every byte of guest output and the number of writes.
final class RecordingConsoleOutput: ConsoleOutput {
    private let state = Mutex<(bytes: [UInt8], writes: Int)>(([], 0))
    var bytes: [UInt8] { state.withLock { $0.bytes } }
    var writes: Int { state.withLock { $0.writes } }
    func write(_ bytes: [UInt8]) {
        state.withLock {
            $0.bytes += bytes
            $0.writes += 1
        }
    }
}

/// Counts guest output without keeping it (for the hostile fuzz, whose chains may be large).
final class CountingConsoleOutput: ConsoleOutput {
    private let count = Mutex(0)
    var total: Int { count.withLock { $0 } }
    func write(_ bytes: [UInt8]) { count.withLock { $0 += bytes.count } }
}

/// One buffer of a chain a test posts.
struct GuestBuffer {
    var address: UInt64
    var length: UInt32
    var writable: Bool
}

enum ConsoleGuestError: Error {
    case outOfDescriptors
}

/// A test acting as the console's guest driver, straight on the device (no transport):
/// 1 MiB of guest memory, queue `q` with its descriptor table at `0x1000 + q * 0x4000`,
/// available ring 0x1000 and used ring 0x2000 above it, and buffers from 0x20000.
final class ConsoleGuest {
    static let queueSize: UInt16 = 16
    static let memorySize: UInt64 = 0x10_0000
    static let bufferStart: UInt64 = 0x20000

    let memory: GuestMemory
    let console: VirtioConsole
    let interrupt = RecordingInterrupt()
    private var free: [[UInt16]] = []
    private var chains: [[UInt16: [(index: UInt16, buffer: GuestBuffer)]]] = [[:], [:]]
    private var availableIndex: [UInt16] = [0, 0]
    private var usedSeen: [UInt16] = [0, 0]
    private var nextBuffer = bufferStart

    init(output: any ConsoleOutput, cols: UInt16 = 0, rows: UInt16 = 0,
         inputCapacity: Int = VirtioConsole.defaultInputCapacity) throws {
        memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: Self.memorySize)])
        console = VirtioConsole(output: output, cols: cols, rows: rows, queueSize: 256, inputCapacity: inputCapacity)
        forgetRings()
    }

    static func descriptorTable(_ queue: Int) -> UInt64 { 0x1000 + UInt64(queue) * 0x4000 }
    static func availableRing(_ queue: Int) -> UInt64 { descriptorTable(queue) + 0x1000 }
    static func usedRing(_ queue: Int) -> UInt64 { descriptorTable(queue) + 0x2000 }

    /// Both queues configured at the test layout and activated (or left disabled).
    func queues(enabled: [Bool] = [true, true]) throws -> [SplitQueue] {
        try enabled.enumerated().map { index, enabled in
            var queue = try SplitQueue(maxSize: 256)
            queue.size = Self.queueSize
            queue.descriptorTable = GuestAddress(Self.descriptorTable(index))
            queue.availableRing = GuestAddress(Self.availableRing(index))
            queue.usedRing = GuestAddress(Self.usedRing(index))
            if enabled { try queue.activate(in: memory) }
            return queue
        }
    }

    /// Negotiates `features` and sets the device running on fresh queues.
    func activate(features: UInt64 = VirtioConsole.Feature.size | VirtioConsole.Feature.emergencyWrite) throws {
        console.acknowledgeFeatures(features | VirtioFeature.version1)
        try console.activate(memory: memory, queues: queues(), interrupt: interrupt)
    }

    /// Resets the device as the driver does (status 0) and clears the rings, so the
    /// next ``activate(features:)`` starts from index 0.
    func reset() throws {
        console.reset()
        for queue in 0..<2 {
            try memory.write(bytes: [UInt8](repeating: 0, count: 0x3000), at: GuestAddress(Self.descriptorTable(queue)))
        }
        forgetRings()
    }

    private func forgetRings() {
        free = [Array(0..<Self.queueSize), Array(0..<Self.queueSize)]
        chains = [[:], [:]]
        availableIndex = [0, 0]
        usedSeen = [0, 0]
    }

    /// Free descriptors left on `queue`.
    func freeDescriptors(_ queue: Int) -> Int { free[queue].count }

    /// A fresh 16-aligned guest range of `length` bytes (wrapping in the buffer area).
    func allocate(_ length: Int) -> UInt64 {
        let size = (UInt64(length) + 15) & ~15
        if nextBuffer + size > Self.memorySize { nextBuffer = Self.bufferStart }
        defer { nextBuffer += max(size, 16) }
        return nextBuffer
    }

    /// Writes one raw descriptor of `queue`.
    func putDescriptor(queue: Int, _ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
        let base = GuestAddress(Self.descriptorTable(queue) + 16 * UInt64(index))
        try memory.write(address, at: base)
        try memory.write(length, at: GuestAddress(base.rawValue + 8))
        try memory.write(flags, at: GuestAddress(base.rawValue + 12))
        try memory.write(next, at: GuestAddress(base.rawValue + 14))
    }

    /// Publishes `head` in the available ring of `queue`.
    func publish(queue: Int, _ head: UInt16) throws {
        let slot = Self.availableRing(queue) + 4 + 2 * UInt64(availableIndex[queue] % Self.queueSize)
        try memory.write(head, at: GuestAddress(slot))
        availableIndex[queue] &+= 1
        try memory.write(availableIndex[queue], at: GuestAddress(Self.availableRing(queue) + 2))
    }

    /// Chains `buffers` through free descriptors and publishes the chain; returns its head.
    @discardableResult
    func post(queue: Int, _ buffers: [GuestBuffer]) throws -> UInt16 {
        guard buffers.count <= free[queue].count, !buffers.isEmpty else { throw ConsoleGuestError.outOfDescriptors }
        let indices = Array(free[queue].prefix(buffers.count))
        free[queue].removeFirst(buffers.count)
        for (position, buffer) in buffers.enumerated() {
            let last = position == buffers.count - 1
            let flags: UInt16 = (last ? 0 : 1) | (buffer.writable ? 2 : 0)
            try putDescriptor(queue: queue, indices[position], address: buffer.address, length: buffer.length,
                              flags: flags, next: last ? 0 : indices[position + 1])
        }
        chains[queue][indices[0]] = Array(zip(indices, buffers)).map { (index: $0.0, buffer: $0.1) }
        try publish(queue: queue, indices[0])
        return indices[0]
    }

    /// Posts a transmit chain whose readable buffers hold `pieces`, plus writable
    /// buffers of `writableLengths`.
    @discardableResult
    func postTransmit(_ pieces: [[UInt8]], writableLengths: [Int] = []) throws -> UInt16 {
        var buffers: [GuestBuffer] = []
        for piece in pieces {
            let address = allocate(piece.count)
            try memory.write(bytes: piece, at: GuestAddress(address))
            buffers.append(GuestBuffer(address: address, length: UInt32(piece.count), writable: false))
        }
        for length in writableLengths {
            buffers.append(GuestBuffer(address: allocate(length), length: UInt32(length), writable: true))
        }
        return try post(queue: VirtioConsole.transmitQueue, buffers)
    }

    /// Posts a receive chain of writable buffers of `lengths` (filled with 0xee first).
    @discardableResult
    func postReceive(_ lengths: [Int]) throws -> UInt16 {
        var buffers: [GuestBuffer] = []
        for length in lengths {
            let address = allocate(length)
            try memory.write(bytes: [UInt8](repeating: 0xee, count: length), at: GuestAddress(address))
            buffers.append(GuestBuffer(address: address, length: UInt32(length), writable: true))
        }
        return try post(queue: VirtioConsole.receiveQueue, buffers)
    }

    /// The used entries `queue` gained since the last call; their descriptors are free again.
    func takeUsed(_ queue: Int) throws -> [(head: UInt16, length: UInt32)] {
        let used = Self.usedRing(queue)
        let index = try memory.read(UInt16.self, at: GuestAddress(used + 2))
        var result: [(UInt16, UInt32)] = []
        while usedSeen[queue] != index {
            let element = used + 4 + 8 * UInt64(usedSeen[queue] % Self.queueSize)
            let head = UInt16(truncatingIfNeeded: try memory.read(UInt32.self, at: GuestAddress(element)))
            let length = try memory.read(UInt32.self, at: GuestAddress(element + 4))
            result.append((head, length))
            if let chain = chains[queue].removeValue(forKey: head) { free[queue] += chain.map(\.index) }
            usedSeen[queue] &+= 1
        }
        return result
    }

    /// The bytes the device wrote into the chain at `head` (whose used length is `length`).
    func received(head: UInt16, length: UInt32) throws -> [UInt8] {
        guard let chain = chains[VirtioConsole.receiveQueue][head] else { return [] }
        var bytes: [UInt8] = []
        var left = Int(length)
        for (_, buffer) in chain where left > 0 {
            let count = min(left, Int(buffer.length))
            bytes += try memory.readBytes(count: count, at: GuestAddress(buffer.address))
            left -= count
        }
        return bytes
    }

    /// Every byte the guest received in receive chains used since the last call, in order.
    func takeReceived() throws -> [UInt8] {
        let used = Self.usedRing(0)
        let index = try memory.read(UInt16.self, at: GuestAddress(used + 2))
        var bytes: [UInt8] = []
        var cursor = usedSeen[0]
        while cursor != index {
            let element = used + 4 + 8 * UInt64(cursor % Self.queueSize)
            let head = UInt16(truncatingIfNeeded: try memory.read(UInt32.self, at: GuestAddress(element)))
            bytes += try received(head: head, length: try memory.read(UInt32.self, at: GuestAddress(element + 4)))
            cursor &+= 1
        }
        _ = try takeUsed(0)
        return bytes
    }
}
