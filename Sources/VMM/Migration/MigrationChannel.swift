// One migration connection, over `unix:PATH` or `tcp:HOST:PORT` as Cloud Hypervisor's
// destination and receiver URLs name them: exact reads and writes of requests, responses and
// payloads, guest memory moved straight between the socket and the guest's mapping, and (on a
// Unix socket) descriptors passed with SCM_RIGHTS for `local=on`.
import HostSystem

/// Where a migration connects or listens.
enum MigrationAddress: Equatable, CustomStringConvertible {
    case unix(String)
    case tcp(host: String, port: UInt16)

    /// Parses `unix:PATH` or `tcp:HOST:PORT` (`tcp:[IPV6]:PORT`).
    init(url: String) throws(MigrationError) {
        if url.hasPrefix("unix:") {
            let path = String(url.dropFirst(5))
            guard !path.isEmpty else { throw MigrationError("'\(url)' names no socket path: use unix:/path/to/socket") }
            self = .unix(path)
        } else if url.hasPrefix("tcp:") {
            do {
                let (host, port) = try TCPSocket.split(String(url.dropFirst(4)))
                self = .tcp(host: host, port: port)
            } catch {
                throw MigrationError("'\(url)' is not a TCP address: \(error)")
            }
        } else {
            throw MigrationError("'\(url)' is not a migration URL: use unix:/path/to/socket or tcp:host:port")
        }
    }

    var description: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case let .tcp(host, port): "tcp:\(host.contains(":") ? "[\(host)]" : host):\(port)"
        }
    }
}

/// A listening migration socket (the receiver's).
final class MigrationListener {
    private enum Socket {
        case unix(UnixSocket, path: String)
        case tcp(TCPSocket)
    }
    private let socket: Socket
    let address: MigrationAddress

    /// Binds and listens at `address`.
    init(_ address: MigrationAddress) throws(MigrationError) {
        self.address = address
        do {
            switch address {
            case .unix(let path): socket = .unix(try UnixSocket.listening(at: path, backlog: 4), path: path)
            case let .tcp(host, port): socket = .tcp(try TCPSocket.listening(host: host, port: port, backlog: 4))
            }
        } catch {
            throw MigrationError("cannot listen at \(address): \(error)")
        }
    }

    deinit {
        if case .unix(_, let path) = socket { UnixSocket.removeSocketFile(at: path) }
    }

    /// The TCP port (for a listener asked for port 0), or nil for a Unix socket.
    var tcpPort: UInt16? {
        if case .tcp(let listener) = socket { return try? listener.localPort() }
        return nil
    }

    /// Waits for the sender, for at most `timeoutMilliseconds` (-1: no limit).
    func accept(timeoutMilliseconds: Int32 = -1) throws(MigrationError) -> MigrationChannel {
        do {
            switch socket {
            case .unix(let listener, _):
                guard try listener.wait(for: .readable, timeoutMilliseconds: timeoutMilliseconds), let connection = try listener.accept() else {
                    throw MigrationError("no sender connected to \(address) in time")
                }
                try connection.descriptor.setNonBlocking(false)
                return MigrationChannel(unix: connection)
            case .tcp(let listener):
                guard let connection = try listener.accept(timeoutMilliseconds: timeoutMilliseconds) else {
                    throw MigrationError("no sender connected to \(address) in time")
                }
                return MigrationChannel(tcp: connection)
            }
        } catch let error as MigrationError {
            throw error
        } catch {
            throw MigrationError("cannot accept the sender at \(address): \(error)")
        }
    }
}

/// One end of a migration connection, blocking.
final class MigrationChannel {
    private let unix: UnixSocket?
    private let tcp: TCPSocket?
    private let descriptor: OwnedFileDescriptor
    /// Bytes moved, both ways (for the migration's figures).
    private(set) var bytesSent: UInt64 = 0

    init(unix: UnixSocket) {
        self.unix = unix
        tcp = nil
        descriptor = unix.descriptor
    }

    init(tcp: TCPSocket) {
        unix = nil
        self.tcp = tcp
        descriptor = tcp.descriptor
    }

    /// Connects to the receiver at `address`.
    static func connect(to address: MigrationAddress) throws(MigrationError) -> MigrationChannel {
        do {
            switch address {
            case .unix(let path): return MigrationChannel(unix: try UnixSocket.connect(to: path))
            case let .tcp(host, port): return MigrationChannel(tcp: try TCPSocket.connect(host: host, port: port))
            }
        } catch {
            throw MigrationError("cannot connect to \(address): \(error)")
        }
    }

    /// Whether descriptors can be passed (a Unix socket).
    var passesDescriptors: Bool { unix != nil }

    /// Ends both directions, which wakes a peer blocked on this connection.
    func close() {
        try? unix?.shutdown(.both)
        try? tcp?.shutdown()
    }

    // MARK: - Bytes

    /// Reads exactly `count` bytes.
    func read(_ count: Int) throws(MigrationError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: MigrationError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(MigrationError) { try readFully(into: buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Reads exactly `buffer.count` bytes into `buffer` (guest memory, for `Memory`).
    func readFully(into buffer: UnsafeMutableRawBufferPointer) throws(MigrationError) {
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try descriptor.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                throw MigrationError("the migration connection failed while reading: \(error)")
            }
            guard n > 0 else { throw MigrationError("the peer closed the migration connection (\(done) of \(buffer.count) bytes read)") }
            done += n
        }
    }

    /// Writes all of `bytes`.
    func write(_ bytes: [UInt8]) throws(MigrationError) {
        var failure: MigrationError?
        bytes.withUnsafeBytes { buffer in
            do throws(MigrationError) { try writeFully(buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Writes all of `buffer` (guest memory, for `Memory`).
    func writeFully(_ buffer: UnsafeRawBufferPointer) throws(MigrationError) {
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try descriptor.sendWithoutSignal(UnsafeRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                throw MigrationError("the migration connection failed while writing: \(error)")
            }
            done += n
        }
        bytesSent += UInt64(buffer.count)
    }

    // MARK: - Messages

    func send(_ request: MigrationRequest, payload: [UInt8] = []) throws(MigrationError) {
        try write(request.bytes + payload)
    }

    func receiveRequest() throws(MigrationError) -> MigrationRequest {
        try MigrationRequest(decoding: read(MigrationRequest.size))
    }

    func send(_ response: MigrationResponse) throws(MigrationError) {
        try write(response.bytes)
    }

    /// Reads a response and fails unless it is OK, naming `step`.
    func expectOK(after step: String) throws(MigrationError) {
        let response = try MigrationResponse(decoding: read(MigrationResponse.size))
        guard response.status == .ok else { throw MigrationError("the destination refused \(step)") }
    }

    /// Sends `payload` with one descriptor (`SCM_RIGHTS`; a Unix socket only).
    func send(_ payload: [UInt8], descriptor passed: Int32) throws(MigrationError) {
        guard let unix else { throw MigrationError("descriptors pass only over a unix: migration socket") }
        do { try unix.sendAll(payload, descriptors: [passed]) } catch { throw MigrationError("cannot pass a memory descriptor: \(error)") }
    }

    /// Reads exactly `count` bytes and the one descriptor passed with them.
    func receiveWithDescriptor(_ count: Int) throws(MigrationError) -> ([UInt8], OwnedFileDescriptor) {
        guard let unix else { throw MigrationError("a memory descriptor can only come over a unix: migration socket") }
        var bytes: [UInt8] = []
        var descriptors: [OwnedFileDescriptor] = []
        while bytes.count < count {
            let message: ReceivedMessage?
            do { message = try unix.receive(maxBytes: count - bytes.count, maxDescriptors: 4) } catch {
                throw MigrationError("cannot receive a memory descriptor: \(error)")
            }
            guard let message, !message.isEndOfStream else { throw MigrationError("the peer closed the migration connection") }
            bytes += message.bytes
            descriptors += message.descriptors
        }
        guard descriptors.count == 1, let descriptor = descriptors.first else {
            throw MigrationError("MemoryFd came with \(descriptors.count) descriptors, expected 1")
        }
        return (bytes, descriptor)
    }
}
