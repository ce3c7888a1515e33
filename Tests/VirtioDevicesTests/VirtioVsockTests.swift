import GuestMemory
import Testing
import VirtioDevices
import VirtioQueue

@Suite("virtio-vsock device and hybrid vsock muxer")
struct VirtioVsockTests {
    static let firstHostPort: UInt32 = 1 << 30

    @Test("type 19, three queues of 256, IN_ORDER offered, guest_cid in the configuration space")
    func identity() throws {
        let device = VirtioVsock(cid: 0x1_0000_0034, backend: FakeVsockBackend(), watcher: RecordingWatcher())
        #expect(device.deviceType.rawValue == 19)
        #expect(device.queueMaxSizes == [256, 256, 256])
        #expect(device.features == 1 << 35)
        #expect(device.readConfig(offset: 0, size: 8) == 0x1_0000_0034)
        #expect(device.readConfig(offset: 0, size: 4) == 0x34)
        #expect(device.readConfig(offset: 4, size: 4) == 1)
        #expect(device.readConfig(offset: 8, size: 4) == 0)
    }

    @Test("a guest connection reaches PATH_<port>: RESPONSE, then data both ways with credit fields")
    func guestConnects() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        try guest.activate()
        try guest.send(.request, from: 1234, to: 5000, bufferAllocation: 8192)
        let response = try #require(try guest.received().first ?? nil)
        #expect(response.header == VsockHeader(sourceCID: 2, destinationCID: VsockGuest.cid, sourcePort: 5000, destinationPort: 1234,
                                               op: .response, bufferAllocation: 65536, forwardCount: 0))
        #expect(guest.device.connectionState(localPort: 5000, peerPort: 1234) == .established)
        let stream = try #require(guest.backend.stream(port: 5000))
        #expect(guest.watcher.interest(stream.pollDescriptor) == .readable)

        try guest.send(.readWrite, from: 1234, to: 5000, payload: Array("hello".utf8))
        #expect(stream.takeOutbound() == Array("hello".utf8))

        stream.hostSends(Array("world!".utf8))
        guest.hostReady(stream.pollDescriptor)
        let data = try #require(try guest.received().first ?? nil)
        #expect(data.header.operation == .readWrite)
        #expect(data.payload == Array("world!".utf8))
        #expect(data.header.forwardCount == 5)
        #expect(data.header.length == 6)
        #expect(guest.interrupt.events.contains(.queue(0)))
    }

    @Test("a guest connection to a port nobody listens on is reset")
    func guestRefused() throws {
        let guest = try VsockGuest()
        try guest.activate()
        try guest.send(.request, from: 1234, to: 7000)
        let reset = try #require(try guest.received().first ?? nil)
        #expect(reset.header == VsockHeader(sourceCID: 2, destinationCID: VsockGuest.cid, sourcePort: 7000, destinationPort: 1234, op: .reset))
        #expect(guest.device.connections.isEmpty)
    }

    @Test("a host client sends CONNECT <port>, the guest accepts, the client reads OK <host port>, data after the line flows")
    func hostConnects() throws {
        let guest = try VsockGuest()
        try guest.activate()
        #expect(guest.watcher.interest(3) == .readable)
        let client = guest.backend.hostConnects(sending: Array("CONNECT 8000\nearly".utf8))
        guest.hostReady(3)
        #expect(guest.watcher.interest(client.pollDescriptor) == .readable)
        guest.hostReady(client.pollDescriptor)       // reads "CONNECT 80" (10 bytes at most at first)
        guest.hostReady(client.pollDescriptor)       // then one byte at a time: "0"
        guest.hostReady(client.pollDescriptor)       // "0"
        #expect(try guest.received().isEmpty)
        #expect(client.state.withLock { $0.reads } == [10, 1, 1])
        guest.hostReady(client.pollDescriptor)       // reads "\n": the request goes out
        let request = try #require(try guest.received().first ?? nil)
        #expect(request.header == VsockHeader(sourceCID: 2, destinationCID: VsockGuest.cid, sourcePort: Self.firstHostPort,
                                              destinationPort: 8000, op: .request, bufferAllocation: 65536))
        #expect(client.state.withLock { $0.inbound } == Array("early".utf8))
        #expect(client.outbound.isEmpty)

        try guest.send(.response, from: 8000, to: Self.firstHostPort, bufferAllocation: 65536)
        #expect(client.takeOutbound() == Array("OK \(Self.firstHostPort)\n".utf8))
        #expect(guest.device.connectionState(localPort: Self.firstHostPort, peerPort: 8000) == .established)
        guest.hostReady(client.pollDescriptor)
        let data = try #require(try guest.received().first ?? nil)
        #expect(data.payload == Array("early".utf8))
        try guest.send(.readWrite, from: 8000, to: Self.firstHostPort, payload: [1, 2, 3])
        #expect(client.takeOutbound() == [1, 2, 3])
    }

    @Test("a host connection the guest refuses with RST is dropped without an OK line")
    func hostConnectRefused() throws {
        let guest = try VsockGuest()
        try guest.activate()
        let client = guest.backend.hostConnects(sending: Array("connect 9\n".utf8))
        guest.hostReady(3)
        guest.hostReady(client.pollDescriptor)
        let request = try #require(try guest.received().first ?? nil)
        #expect(request.header.operation == .request && request.header.destinationPort == 9)
        try guest.send(.reset, from: 9, to: request.header.sourcePort)
        #expect(guest.device.connections.isEmpty)
        #expect(client.outbound.isEmpty)
        #expect(guest.watcher.interest(client.pollDescriptor) == nil)
        // The next host connection gets the next host port.
        let second = guest.backend.hostConnects(sending: Array("CONNECT 9\n".utf8))
        guest.hostReady(3)
        guest.hostReady(second.pollDescriptor)
        #expect(try guest.received().first??.header.sourcePort == Self.firstHostPort + 1)
    }

    @Test("bad CONNECT lines and clients that hang up close the client without a connection")
    func badHandshake() throws {
        let guest = try VsockGuest()
        try guest.activate()
        for text in ["HELLO 1\n", "CONNECT abc\n", "CON\n"] {
            let client = guest.backend.hostConnects(sending: Array(text.utf8))
            guest.hostReady(3)
            for _ in 0..<4 { guest.hostReady(client.pollDescriptor) }
            #expect(guest.watcher.interest(client.pollDescriptor) == nil, "\(text)")
        }
        let quitter = guest.backend.hostConnects(sending: Array("CONN".utf8))
        quitter.state.withLock { $0.endOfStream = true }
        guest.hostReady(3)
        guest.hostReady(quitter.pollDescriptor)
        guest.hostReady(quitter.pollDescriptor)
        #expect(guest.watcher.interest(quitter.pollDescriptor) == nil)
        #expect(guest.device.connections.isEmpty)
        #expect(try guest.received().isEmpty)
    }

    @Test("a host request the guest never answers is reset once 2 s passed and a new connection comes")
    func requestTimeout() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [9]))
        try guest.activate()
        let client = guest.backend.hostConnects(sending: Array("CONNECT 1\n".utf8))
        guest.hostReady(3)
        guest.hostReady(client.pollDescriptor)
        #expect(try guest.received().first??.header.operation == .request)
        guest.clock.advance(2001)
        try guest.send(.request, from: 77, to: 9)
        let packets = try guest.received().compactMap { $0?.header }
        #expect(packets.contains { $0.operation == .reset && $0.sourcePort == Self.firstHostPort && $0.destinationPort == 1 })
        #expect(packets.contains { $0.operation == .response && $0.sourcePort == 9 })
        #expect(guest.device.connections.map(\.localPort) == [9])
    }

    /// A guest connection from guest port 1234 to host port 5000, established.
    func established(_ guest: VsockGuest, bufferAllocation: UInt32 = 65536) throws -> FakeVsockStream {
        try guest.activate()
        try guest.send(.request, from: 1234, to: 5000, bufferAllocation: bufferAllocation)
        #expect(try guest.received().first??.header.operation == .response)
        return try #require(guest.backend.stream(port: 5000))
    }

    @Test("host data stops at the guest's credit, asks for credit, and resumes on CREDIT_UPDATE")
    func creditStall() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try established(guest, bufferAllocation: 100)
        stream.hostSends([UInt8](repeating: 7, count: 300))
        guest.hostReady(stream.pollDescriptor)
        var packets = try guest.received().compactMap { $0 }
        #expect(packets.map(\.header.length) == [100])
        // Out of credit: the stream is not watched for reading until the guest gives more.
        #expect(guest.watcher.interest(stream.pollDescriptor) == nil)
        guest.hostReady(stream.pollDescriptor)
        packets = try guest.received().compactMap { $0 }
        #expect(packets.map(\.header.operation) == [.creditRequest])

        try guest.send(.creditUpdate, from: 1234, to: 5000, bufferAllocation: 100, forwardCount: 100)
        #expect(guest.watcher.interest(stream.pollDescriptor) == .readable)
        guest.hostReady(stream.pollDescriptor)
        packets = try guest.received().compactMap { $0 }
        #expect(packets.map(\.header.length) == [100])
        #expect(packets.first?.header.operation == .readWrite)
        #expect(stream.state.withLock { $0.inbound.count } == 100)
    }

    @Test("a guest CREDIT_REQUEST is answered with our buffer size and forwarded count")
    func creditRequest() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try established(guest)
        try guest.send(.readWrite, from: 1234, to: 5000, payload: [UInt8](repeating: 1, count: 1000))
        try guest.send(.creditRequest, from: 1234, to: 5000)
        let update = try #require(try guest.received().first ?? nil)
        #expect(update.header.operation == .creditUpdate)
        #expect(update.header.bufferAllocation == 65536)
        #expect(update.header.forwardCount == 1000)
        #expect(stream.outbound.count == 1000)
    }

    @Test("a slow host stream buffers guest data, is watched for writing, and counts only what it took")
    func partialWrites() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try established(guest)
        stream.state.withLock { $0.writeRoom = 10 }
        try guest.send(.readWrite, from: 1234, to: 5000, payload: Array(0..<100))
        #expect(stream.outbound == Array(0..<10))
        #expect(guest.watcher.interest(stream.pollDescriptor) == [.readable, .writable])
        try guest.send(.readWrite, from: 1234, to: 5000, payload: Array(100..<150))
        #expect(stream.outbound.count == 10)
        try guest.send(.creditRequest, from: 1234, to: 5000)
        #expect(try guest.received().first??.header.forwardCount == 10)

        stream.state.withLock { $0.writeRoom = nil }
        guest.hostReady(stream.pollDescriptor, .writable)
        #expect(stream.outbound == Array(0..<150))
        #expect(guest.watcher.interest(stream.pollDescriptor) == .readable)
    }

    @Test("guest data beyond the credit it was given kills the connection with a reset")
    func creditOverrun() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try established(guest)
        stream.state.withLock { $0.writeRoom = 0 }
        for _ in 0..<2 { try guest.send(.readWrite, from: 1234, to: 5000, payload: [UInt8](repeating: 9, count: 32768)) }
        #expect(try guest.received().isEmpty)
        try guest.send(.readWrite, from: 1234, to: 5000, payload: [1])
        let reset = try #require(try guest.received().first ?? nil)
        #expect(reset.header.operation == .reset)
        #expect(guest.device.connections.isEmpty)
        #expect(guest.watcher.interest(stream.pollDescriptor) == nil)
    }

    @Test("the host closing: SHUTDOWN to the guest, the guest's RST removes the connection")
    func hostCloses() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try established(guest)
        stream.state.withLock { $0.endOfStream = true }
        guest.hostReady(stream.pollDescriptor, [.readable, .hangUp])
        let shutdown = try #require(try guest.received().first ?? nil)
        #expect(shutdown.header.operation == .shutdown)
        #expect(shutdown.header.flags == 3)
        #expect(guest.device.connectionState(localPort: 5000, peerPort: 1234) == .localClosed(noReceive: true, noSend: true))
        try guest.send(.reset, from: 1234, to: 5000)
        #expect(guest.device.connections.isEmpty)
    }

    @Test("the host half-closing (end of stream without hang-up) sends SHUTDOWN with SEND only")
    func hostHalfCloses() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try established(guest)
        stream.state.withLock { $0.endOfStream = true }
        guest.hostReady(stream.pollDescriptor)
        let shutdown = try #require(try guest.received().first ?? nil)
        #expect(shutdown.header.operation == .shutdown && shutdown.header.flags == Vsock.shutdownSend)
        #expect(guest.watcher.interest(stream.pollDescriptor) == .hangUp)
        // The guest can still send; then it shuts down its sending side and the device resets.
        try guest.send(.readWrite, from: 1234, to: 5000, payload: [5])
        #expect(stream.outbound == [5])
        try guest.send(.shutdown, from: 1234, to: 5000, flags: Vsock.shutdownSend)
        #expect(try guest.received().first??.header.operation == .reset)
        #expect(guest.device.connections.isEmpty)
    }

    @Test("the guest closing: SHUTDOWN both ways is answered with RST; SEND only half-closes the host stream")
    func guestCloses() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try established(guest)
        try guest.send(.shutdown, from: 1234, to: 5000, flags: Vsock.shutdownSend)
        #expect(stream.state.withLock { $0.writeShutdown })
        #expect(guest.device.connectionState(localPort: 5000, peerPort: 1234) == .peerClosed(noReceive: false, noSend: true))
        stream.hostSends([4, 2])
        guest.hostReady(stream.pollDescriptor)
        #expect(try guest.received().first??.payload == [4, 2])
        try guest.send(.shutdown, from: 1234, to: 5000, flags: Vsock.shutdownReceive)
        let reset = try #require(try guest.received().first ?? nil)
        #expect(reset.header.operation == .reset)
        #expect(guest.device.connections.isEmpty)
        #expect(guest.watcher.interest(stream.pollDescriptor) == nil)
    }

    @Test("a guest RST drops the connection at once; packets for unknown connections are answered with RST")
    func guestResets() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try established(guest)
        try guest.send(.reset, from: 1234, to: 5000)
        #expect(guest.device.connections.isEmpty)
        #expect(guest.watcher.interest(stream.pollDescriptor) == nil)
        try guest.send(.readWrite, from: 1234, to: 5000, payload: [1])
        let reset = try #require(try guest.received().first ?? nil)
        #expect(reset.header.operation == .reset && reset.header.sourcePort == 5000 && reset.header.destinationPort == 1234)
        #expect(stream.outbound.isEmpty)
    }

    @Test("a host stream that fails while writing resets the connection")
    func hostWriteFailure() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        let stream = try established(guest)
        stream.state.withLock { $0.writeFailure = true }
        try guest.send(.readWrite, from: 1234, to: 5000, payload: [1, 2])
        #expect(try guest.received().first??.header.operation == .reset)
        #expect(guest.device.connections.isEmpty)
    }

    @Test("fifty connections at once, each with its own data both ways")
    func manyConnections() throws {
        let ports = Set((0..<50).map { UInt32(6000 + $0) })
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: ports))
        try guest.activate(receiveBuffers: 60)
        for port in ports.sorted() { try guest.send(.request, from: port + 10000, to: port) }
        let responses = try guest.received().compactMap { $0?.header }
        #expect(responses.count == 50 && responses.allSatisfy { $0.operation == .response })
        #expect(guest.device.connections.count == 50)
        for port in ports.sorted() {
            try guest.send(.readWrite, from: port + 10000, to: port, payload: Array("to \(port)".utf8))
            let stream = try #require(guest.backend.stream(port: port))
            #expect(stream.outbound == Array("to \(port)".utf8))
            stream.hostSends(Array("from \(port)".utf8))
            guest.hostReady(stream.pollDescriptor)
        }
        let data = try guest.received().compactMap { $0 }
        #expect(data.count == 50)
        for packet in data {
            #expect(packet.payload == Array("from \(packet.header.sourcePort)".utf8))
            #expect(packet.header.destinationPort == packet.header.sourcePort + 10000)
        }
    }

    @Test("host data waits while the guest has no receive buffers, and goes when it posts one")
    func noReceiveBuffers() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        try guest.activate(receiveBuffers: 1)
        try guest.send(.request, from: 1234, to: 5000)
        _ = try guest.received(repost: false)
        let stream = try #require(guest.backend.stream(port: 5000))
        stream.hostSends([1, 2, 3])
        guest.hostReady(stream.pollDescriptor)
        // Not watched for reading while the data waits for a buffer: no busy loop.
        #expect(guest.watcher.interest(stream.pollDescriptor) == nil)
        try guest.postReceive()
        try guest.device.processQueue(0)
        #expect(try guest.received().first??.payload == [1, 2, 3])
        #expect(guest.watcher.interest(stream.pollDescriptor) == .readable)
    }

    @Test("receive buffers split into header and data descriptors are filled too")
    func splitReceiveBuffers() throws {
        let guest = try VsockGuest(backend: FakeVsockBackend(listening: [5000]))
        try guest.activate(receiveBuffers: 0)
        try guest.postReceive(split: true)
        try guest.postReceive(dataLength: 8, split: true)
        try guest.send(.request, from: 1234, to: 5000)
        let stream = try #require(guest.backend.stream(port: 5000))
        stream.hostSends(Array(0..<20))
        guest.hostReady(stream.pollDescriptor)
        let packets = try guest.received(repost: false).compactMap { $0 }
        #expect(packets.map(\.header.operation) == [.response, .readWrite])
        #expect(packets.last?.payload == Array(0..<8))
    }
}
