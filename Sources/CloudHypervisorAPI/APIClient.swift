// A small blocking HTTP/1.1 client for the API socket: what ch-remote, the benchmark and
// the tests use. Requests carry Content-Length; responses are read by Content-Length.
import NIOCore
import NIOPosix

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

/// A blocking client on one connection. Not for use from a SwiftNIO event loop thread.
public final class APIClient: Sendable {
    private let channel: any Channel
    private let collector: ResponseCollector
    /// How long one exchange may take.
    public let timeout: TimeAmount

    /// Connects to the API socket at `socketPath`.
    public init(socketPath: String, timeout: TimeAmount = .seconds(30),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws(APIClientError) {
        let collector = ResponseCollector()
        do {
            channel = try ClientBootstrap(group: group)
                .connectTimeout(.seconds(5))
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
                }
                .connect(unixDomainSocketPath: socketPath).wait()
        } catch {
            throw .connectFailed(path: socketPath, reason: "\(error)")
        }
        self.collector = collector
        self.timeout = timeout
    }

    deinit {
        channel.close(promise: nil)
    }

    /// Sends one request and waits for its response.
    public func request(_ method: String, _ path: String, body: [UInt8]? = nil) throws(APIClientError) -> APIClientResponse {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n"
        if let body {
            text += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        }
        text += "\r\n"
        let responses = try exchange(Array(text.utf8) + (body ?? []), expecting: 1)
        guard let first = responses.first else {
            throw .connectionLost("the server closed the connection without answering")
        }
        return first
    }

    /// Sends raw bytes and waits until `count` responses arrived or the server closed the
    /// connection; returns the responses received (for pipelining and bad-input tests).
    public func exchange(_ bytes: [UInt8], expecting count: Int) throws(APIClientError) -> [APIClientResponse] {
        let promise = channel.eventLoop.makePromise(of: [APIClientResponse].self)
        let collector = self.collector
        let deadline = timeout
        channel.eventLoop.execute {
            collector.await(count, promise: promise, timeout: deadline)
        }
        if !bytes.isEmpty {
            channel.writeAndFlush(channel.allocator.buffer(bytes: bytes), promise: nil)
        }
        do {
            return try promise.futureResult.wait()
        } catch let error as APIClientError {
            throw error
        } catch {
            throw .connectionLost("\(error)")
        }
    }

    /// Sends bytes without waiting for anything.
    public func send(_ bytes: [UInt8]) throws(APIClientError) {
        do {
            try channel.writeAndFlush(channel.allocator.buffer(bytes: bytes)).wait()
        } catch {
            throw .connectionLost("\(error)")
        }
    }

    /// Half-closes the connection: the server sees the end of input.
    public func shutdownOutput() {
        try? channel.close(mode: .output).wait()
    }

    /// Whether the server closed the connection (waits up to `within` for it).
    public func waitForClose(within: TimeAmount = .seconds(5)) -> Bool {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.closeFuture.cascade(to: promise)
        let timer = channel.eventLoop.scheduleTask(in: within) { promise.fail(APIClientError.timedOut(seconds: 0)) }
        defer { timer.cancel() }
        return (try? promise.futureResult.wait()) != nil
    }

    /// Closes the connection.
    public func close() {
        try? channel.close().wait()
    }
}

/// Collects response bytes on the event loop and cuts them into responses.
private final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    // Touched only on the channel's event loop (handler callbacks and `execute` blocks).
    typealias InboundIn = ByteBuffer

    private var buffer: [UInt8] = []
    private var responses: [APIClientResponse] = []
    private var waiter: (count: Int, promise: EventLoopPromise<[APIClientResponse]>, timer: Scheduled<Void>)?
    private var closed = false
    private var failure: APIClientError?

    func await(_ count: Int, promise: EventLoopPromise<[APIClientResponse]>, timeout: TimeAmount) {
        let timer = promise.futureResult.eventLoop.scheduleTask(in: timeout) { [self] in
            fail(.timedOut(seconds: Double(timeout.nanoseconds) / 1e9))
        }
        waiter = (count, promise, timer)
        settle()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        buffer.append(contentsOf: unwrapInboundIn(data).readableBytesView)
        do {
            while let (response, used) = try Self.parse(buffer) {
                buffer.removeFirst(used)
                // Interim responses (100 Continue) announce the real one; they are not kept.
                if !(100..<200).contains(response.status) { responses.append(response) }
            }
        } catch {
            failure = error
        }
        settle()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            closed = true
            settle()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        settle()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func fail(_ error: APIClientError) {
        guard let waiter else { return }
        self.waiter = nil
        waiter.promise.fail(error)
    }

    private func settle() {
        guard let waiter else { return }
        if let failure {
            self.failure = nil
            fail(failure)
            return
        }
        guard responses.count >= waiter.count || closed else { return }
        let taken = Array(responses.prefix(waiter.count))
        responses.removeFirst(taken.count)
        waiter.timer.cancel()
        self.waiter = nil
        waiter.promise.succeed(taken)
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
