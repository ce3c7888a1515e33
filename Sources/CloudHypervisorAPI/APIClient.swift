// A small blocking HTTP/1.1 client for the API socket: what ch-remote, the benchmark and
// the tests use. Requests carry Content-Length; responses are read by Content-Length.
// Descriptors can travel with a request (SCM_RIGHTS), as libvirt and Kata pass TAP devices.
import HostSystem
import Synchronization

/// Why a client request failed (transport, not HTTP status).
public enum APIClientError: Error, Sendable, CustomStringConvertible {
    /// Connecting to the socket failed.
    case connectFailed(path: String, reason: String)
    /// Sending failed or the server closed the connection early.
    case connectionLost(String)
    /// No complete response within the time limit.
    case timedOut(seconds: Double)
    /// The server's bytes are not an HTTP/1.1 response.
    case malformedResponse(String)

    /// A sentence for the user.
    public var description: String {
        switch self {
        case let .connectFailed(path, reason): "cannot connect to the API socket \(path): \(reason)"
        case let .connectionLost(reason): "the API connection was lost: \(reason)"
        case let .timedOut(seconds): "no response from the API within \(seconds) seconds"
        case let .malformedResponse(reason): "the API's response is not HTTP/1.1: \(reason)"
        }
    }
}

/// One HTTP response.
public struct APIClientResponse: Sendable, Equatable {
    /// The status code.
    public var status: Int
    /// The reason phrase.
    public var reason: String
    /// The headers, in order.
    public var headers: [HeaderField]
    /// The body bytes.
    public var body: [UInt8]

    /// One header line.
    public struct HeaderField: Sendable, Equatable {
        /// The name as sent.
        public var name: String
        /// The value.
        public var value: String
    }

    /// The first value of header `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// The body as UTF-8 text.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// Whether the status is 2xx.
    public var isSuccess: Bool { (200..<300).contains(status) }
}

/// A blocking client on one connection. One thread at a time may use it.
public final class APIClient: Sendable {
    private struct Connection {
        var socket: UnixSocket?
        var buffer: [UInt8] = []
        var responses: [APIClientResponse] = []
        var closed = false
    }

    private let connection: Mutex<Connection>
    /// How long one exchange may take.
    public let timeout: Duration

    /// Connects to the API socket at `socketPath`.
    public init(socketPath: String, timeout: Duration = .seconds(30)) throws(APIClientError) {
        do {
            connection = Mutex(Connection(socket: try UnixSocket.connect(to: socketPath)))
        } catch {
            throw .connectFailed(path: socketPath, reason: error.reason)
        }
        self.timeout = timeout
    }

    /// Sends one request and waits for its response. `fileDescriptors` travel with the
    /// request's first bytes as SCM_RIGHTS ancillary data (the server gets its own copies;
    /// the caller keeps and closes its own).
    public func request(_ method: String, _ path: String, body: [UInt8]? = nil,
                        fileDescriptors: [Int32] = []) throws(APIClientError) -> APIClientResponse {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n"
        if let body {
            text += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        }
        text += "\r\n"
        let responses = try exchange(Array(text.utf8) + (body ?? []), expecting: 1, fileDescriptors: fileDescriptors)
        guard let first = responses.first else {
            throw .connectionLost("the server closed the connection without answering")
        }
        return first
    }

    /// Sends raw bytes (and descriptors with them) and waits until `count` responses arrived
    /// or the server closed the connection; returns the responses received (for pipelining
    /// and bad-input tests).
    public func exchange(_ bytes: [UInt8], expecting count: Int,
                         fileDescriptors: [Int32] = []) throws(APIClientError) -> [APIClientResponse] {
        if !bytes.isEmpty || !fileDescriptors.isEmpty { try send(bytes, fileDescriptors: fileDescriptors) }
        let deadline = ContinuousClock.now + timeout
        while true {
            let ready = connection.withLock { connection -> [APIClientResponse]? in
                guard connection.responses.count >= count || connection.closed else { return nil }
                let taken = Array(connection.responses.prefix(count))
                connection.responses.removeFirst(taken.count)
                return taken
            }
            if let ready { return ready }
            guard try receive(until: deadline) else {
                let parts = timeout.components
                throw .timedOut(seconds: Double(parts.seconds) + Double(parts.attoseconds) / 1e18)
            }
        }
    }

    /// Sends bytes (and descriptors with them) without waiting for anything.
    public func send(_ bytes: [UInt8], fileDescriptors: [Int32] = []) throws(APIClientError) {
        guard let socket = connection.withLock({ $0.socket }) else { throw .connectionLost("the client was closed") }
        do {
            try socket.sendAll(bytes, descriptors: fileDescriptors)
        } catch {
            throw .connectionLost("\(error)")
        }
    }

    /// Half-closes the connection: the server sees the end of input.
    public func shutdownOutput() {
        try? connection.withLock { $0.socket }?.shutdown(.writing)
    }

    /// Whether the server closed the connection (waits up to `within` for it). Responses that
    /// arrive meanwhile are kept for `exchange`.
    public func waitForClose(within: Duration = .seconds(5)) -> Bool {
        let deadline = ContinuousClock.now + within
        while !connection.withLock({ $0.closed }) {
            guard (try? receive(until: deadline)) == true else { return false }
        }
        return true
    }

    /// Closes the connection.
    public func close() {
        connection.withLock { connection in
            connection.socket = nil
            connection.closed = true
        }
    }

    /// Reads once (waiting until `deadline`) and cuts what arrived into responses. False when
    /// the deadline passed first.
    private func receive(until deadline: ContinuousClock.Instant) throws(APIClientError) -> Bool {
        guard let socket = connection.withLock({ $0.socket }) else {
            connection.withLock { $0.closed = true }
            return true
        }
        let left = deadline - ContinuousClock.now
        guard left > .zero else { return false }
        let parts = left.components
        let milliseconds = Int32(clamping: parts.seconds * 1000 + (parts.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
        let message: ReceivedMessage?
        do {
            guard try socket.wait(for: .readable, timeoutMilliseconds: milliseconds) else { return false }
            message = try socket.receive()
        } catch {
            // A reset after the server closed with our bytes unread: the connection is over.
            connection.withLock { $0.closed = true }
            return true
        }
        guard let message else { return true }
        return try connection.withLock { (connection) throws(APIClientError) -> Bool in
            if message.isEndOfStream {
                connection.closed = true
                return true
            }
            connection.buffer += message.bytes
            while let (response, used) = try Self.parse(connection.buffer) {
                connection.buffer.removeFirst(used)
                // Interim responses (100 Continue) announce the real one; they are not kept.
                if !(100..<200).contains(response.status) { connection.responses.append(response) }
            }
            return true
        }
    }

    /// One response from the front of `bytes` and how many bytes it used, or nil if incomplete.
    static func parse(_ bytes: [UInt8]) throws(APIClientError) -> (APIClientResponse, Int)? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard bytes.count >= 4,
            let headerEnd = (0...(bytes.count - 4)).first(where: { bytes[$0..<($0 + 4)].elementsEqual(separator) })
        else { return nil }
        let lines = String(decoding: bytes[..<headerEnd], as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = lines[0].split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw .malformedResponse("status line '\(lines[0])'")
        }
        var headers: [APIClientResponse.HeaderField] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { throw .malformedResponse("header line '\(line)'") }
            let value = line[line.index(after: colon)...].drop(while: { $0 == " " || $0 == "\t" })
            headers.append(.init(name: String(line[..<colon]), value: String(value)))
        }
        let response = APIClientResponse(
            status: status, reason: statusParts.count > 2 ? String(statusParts[2]) : "", headers: headers, body: [])
        // Interim responses (100 Continue) have no body.
        var length = 0
        if !(100..<200).contains(status), let text = response.header("content-length") {
            guard let value = Int(text), value >= 0 else { throw .malformedResponse("Content-Length '\(text)'") }
            length = value
        }
        let bodyStart = headerEnd + 4
        guard bytes.count >= bodyStart + length else { return nil }
        var complete = response
        complete.body = Array(bytes[bodyStart..<(bodyStart + length)])
        return (complete, bodyStart + length)
    }
}
