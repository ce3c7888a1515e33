import GuestMemory
import VirtioDevices
import VirtioQueue

enum NetGuestError: Error {
    case outOfDescriptors
}

/// A test acting as virtio-net's guest driver, straight on the device (no transport):
/// 4 MiB of guest memory, queue `q` with its descriptor table at `0x1000 + q * 0x4000`,
/// available ring 0x1000 and used ring 0x2000 above it, and buffers from 0x20000.
final class NetGuest {
    typealias F = VirtioNetABI.Feature
    static let memorySize: UInt64 = 0x40_0000
    static let bufferStart: UInt64 = 0x20000
    /// Every feature a Linux guest takes from the default device, event index aside.
    static let linuxFeatures: UInt64 = F.mac | F.status | F.controlQueue | F.mergeableReceiveBuffers | F.checksum
        | F.guestChecksum | F.controlGuestOffloads | F.guestTSO4 | F.guestTSO6 | F.guestECN | F.guestUFO
        | F.hostTSO4 | F.hostTSO6 | F.hostECN | F.hostUFO | F.multiQueue | VirtioFeature.indirectDescriptors

    let memory: GuestMemory
    let net: VirtioNet
    let backends: [MemoryNetBackend]
    let interrupt = RecordingInterrupt()
    let queueSize: UInt16
    private(set) var features: UInt64 = 0
    private var free: [[UInt16]] = []
    private var chains: [[UInt16: [GuestBuffer]]] = []
    private var descriptorsOf: [[UInt16: [UInt16]]] = []
    private var availableIndex: [UInt16] = []
    private var usedSeen: [UInt16] = []
    private var nextBuffer = bufferStart

    /// A device over `pairs` fresh in-memory backends (or the given ones).
    init(pairs: Int = 1, backends: [MemoryNetBackend]? = nil, options: VirtioNet.Options = .init(mac: MACAddress("52:54:00:12:34:56")!),
         queueSize: UInt16 = 16) throws {
        memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: Self.memorySize)])
        let backends = backends ?? (0..<pairs).map { _ in MemoryNetBackend() }
        self.backends = backends
        self.queueSize = queueSize
        net = try VirtioNet(backends: backends, options: options)
        forgetRings()
    }

    var queueCount: Int { net.queueMaxSizes.count }
    static func descriptorTable(_ queue: Int) -> UInt64 { 0x1000 + UInt64(queue) * 0x4000 }
    static func availableRing(_ queue: Int) -> UInt64 { descriptorTable(queue) + 0x1000 }
    static func usedRing(_ queue: Int) -> UInt64 { descriptorTable(queue) + 0x2000 }
    /// Where the device publishes `avail_event` for `queue`.
    func availEvent(_ queue: Int) -> GuestAddress { GuestAddress(Self.usedRing(queue) + 4 + 8 * UInt64(queueSize)) }

    /// Every queue configured at the test layout; those not in `enabled` stay disabled.
    func queues(eventIndex: Bool, enabled: Set<Int>? = nil) throws -> [SplitQueue] {
        try (0..<queueCount).map { index in
            var queue = try SplitQueue(maxSize: net.queueMaxSizes[index])
            queue.size = queueSize
            queue.descriptorTable = GuestAddress(Self.descriptorTable(index))
            queue.availableRing = GuestAddress(Self.availableRing(index))
            queue.usedRing = GuestAddress(Self.usedRing(index))
            queue.eventIndex = eventIndex
            if enabled?.contains(index) ?? true { try queue.activate(in: memory) }
            return queue
        }
    }

    /// Negotiates `features` (restricted to those offered) and sets the device running.
    func activate(features: UInt64 = NetGuest.linuxFeatures, enabled: Set<Int>? = nil) throws {
        self.features = (features & net.features) | VirtioFeature.version1
        net.acknowledgeFeatures(self.features)
        try net.activate(memory: memory, queues: queues(eventIndex: self.features & VirtioFeature.eventIndex != 0, enabled: enabled),
                         interrupt: interrupt)
    }

    /// Resets the device as the driver does and clears the rings.
    func reset() throws {
        net.reset()
        for queue in 0..<queueCount {
            try memory.write(bytes: [UInt8](repeating: 0, count: 0x3000), at: GuestAddress(Self.descriptorTable(queue)))
        }
        forgetRings()
    }

    private func forgetRings() {
        free = Array(repeating: Array(0..<queueSize), count: queueCount)
        chains = Array(repeating: [:], count: queueCount)
        descriptorsOf = Array(repeating: [:], count: queueCount)
        availableIndex = Array(repeating: 0, count: queueCount)
        usedSeen = Array(repeating: 0, count: queueCount)
    }

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
        let slot = Self.availableRing(queue) + 4 + 2 * UInt64(availableIndex[queue] % queueSize)
        try memory.write(head, at: GuestAddress(slot))
        availableIndex[queue] &+= 1
        try memory.write(availableIndex[queue], at: GuestAddress(Self.availableRing(queue) + 2))
    }

    /// Chains `buffers` (through free descriptors, or one indirect table) and publishes
    /// the chain; returns its head.
    @discardableResult
    func post(queue: Int, _ buffers: [GuestBuffer], indirect: Bool = false) throws -> UInt16 {
        let needed = indirect ? 1 : buffers.count
        guard needed <= free[queue].count, !buffers.isEmpty else { throw NetGuestError.outOfDescriptors }
        let indices = Array(free[queue].prefix(needed))
        free[queue].removeFirst(needed)
        if indirect {
            let table = allocate(16 * buffers.count)
            for (position, buffer) in buffers.enumerated() {
                let last = position == buffers.count - 1
                let entry = GuestAddress(table + 16 * UInt64(position))
                try memory.write(buffer.address, at: entry)
                try memory.write(buffer.length, at: GuestAddress(entry.rawValue + 8))
                try memory.write(UInt16((last ? 0 : 1) | (buffer.writable ? 2 : 0)), at: GuestAddress(entry.rawValue + 12))
                try memory.write(UInt16(last ? 0 : position + 1), at: GuestAddress(entry.rawValue + 14))
            }
            try putDescriptor(queue: queue, indices[0], address: table, length: UInt32(16 * buffers.count), flags: 4)
        } else {
            for (position, buffer) in buffers.enumerated() {
                let last = position == buffers.count - 1
                let flags: UInt16 = (last ? 0 : 1) | (buffer.writable ? 2 : 0)
                try putDescriptor(queue: queue, indices[position], address: buffer.address, length: buffer.length,
                                  flags: flags, next: last ? 0 : indices[position + 1])
            }
        }
        chains[queue][indices[0]] = buffers
        descriptorsOf[queue][indices[0]] = indices
        try publish(queue: queue, indices[0])
        return indices[0]
    }

    /// Posts a transmit chain on `queue` whose readable buffers hold `pieces`.
    @discardableResult
    func postTransmit(queue: Int = 1, _ pieces: [[UInt8]], writableLengths: [Int] = [], indirect: Bool = false) throws -> UInt16 {
        var buffers: [GuestBuffer] = []
        for piece in pieces {
            let address = allocate(piece.count)
            try memory.write(bytes: piece, at: GuestAddress(address))
            buffers.append(GuestBuffer(address: address, length: UInt32(piece.count), writable: false))
        }
        for length in writableLengths {
            buffers.append(GuestBuffer(address: allocate(length), length: UInt32(length), writable: true))
        }
        return try post(queue: queue, buffers, indirect: indirect)
    }

    /// Posts a receive chain on `queue` of writable buffers of `lengths` (filled with 0xee first).
    @discardableResult
    func postReceive(queue: Int = 0, _ lengths: [Int], indirect: Bool = false) throws -> UInt16 {
        var buffers: [GuestBuffer] = []
        for length in lengths {
            let address = allocate(length)
            try memory.fill(0xee, count: length, at: GuestAddress(address))
            buffers.append(GuestBuffer(address: address, length: UInt32(length), writable: true))
        }
        return try post(queue: queue, buffers, indirect: indirect)
    }

    /// The used entries `queue` gained since the last call, with the bytes the device
    /// wrote into each (the first `length` writable bytes); their descriptors are free again.
    func takeUsed(_ queue: Int) throws -> [(head: UInt16, length: UInt32, bytes: [UInt8])] {
        let used = Self.usedRing(queue)
        let index = try memory.read(UInt16.self, at: GuestAddress(used + 2))
        var result: [(UInt16, UInt32, [UInt8])] = []
        while usedSeen[queue] != index {
            let element = used + 4 + 8 * UInt64(usedSeen[queue] % queueSize)
            let head = UInt16(truncatingIfNeeded: try memory.read(UInt32.self, at: GuestAddress(element)))
            let length = try memory.read(UInt32.self, at: GuestAddress(element + 4))
            var bytes: [UInt8] = []
            var left = Int(length)
            for buffer in chains[queue][head] ?? [] where buffer.writable && left > 0 {
                let count = min(left, Int(buffer.length))
                bytes += try memory.readBytes(count: count, at: GuestAddress(buffer.address))
                left -= count
            }
            result.append((head, length, bytes))
            chains[queue][head] = nil
            if let indices = descriptorsOf[queue].removeValue(forKey: head) { free[queue] += indices }
            usedSeen[queue] &+= 1
        }
        return result
    }

    /// Sends one control command (class, command, data) with a one-byte acknowledgement
    /// buffer, notifies the control queue, and returns the acknowledgement.
    func control(_ commandClass: UInt8, _ command: UInt8, _ data: [UInt8], queue: Int? = nil) throws -> UInt8 {
        let index = queue ?? net.controlQueueIndex
        try postTransmit(queue: index, [[commandClass, command], data].filter { !$0.isEmpty }, writableLengths: [1])
        try net.processQueue(index)
        let used = try takeUsed(index)
        guard used.count == 1, used[0].length == 1 else { return 0xff }
        return used[0].bytes[0]
    }
}

/// A packet: a 12-byte header (zero but for `flags` and `gsoType`) and a frame of
/// `count` bytes with a recognisable pattern seeded by `seed`.
func netPacket(frameBytes count: Int, seed: UInt8 = 1, flags: UInt8 = 0, gsoType: UInt8 = 0) -> [UInt8] {
    var header = [UInt8](repeating: 0, count: VirtioNetABI.headerSize)
    header[0] = flags
    header[1] = gsoType
    return header + (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ Int(seed)) }
}

/// `packet` as the guest should see it: `num_buffers` (bytes 10 and 11) set to `buffers`.
func withNumBuffers(_ packet: [UInt8], _ buffers: UInt16) -> [UInt8] {
    var packet = packet
    packet[10] = UInt8(truncatingIfNeeded: buffers)
    packet[11] = UInt8(buffers >> 8)
    return packet
}
