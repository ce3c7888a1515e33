import GuestMemory
import Synchronization
import VirtioDevices
import VirtioQueue

/// An in-memory host stream: bytes the host sends wait in `inbound`, bytes the device
/// writes land in `outbound`; `writeRoom` limits how much one write takes (nil: all).
final class FakeVsockStream: VsockHostStream {
    struct State {
        var inbound: [UInt8] = []
        var endOfStream = false
        var readFailure = false
        var outbound: [UInt8] = []
        var writeRoom: Int?
        var writeFailure = false
        var writeShutdown = false
        var reads: [Int] = []
    }

    let pollDescriptor: Int32
    let state = Mutex(State())

    init(descriptor: Int32) { pollDescriptor = descriptor }

    func read(maxCount: Int) -> (VsockIOResult, [UInt8]) {
        state.withLock { state in
            state.reads.append(maxCount)
            if state.readFailure { return (.failed("injected read failure"), []) }
            if !state.inbound.isEmpty {
                let bytes = Array(state.inbound.prefix(maxCount))
                state.inbound.removeFirst(bytes.count)
                return (.bytes(bytes.count), bytes)
            }
            return (state.endOfStream ? .endOfStream : .wouldBlock, [])
        }
    }

    func write(_ bytes: ArraySlice<UInt8>) -> VsockIOResult {
        state.withLock { state in
            if state.writeFailure { return .failed("injected write failure") }
            let count = min(bytes.count, state.writeRoom ?? bytes.count)
            if count == 0 { return .wouldBlock }
            state.outbound += bytes.prefix(count)
            if let room = state.writeRoom { state.writeRoom = room - count }
            return .bytes(count)
        }
    }

    func shutdownWrite() { state.withLock { $0.writeShutdown = true } }

    /// Host bytes for the guest.
    func hostSends(_ bytes: [UInt8]) { state.withLock { $0.inbound += bytes } }
    /// Everything the device wrote so far, taken.
    func takeOutbound() -> [UInt8] { state.withLock { state in defer { state.outbound = [] }; return state.outbound } }
    var outbound: [UInt8] { state.withLock { $0.outbound } }
}

/// Host listeners by guest port, and host clients waiting to be accepted.
final class FakeVsockBackend: VsockHostBackend {
    struct State {
        var listeningPorts: Set<UInt32> = []
        var pending: [FakeVsockStream] = []
        var connected: [UInt32: [FakeVsockStream]] = [:]
        var nextDescriptor: Int32 = 100
    }

    let listenerDescriptor: Int32 = 3
    let state = Mutex(State())

    init(listening ports: Set<UInt32> = []) { state.withLock { $0.listeningPorts = ports } }

    private func makeStream() -> FakeVsockStream {
        state.withLock { state in
            defer { state.nextDescriptor += 1 }
            return FakeVsockStream(descriptor: state.nextDescriptor)
        }
    }

    /// A host client that connected to PATH and sent `bytes`.
    func hostConnects(sending bytes: [UInt8]) -> FakeVsockStream {
        let stream = makeStream()
        stream.hostSends(bytes)
        state.withLock { $0.pending.append(stream) }
        return stream
    }

    func accept() -> (any VsockHostStream)? {
        state.withLock { state in state.pending.isEmpty ? nil : state.pending.removeFirst() }
    }

    func connect(port: UInt32) throws(VirtioDeviceError) -> any VsockHostStream {
        guard state.withLock({ $0.listeningPorts.contains(port) }) else { throw .backend("nobody listens at PATH_\(port)") }
        let stream = makeStream()
        state.withLock { $0.connected[port, default: []].append(stream) }
        return stream
    }

    /// The last stream a guest connection to `port` opened.
    func stream(port: UInt32) -> FakeVsockStream? { state.withLock { $0.connected[port]?.last } }
}

/// Records what the device watches.
final class RecordingWatcher: VsockEventWatcher {
    let interests = Mutex<[Int32: VsockInterest]>([:])
    func watch(_ descriptor: Int32, interest: VsockInterest) { interests.withLock { $0[descriptor] = interest } }
    func unwatch(_ descriptor: Int32) { interests.withLock { $0[descriptor] = nil } }
    func interest(_ descriptor: Int32) -> VsockInterest? { interests.withLock { $0[descriptor] } }
}

/// A settable clock in milliseconds.
final class TestClock: Sendable {
    let now = Mutex<UInt64>(1000)
    func advance(_ milliseconds: UInt64) { now.withLock { $0 += milliseconds } }
    var read: @Sendable () -> UInt64 { { [self] in now.withLock { $0 } } }
}

/// A test acting as the vsock guest driver straight on the device: 4 MiB of memory,
/// three queues of 64 (queue `q` at `0x1000 + q * 0x4000`), buffers from 0x40000.
final class VsockGuest {
    static let queueSize: UInt16 = 64
    static let memorySize: UInt64 = 0x40_0000
    static let bufferStart: UInt64 = 0x40000
    static let cid: UInt64 = 52

    let memory: GuestMemory
    let device: VirtioVsock
    let backend: FakeVsockBackend
    let watcher = RecordingWatcher()
    let clock = TestClock()
    let interrupt = RecordingInterrupt()
    private var free: [[UInt16]] = []
    private var chains: [[UInt16: [GuestBuffer]]] = [[:], [:], [:]]
    private var availableIndex: [UInt16] = [0, 0, 0]
    private var usedSeen: [UInt16] = [0, 0, 0]
    private var nextBuffer = bufferStart

    init(backend: FakeVsockBackend = FakeVsockBackend(), cid: UInt64 = VsockGuest.cid) throws {
        memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: Self.memorySize)])
        self.backend = backend
        device = VirtioVsock(cid: cid, backend: backend, watcher: watcher, clock: clock.read)
        free = Array(repeating: Array(0..<Self.queueSize), count: 3)
    }

    static func descriptorTable(_ queue: Int) -> UInt64 { 0x1000 + UInt64(queue) * 0x4000 }
    static func availableRing(_ queue: Int) -> UInt64 { descriptorTable(queue) + 0x1000 }
    static func usedRing(_ queue: Int) -> UInt64 { descriptorTable(queue) + 0x2000 }

    /// The three queues at the test layout, activated.
    func queues() throws -> [SplitQueue] {
        try (0..<3).map { index in
            var queue = try SplitQueue(maxSize: 256)
            queue.size = Self.queueSize
            queue.descriptorTable = GuestAddress(Self.descriptorTable(index))
            queue.availableRing = GuestAddress(Self.availableRing(index))
            queue.usedRing = GuestAddress(Self.usedRing(index))
            try queue.activate(in: memory)
            return queue
        }
    }

    /// Sets the device running and posts `receiveBuffers` receive buffers of 44 + 4096 bytes.
    func activate(receiveBuffers: Int = 16) throws {
        device.acknowledgeFeatures(VirtioFeature.version1)
        try device.activate(memory: memory, queues: queues(), interrupt: interrupt)
        for _ in 0..<receiveBuffers { try postReceive() }
    }

    func allocate(_ length: Int) -> UInt64 {
        let size = (UInt64(max(length, 1)) + 15) & ~15
        if nextBuffer + size > Self.memorySize { nextBuffer = Self.bufferStart }
        defer { nextBuffer += size }
        return nextBuffer
    }

    func putDescriptor(queue: Int, _ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
        let base = GuestAddress(Self.descriptorTable(queue) + 16 * UInt64(index))
        try memory.write(address, at: base)
        try memory.write(length, at: GuestAddress(base.rawValue + 8))
        try memory.write(flags, at: GuestAddress(base.rawValue + 12))
        try memory.write(next, at: GuestAddress(base.rawValue + 14))
    }

    func publish(queue: Int, _ head: UInt16) throws {
        let slot = Self.availableRing(queue) + 4 + 2 * UInt64(availableIndex[queue] % Self.queueSize)
        try memory.write(head, at: GuestAddress(slot))
        availableIndex[queue] &+= 1
        try memory.write(availableIndex[queue], at: GuestAddress(Self.availableRing(queue) + 2))
    }

    /// Chains `buffers` and publishes them on `queue`; returns the head.
    @discardableResult
    func post(queue: Int, _ buffers: [GuestBuffer]) throws -> UInt16 {
        precondition(!buffers.isEmpty && buffers.count <= free[queue].count, "out of descriptors")
        let indices = Array(free[queue].prefix(buffers.count))
        free[queue].removeFirst(buffers.count)
        for (position, buffer) in buffers.enumerated() {
            let last = position == buffers.count - 1
            try putDescriptor(queue: queue, indices[position], address: buffer.address, length: buffer.length,
                              flags: (last ? 0 : 1) | (buffer.writable ? 2 : 0), next: last ? 0 : indices[position + 1])
        }
        chains[queue][indices[0]] = buffers
        try publish(queue: queue, indices[0])
        return indices[0]
    }

    /// Posts one receive buffer (one descriptor, as Linux 6.3+ does, or header and data apart).
    func postReceive(dataLength: Int = 4096, split: Bool = false) throws {
        if split {
            try post(queue: 0, [GuestBuffer(address: allocate(44), length: 44, writable: true),
                                GuestBuffer(address: allocate(dataLength), length: UInt32(dataLength), writable: true)])
        } else {
            try post(queue: 0, [GuestBuffer(address: allocate(44 + dataLength), length: UInt32(44 + dataLength), writable: true)])
        }
    }

    /// Posts raw readable pieces on the transmit queue and notifies it.
    func transmitRaw(_ pieces: [[UInt8]], notify: Bool = true) throws {
        var buffers: [GuestBuffer] = []
        for piece in pieces {
            let address = allocate(piece.count)
            try memory.write(bytes: piece, at: GuestAddress(address))
            buffers.append(GuestBuffer(address: address, length: UInt32(piece.count), writable: false))
        }
        try post(queue: 1, buffers)
        if notify { try device.processQueue(1) }
        _ = try takeUsed(1)
    }

    /// Sends one packet from guest port `source` to host port `destination`.
    func send(_ op: VsockOp, from source: UInt32, to destination: UInt32, payload: [UInt8] = [], flags: UInt32 = 0,
              bufferAllocation: UInt32 = 65536, forwardCount: UInt32 = 0, type: UInt16 = 1,
              destinationCID: UInt64 = Vsock.hostCID) throws {
        let header = VsockHeader(sourceCID: Self.cid, destinationCID: destinationCID, sourcePort: source, destinationPort: destination,
                                 length: UInt32(payload.count), type: type, op: op, flags: flags,
                                 bufferAllocation: bufferAllocation, forwardCount: forwardCount)
        try transmitRaw(payload.isEmpty ? [header.encoded] : [header.encoded + payload])
    }

    /// The used entries `queue` gained; their descriptors are free again.
    func takeUsed(_ queue: Int) throws -> [(head: UInt16, length: UInt32, buffers: [GuestBuffer])] {
        let used = Self.usedRing(queue)
        let index = try memory.read(UInt16.self, at: GuestAddress(used + 2))
        var result: [(UInt16, UInt32, [GuestBuffer])] = []
        while usedSeen[queue] != index {
            let element = used + 4 + 8 * UInt64(usedSeen[queue] % Self.queueSize)
            let head = UInt16(truncatingIfNeeded: try memory.read(UInt32.self, at: GuestAddress(element)))
            let length = try memory.read(UInt32.self, at: GuestAddress(element + 4))
            let buffers = chains[queue].removeValue(forKey: head) ?? []
            var index = head
            for _ in buffers {
                free[queue].append(index)
                index = try memory.read(UInt16.self, at: GuestAddress(Self.descriptorTable(queue) + 16 * UInt64(index) + 14))
            }
            result.append((head, length, buffers))
            usedSeen[queue] &+= 1
        }
        return result
    }

    /// The packets the device put in receive buffers since the last call (each buffer
    /// used is posted again); a buffer returned with length 0 shows as nil.
    func received(repost: Bool = true) throws -> [VsockPacket?] {
        var packets: [VsockPacket?] = []
        for (_, length, buffers) in try takeUsed(0) {
            if repost { try postReceive() }
            guard length >= 44, let first = buffers.first else {
                packets.append(nil)
                continue
            }
            var bytes: [UInt8] = []
            for buffer in buffers { bytes += try memory.readBytes(count: Int(buffer.length), at: GuestAddress(buffer.address)) }
            let header = VsockHeader(decoding: bytes)!
            _ = first
            packets.append(VsockPacket(header: header, payload: Array(bytes[44..<(44 + Int(header.length))])))
        }
        return packets
    }

    /// Tells the device a host descriptor is ready.
    func hostReady(_ descriptor: Int32, _ events: VsockInterest = .readable) {
        device.hostReady(descriptor: descriptor, events: events)
    }
}
