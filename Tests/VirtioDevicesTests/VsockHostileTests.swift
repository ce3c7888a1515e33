import DeviceModel
import GuestMemory
import Testing
import TestSupport
import VirtioDevices
import VirtioQueue

@Suite("virtio-vsock against a hostile guest, and its saved state")
struct VsockHostileTests {
    @Test("malformed transmit chains are returned unused and the queue goes on")
    func malformedTransmit() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        try guest.activate()
        let request = VsockHeader(sourceCID: 52, destinationCID: 2, sourcePort: 1, destinationPort: 5000, op: .request)
        var tooLong = request
        tooLong.length = 65537
        var missing = request
        missing.length = 100
        // A header descriptor too small, a length above 64 KiB, a payload longer than the buffers.
        try guest.transmitRaw([Array(request.encoded.prefix(43))])
        try guest.transmitRaw([tooLong.encoded, [UInt8](repeating: 0, count: 16)])
        try guest.transmitRaw([missing.encoded + [1, 2, 3]])
        try guest.transmitRaw([missing.encoded, [1, 2, 3], [4]])
        #expect(guest.device.connections.isEmpty)
        #expect(try guest.received().isEmpty)
        // A writable data buffer on the transmit queue is refused as well.
        var withData = request
        withData.length = 8
        let headerAddress = guest.allocate(44)
        try guest.memory.write(bytes: withData.encoded, at: GuestAddress(headerAddress))
        try guest.post(queue: 1, [GuestBuffer(address: headerAddress, length: 44, writable: false),
                                  GuestBuffer(address: guest.allocate(8), length: 8, writable: true)])
        try guest.device.processQueue(1)
        #expect(guest.device.connections.isEmpty)
        // After all that, a good request still works.
        try guest.send(.request, from: 1, to: 5000)
        #expect(try guest.received().first??.header.operation == .response)
    }

    @Test("unknown operations, other socket types and other CIDs never make a connection")
    func oddPackets() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        try guest.activate()
        var header = VsockHeader(sourceCID: 52, destinationCID: 2, sourcePort: 1, destinationPort: 5000, op: .request)
        header.op = 99
        try guest.transmitRaw([header.encoded])
        #expect(try guest.received().first??.header.operation == .reset)
        try guest.send(.request, from: 1, to: 5000, type: 2)
        #expect(try guest.received().first??.header.operation == .reset)
        try guest.send(.request, from: 1, to: 5000, destinationCID: 7)
        #expect(try guest.received().isEmpty)
        #expect(guest.device.connections.isEmpty)
        // On a live connection an unknown operation or a second REQUEST is dropped.
        try guest.send(.request, from: 1, to: 5000)
        _ = try guest.received()
        header.sourcePort = 1
        try guest.transmitRaw([header.encoded])
        try guest.send(.request, from: 1, to: 5000)
        #expect(try guest.received().isEmpty)
        #expect(guest.device.connectionState(localPort: 5000, peerPort: 1) == .established)
    }

    @Test("receive chains that cannot hold a packet are returned with length 0")
    func malformedReceive() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        try guest.activate(receiveBuffers: 0)
        try guest.post(queue: 0, [GuestBuffer(address: guest.allocate(20), length: 20, writable: true)])
        try guest.post(queue: 0, [GuestBuffer(address: guest.allocate(44), length: 44, writable: true),
                                  GuestBuffer(address: guest.allocate(8), length: 8, writable: true),
                                  GuestBuffer(address: guest.allocate(8), length: 8, writable: true)])
        try guest.post(queue: 0, [GuestBuffer(address: guest.allocate(100), length: 100, writable: false)])
        try guest.postReceive()
        try guest.send(.request, from: 1, to: 5000)
        let packets = try guest.received(repost: false)
        #expect(packets.count == 4)
        #expect(packets.prefix(3).allSatisfy { $0 == nil })
        #expect(packets.last??.header.operation == .response)
    }

    @Test("a descriptor outside guest memory fails the device without crashing, reported at the next notification")
    func descriptorOutOfMemory() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        try guest.activate()
        try guest.putDescriptor(queue: 1, 40, address: VsockGuest.memorySize + 0x1000, length: 44, flags: 0)
        try guest.publish(queue: 1, 40)
        #expect(throws: VirtioDeviceError.self) { try guest.device.processQueue(1) }

        let other = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try { () throws -> FakeVsockStream in
            try other.activate(receiveBuffers: 1)
            try other.send(.request, from: 1, to: 5000)
            return try #require(other.backend.stream(port: 5000))
        }()
        try other.putDescriptor(queue: 0, 50, address: UInt64.max - 10, length: 100, flags: 2)
        try other.publish(queue: 0, 50)
        stream.hostSends([1])
        other.hostReady(stream.pollDescriptor)
        #expect(other.device.hostSideFailure != nil)
        #expect(throws: VirtioDeviceError.self) { try other.device.processQueue(0) }
    }

    @Test("random transmit chains (random headers, lengths, layouts) never crash the device")
    func randomTransmit() throws {
        var random = SplitMix64(seed: 0x5eed_50c4)
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [1, 2, 3, 5000]))
        try guest.activate(receiveBuffers: 32)
        for round in 0..<600 {
            var header = VsockHeader(sourceCID: 52, destinationCID: random.next() % 4 == 0 ? .random(in: 0...5, using: &random) : 2,
                                     sourcePort: .random(in: 0...4, using: &random), destinationPort: .random(in: 0...5, using: &random),
                                     length: 0, type: random.next() % 8 == 0 ? 2 : 1, op: .request,
                                     flags: .random(in: 0...3, using: &random), bufferAllocation: .random(in: 0...70000, using: &random),
                                     forwardCount: .random(in: 0...70000, using: &random))
            header.op = .random(in: 0...8, using: &random)
            let payloadLength = Int.random(in: 0...300, using: &random)
            header.length = random.next() % 10 == 0 ? .random(in: 0...70000, using: &random) : UInt32(payloadLength)
            var bytes = header.encoded + (0..<payloadLength).map { _ in UInt8.random(in: 0...255, using: &random) }
            if random.next() % 10 == 0 { bytes = Array(bytes.prefix(Int.random(in: 0...60, using: &random))) }
            if bytes.isEmpty { bytes = [0] }
            let cut = Int.random(in: 1...bytes.count, using: &random)
            try guest.transmitRaw(cut < bytes.count && random.next() % 2 == 0 ? [Array(bytes[..<cut]), Array(bytes[cut...])] : [bytes])
            for port in [UInt32(1), 2, 3, 5000] {
                if let stream = guest.backend.stream(port: port), round % 7 == 0 {
                    stream.hostSends([UInt8(round & 0xff)])
                    guest.hostReady(stream.pollDescriptor, random.next() % 5 == 0 ? [.readable, .writable, .hangUp] : .readable)
                }
            }
            _ = try guest.received()
        }
        #expect(guest.device.hostSideFailure == nil)
        #expect(guest.device.connections.count <= 25)
    }

    @Test("the saved state lists live connections; a restored device resets them toward the guest")
    func stateRoundTrip() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000, 5001]))
        try guest.activate()
        try guest.send(.request, from: 1234, to: 5000)
        try guest.send(.request, from: 1235, to: 5001)
        _ = try guest.received()
        let snapshot = guest.device.saveDeviceState()
        #expect(snapshot.state == .vsock(VirtioVsock.State(cid: 52, connections: [.init(localPort: 5000, peerPort: 1234),
                                                                                  .init(localPort: 5001, peerPort: 1235)])))
        #expect(snapshot.queues.keys.sorted() == [0, 1, 2])

        let fresh = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        try fresh.activate()
        try fresh.device.restoreDeviceState(snapshot.state)
        try fresh.device.processQueue(0)
        let resets = try fresh.received().compactMap { $0?.header }
        #expect(resets.map(\.operation) == [.reset, .reset])
        #expect(resets.map(\.sourcePort) == [5000, 5001])
        #expect(resets.map(\.destinationPort) == [1234, 1235])

        let otherCID = try VsockGuest(cid: 99)
        #expect(throws: DeviceStateError.self) { try otherCID.device.restoreDeviceState(snapshot.state) }
        #expect(throws: DeviceStateError.self) { try otherCID.device.restoreDeviceState(.rng) }
    }

    @Test("a driver reset keeps connections; close() drops them and stops watching")
    func resetAndClose() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        try guest.activate()
        try guest.send(.request, from: 1234, to: 5000)
        guest.device.reset()
        #expect(guest.device.connections.count == 1)
        #expect(throws: VirtioDeviceError.notActivated) { try guest.device.processQueue(1) }
        guest.device.close()
        #expect(guest.device.connections.isEmpty)
        #expect(guest.watcher.interests.withLock { $0.isEmpty })
    }
}
