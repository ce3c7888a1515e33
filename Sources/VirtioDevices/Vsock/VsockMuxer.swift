// Cloud Hypervisor's hybrid vsock muxer: it routes guest packets to connections by
// (host port, guest port), accepts host clients on the socket at PATH (each first sends
// `CONNECT <port>\n`, and hears `OK <host port>\n` once the guest accepts), and connects
// guest requests for port P to the host listener at `PATH_P`.

/// What the muxer does with one host descriptor it watches.
private enum VsockWatched {
    /// The listening socket at PATH.
    case listener
    /// A host client that has not finished its `CONNECT <port>\n` line.
    case handshake(any VsockHostStream, command: [UInt8])
    /// A connection's stream.
    case connection(VsockConnectionKey)
}

/// The connections of one vsock device and their host streams. Not thread-safe: the
/// device keeps it behind its lock.
final class VsockMuxer {
    /// The most bytes of a `CONNECT <port>\n` line.
    static let commandCapacity = 32

    let guestCID: UInt64
    private let backend: any VsockHostBackend
    private let watcher: any VsockEventWatcher
    private var connections: [VsockConnectionKey: VsockConnection] = [:]
    private var watched: [Int32: VsockWatched] = [:]
    private var interests: [Int32: VsockInterest] = [:]
    private var rxQueue = VsockRxQueue()
    private var localPorts: Set<UInt32> = []
    private var lastLocalPort: UInt32 = (1 << 30) - 1
    private(set) var listening = false

    init(guestCID: UInt64, backend: any VsockHostBackend, watcher: any VsockEventWatcher) {
        self.guestCID = guestCID
        self.backend = backend
        self.watcher = watcher
    }

    /// Stops watching every descriptor and drops every connection (closing its stream).
    func close() {
        for descriptor in watched.keys where interests[descriptor] != nil { watcher.unwatch(descriptor) }
        watched = [:]
        interests = [:]
        connections = [:]
        localPorts = []
        rxQueue = VsockRxQueue()
        listening = false
    }

    /// Starts watching the listening socket (the device runs).
    func startListening() {
        guard !listening else { return }
        listening = true
        watched[backend.listenerDescriptor] = .listener
        setInterest(backend.listenerDescriptor, .readable)
    }

    /// The live connections as (host port, guest port).
    var connectionPorts: [(localPort: UInt32, peerPort: UInt32)] {
        connections.keys.sorted { ($0.localPort, $0.peerPort) < ($1.localPort, $1.peerPort) }.map { ($0.localPort, $0.peerPort) }
    }

    /// A connection's state, for tests and counters.
    func connectionState(localPort: UInt32, peerPort: UInt32) -> VsockConnectionState? {
        connections[VsockConnectionKey(localPort: localPort, peerPort: peerPort)]?.state
    }

    /// The number of live connections.
    var connectionCount: Int { connections.count }

    /// Queues a reset for each (host port, guest port): a restored device tells the guest
    /// that the connections it had are gone.
    func queueResets(_ ports: [(localPort: UInt32, peerPort: UInt32)]) {
        for port in ports { rxQueue.push(.reset(localPort: port.localPort, peerPort: port.peerPort)) }
    }

    // MARK: - Toward the guest

    /// Whether a packet is owed to the guest.
    var hasPendingRx: Bool { rxQueue.hasPending }

    /// The next packet for the guest, with at most `capacity` payload bytes.
    func receivePacket(capacity: Int, now: UInt64) -> VsockPacket? {
        if rxQueue.isEmpty && !rxQueue.isSynced {
            rxQueue = .rebuilt(from: connections.filter { $0.value.hasPendingRx }.map(\.key))
        }
        while let item = rxQueue.first {
            switch item {
            case let .reset(localPort, peerPort):
                rxQueue.removeFirst()
                return VsockPacket(header: VsockHeader(sourceCID: Vsock.hostCID, destinationCID: guestCID, sourcePort: localPort,
                                                       destinationPort: peerPort, op: .reset))
            case let .connection(key):
                var packet: VsockPacket?
                var done = true
                mutate(key, now: now) { connection in
                    packet = connection.receivePacket(capacity: capacity, now: now)
                    done = !connection.hasPendingRx
                }
                if done { rxQueue.removeFirst() }
                guard let packet else { continue }
                if packet.header.operation == .reset {
                    removeConnection(VsockConnectionKey(localPort: packet.header.sourcePort, peerPort: packet.header.destinationPort))
                }
                return packet
            }
        }
        return nil
    }

    // MARK: - From the guest

    /// Takes one guest packet (`payload`: the `header.length` bytes that came with it).
    func sendPacket(_ header: VsockHeader, payload: ArraySlice<UInt8>, now: UInt64) {
        let key = VsockConnectionKey(localPort: header.destinationPort, peerPort: header.sourcePort)
        guard header.type == Vsock.streamType else {
            rxQueue.push(.reset(localPort: header.destinationPort, peerPort: header.sourcePort))
            return
        }
        // Packets for another context id are dropped.
        guard header.destinationCID == Vsock.hostCID else { return }
        guard connections[key] != nil else {
            if header.operation == .request {
                acceptGuestRequest(header, now: now)
            } else {
                rxQueue.push(.reset(localPort: header.destinationPort, peerPort: header.sourcePort))
            }
            return
        }
        if header.operation == .reset {
            removeConnection(key)
            return
        }
        mutate(key, now: now) { $0.sendPacket(header, payload: payload, now: now) }
    }

    /// Connects a guest request for port P to `PATH_P`, or answers it with a reset.
    private func acceptGuestRequest(_ header: VsockHeader, now: UInt64) {
        let key = VsockConnectionKey(localPort: header.destinationPort, peerPort: header.sourcePort)
        guard let stream = try? backend.connect(port: header.destinationPort) else {
            rxQueue.push(.reset(localPort: key.localPort, peerPort: key.peerPort))
            return
        }
        let connection = VsockConnection.peerInitiated(stream: stream, guestCID: guestCID, localPort: key.localPort,
                                                       peerPort: key.peerPort, peerBufferAllocation: header.bufferAllocation)
        if !addConnection(key, connection, now: now) {
            rxQueue.push(.reset(localPort: key.localPort, peerPort: key.peerPort))
        }
    }

    // MARK: - Host readiness

    /// A watched host descriptor is ready.
    func hostReady(descriptor: Int32, events: VsockInterest, now: UInt64) {
        switch watched[descriptor] {
        case .connection(let key):
            mutate(key, now: now) { connection in
                connection.hostReady(readable: events.contains(.readable), writable: events.contains(.writable),
                                     hangUp: events.contains(.hangUp))
            }
        case .listener:
            acceptHostClient()
        case .handshake(let stream, let command):
            readCommand(stream, command: command, now: now)
        case nil:
            break
        }
    }

    /// Accepts one host client; it is refused (closed) when the connection table is full.
    private func acceptHostClient() {
        guard let stream = backend.accept() else { return }
        guard connections.count < Vsock.maxConnections else { return }
        watched[stream.pollDescriptor] = .handshake(stream, command: [])
        setInterest(stream.pollDescriptor, .readable)
    }

    /// Reads more of a host client's `CONNECT <port>\n` (never past the newline, so the
    /// data after it stays in the stream) and opens the connection once it is whole.
    private func readCommand(_ stream: any VsockHostStream, command: [UInt8], now: UInt64) {
        var command = command
        // At most up to the shortest command ("connect 0\n") first, then a byte at a time.
        let (result, bytes) = stream.read(maxCount: max(10, command.count + 1) - command.count)
        switch result {
        case .wouldBlock:
            return
        case .bytes:
            command += bytes
        case .endOfStream, .failed:
            dropHandshake(stream)
            return
        }
        switch Self.parseConnectCommand(command) {
        case .incomplete:
            watched[stream.pollDescriptor] = .handshake(stream, command: command)
        case .invalid:
            dropHandshake(stream)
        case .port(let peerPort):
            dropHandshake(stream)
            let localPort = allocateLocalPort()
            let key = VsockConnectionKey(localPort: localPort, peerPort: peerPort)
            let connection = VsockConnection.hostInitiated(stream: stream, guestCID: guestCID, localPort: localPort, peerPort: peerPort)
            if !addConnection(key, connection, now: now) { localPorts.remove(localPort) }
        }
    }

    /// Forgets a host client in its handshake (closing it when the caller drops it too).
    private func dropHandshake(_ stream: any VsockHostStream) {
        watched[stream.pollDescriptor] = nil
        setInterest(stream.pollDescriptor, [])
    }

    /// What a (partial) `CONNECT <port>\n` line says.
    enum ConnectCommand: Equatable {
        case incomplete
        case invalid
        case port(UInt32)
    }

    /// Parses a host client's command as Cloud Hypervisor does: `connect ` in any case,
    /// the port up to the newline (surrounding white space allowed), at most
    /// ``commandCapacity`` bytes.
    static func parseConnectCommand(_ command: [UInt8]) -> ConnectCommand {
        let prefix = Array("connect ".utf8)
        let newline = command.firstIndex(of: UInt8(ascii: "\n"))
        guard command.count >= prefix.count else { return newline == nil ? .incomplete : .invalid }
        let lowered = command[..<prefix.count].map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
        guard lowered == prefix else { return .invalid }
        guard let newline else { return command.count >= commandCapacity ? .invalid : .incomplete }
        guard let text = String(validating: command[prefix.count..<newline], as: UTF8.self) else { return .invalid }
        let trimmed = text.trimmingWhiteSpace
        guard let port = UInt32(trimmed) else { return .invalid }
        return .port(port)
    }

    // MARK: - Connections

    /// Adds a connection after killing those past their deadline; false when the table is
    /// full.
    private func addConnection(_ key: VsockConnectionKey, _ connection: VsockConnection, now: UInt64) -> Bool {
        for (expiredKey, expired) in connections where expired.hasExpired(now: now) {
            mutate(expiredKey, now: now) { $0.kill() }
        }
        guard connections.count < Vsock.maxConnections else { return false }
        connections[key] = connection
        watched[connection.stream.pollDescriptor] = .connection(key)
        setInterest(connection.stream.pollDescriptor, connection.interest)
        if connection.hasPendingRx { rxQueue.push(.connection(key)) }
        return true
    }

    /// Drops a connection: its stream is no longer watched and closes.
    private func removeConnection(_ key: VsockConnectionKey) {
        if let connection = connections.removeValue(forKey: key) {
            watched[connection.stream.pollDescriptor] = nil
            setInterest(connection.stream.pollDescriptor, [])
        }
        localPorts.remove(key.localPort)
    }

    /// Runs `change` on a connection, then does what its new state asks: the `OK <port>`
    /// acknowledgement when the guest accepted a host connection, a place in the receive
    /// queue, and the readiness to watch.
    private func mutate(_ key: VsockConnectionKey, now: UInt64, _ change: (VsockConnection) -> Void) {
        guard let connection = connections[key] else { return }
        let hadRx = connection.hasPendingRx
        let before = connection.state
        change(connection)
        if before == .localInit, connection.state == .established {
            if !connection.writeRaw(Array("OK \(key.localPort)\n".utf8)) { connection.kill() }
        }
        if !hadRx && connection.hasPendingRx { rxQueue.push(.connection(key)) }
        setInterest(connection.stream.pollDescriptor, connection.interest)
    }

    /// Tells the watcher when what `descriptor` is watched for changes (empty: not watched).
    private func setInterest(_ descriptor: Int32, _ interest: VsockInterest) {
        let old = interests[descriptor]
        if interest.isEmpty {
            if old != nil { watcher.unwatch(descriptor) }
            interests[descriptor] = nil
        } else if old != interest {
            watcher.watch(descriptor, interest: interest)
            interests[descriptor] = interest
        }
    }

    /// The next free host port for a host-initiated connection: from 2^30 upwards, below 2^31.
    private func allocateLocalPort() -> UInt32 {
        repeat {
            lastLocalPort = ((lastLocalPort &+ 1) & ~(1 << 31)) | (1 << 30)
        } while !localPorts.insert(lastLocalPort).inserted
        return lastLocalPort
    }
}

extension String {
    /// The string without leading and trailing white space (spaces, tabs, CR, LF, VT, FF).
    var trimmingWhiteSpace: String {
        let space: Set<Character> = [" ", "\t", "\r", "\n", "\u{0B}", "\u{0C}"]
        var characters = Substring(self)
        while let first = characters.first, space.contains(first) { characters.removeFirst() }
        while let last = characters.last, space.contains(last) { characters.removeLast() }
        return String(characters)
    }
}
