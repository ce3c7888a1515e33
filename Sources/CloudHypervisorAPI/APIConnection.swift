// One API connection as a state machine on the server's event loop thread: reads bytes and
// passed descriptors, assembles requests (pipelined ones queue up), caps bodies, times out
// slow senders, and writes the answers in order as the worker delivers them.
import HostSystem

/// Limits one connection enforces.
struct ConnectionLimits: Sendable {
    /// The largest body accepted, in bytes.
    var maxBodySize: Int
    /// How long a client may take to deliver a complete request (from the previous response,
    /// or from connecting), and how long an idle connection stays open.
    var requestTimeout: Duration
    /// Requests queued (pipelined) before the connection stops reading.
    var maxQueuedRequests: Int
    /// Descriptors accepted with one request (and with one `recvmsg`).
    var maxDescriptors: Int
}

/// What a connection needs from its server: the worker queue, the event loop, forgetting it.
protocol ConnectionHost: AnyObject {
    /// Hands a request to the worker; false when the server is stopping.
    func submit(_ request: APIRequest, from connection: UInt64) -> Bool
    /// Changes the events watched on a connection's descriptor.
    func watch(_ socket: UnixSocket, events: EpollEvents)
    /// Stops watching a connection's descriptor (its peer is gone) without forgetting it.
    func unwatch(_ socket: UnixSocket)
    /// Stops watching the connection and forgets it; its socket closes with it.
    func forget(_ connection: APIConnection)
}

/// Serves requests on one connection. Every method runs on the event loop thread.
final class APIConnection {
    /// A unit of work, answered in arrival order.
    private enum Work {
        /// A complete request.
        case request(APIRequest, keepAlive: Bool, minorVersion: Int)
        /// A refusal after which the connection closes.
        case refuse(APIError)
    }

    /// The server's name for this connection (descriptor numbers get reused; ids do not).
    let id: UInt64
    /// The accepted socket.
    let socket: UnixSocket
    private unowned let host: any ConnectionHost
    private let limits: ConnectionLimits
    private let clock = ContinuousClock()

    private var input = InputBuffer()
    private var parser: HTTPRequestParser
    /// Descriptors received and not yet attached, each stamped with the stream offset of the
    /// last byte that the `recvmsg` which delivered them returned. The kernel ends such a read
    /// with the first segment of the message the descriptors were sent with, so the request
    /// holding that byte is the one they came with.
    private var pendingDescriptors: [(offset: UInt64, descriptors: [OwnedFileDescriptor])] = []
    private var queue: [Work] = []
    /// The request at the worker, if one is: its method and whether to keep the connection.
    private var inFlight: (method: HTTPMethod, keepAlive: Bool, minorVersion: Int)?
    private var output: [UInt8] = []
    private var outputSent = 0
    private var closeWhenWritten = false
    /// A refusal is queued: whatever the client sends from now on is ignored.
    private var refusing = false
    private var inputClosed = false
    /// The peer is gone entirely (hang-up): finish the request at the worker, answer nothing.
    private var peerGone = false
    /// A `100 Continue` is owed to the request whose body is arriving.
    private var continueOwed = false
    /// Bytes arrived since the last complete request.
    private var bytesPending = false
    private var watching: EpollEvents = [.readable, .readHangUp]
    private(set) var deadline: ContinuousClock.Instant
    private(set) var isClosed = false

    init(id: UInt64, socket: UnixSocket, host: any ConnectionHost, limits: ConnectionLimits) {
        self.id = id
        self.socket = socket
        self.host = host
        self.limits = limits
        parser = HTTPRequestParser(maxBodySize: limits.maxBodySize)
        deadline = clock.now + limits.requestTimeout
    }

    /// The events the connection wants at registration.
    var initialEvents: EpollEvents { watching }

    private var busy: Bool { inFlight != nil || !output.isEmpty }

    /// Whether an answer is partly written.
    var isWriting: Bool { !output.isEmpty }

    // MARK: Events

    /// The descriptor is ready.
    func handle(_ events: EpollEvents) {
        guard !isClosed else { return }
        if events.contains(.writable) { flush() }
        if isClosed { return }
        if events.contains(.error) || events.contains(.hangUp) {
            // The peer closed both directions: take what it sent, then stop watching (hang-up
            // is reported for as long as the descriptor is watched).
            while !isClosed, !refusing, !inputClosed, readOnce() {}
            guard !isClosed else { return }
            peerGone = true
            if inFlight == nil {
                close()
            } else {
                host.unwatch(socket)
            }
            return
        }
        if watching.contains(.readable), events.contains(.readable) || events.contains(.readHangUp) {
            _ = readOnce()
        }
        updateInterest()
    }

    /// Reads once; returns whether more may be waiting.
    private func readOnce() -> Bool {
        let message: ReceivedMessage?
        do {
            message = try socket.receive(maxBytes: 65536, maxDescriptors: limits.maxDescriptors)
        } catch where error.isMessageTooLong {
            refuse(.malformedRequest("more than \(limits.maxDescriptors) file descriptors were passed with one message"))
            return false
        } catch {
            close()
            return false
        }
        guard let message else { return false }
        if message.isEndOfStream {
            endOfInput()
            return false
        }
        guard !refusing else { return true }
        bytesPending = true
        if !message.descriptors.isEmpty {
            let count = pendingDescriptors.reduce(0) { $0 + $1.descriptors.count } + message.descriptors.count
            guard count <= limits.maxDescriptors else {
                refuse(.malformedRequest("more than \(limits.maxDescriptors) file descriptors were passed with one request"))
                return false
            }
            pendingDescriptors.append((input.receivedOffset + UInt64(message.bytes.count) - 1, message.descriptors))
        }
        input.append(message.bytes)
        parseAvailable()
        return true
    }

    /// The client will send nothing more (it half-closed, or closed).
    private func endOfInput() {
        inputClosed = true
        if !refusing, !parser.isIdle || input.count > 0 {
            refuse(.malformedRequest("the connection ended in the middle of a request"))
        } else if !busy, queue.isEmpty {
            close()
        }
    }

    /// Cuts complete requests out of the buffered bytes while the queue has room.
    private func parseAvailable() {
        while !refusing, queue.count < limits.maxQueuedRequests {
            let event: HTTPRequestParser.Event?
            do {
                event = try parser.next(&input)
            } catch {
                refuse(error)
                return
            }
            guard let event else { break }
            switch event {
            case let .head(expectsContinue):
                continueOwed = expectsContinue
            case let .request(head, body, end):
                continueOwed = false
                var descriptors: [OwnedFileDescriptor] = []
                while let first = pendingDescriptors.first, first.offset < end {
                    descriptors += first.descriptors
                    pendingDescriptors.removeFirst()
                }
                let request = APIRequest(method: head.method, uri: head.target, body: body.isEmpty ? nil : body,
                                         fileDescriptors: descriptors)
                queue.append(.request(request, keepAlive: head.keepAlive, minorVersion: head.minorVersion))
                bytesPending = input.count > 0
                armDeadline()
            }
        }
        processNext()
        sendContinueIfOwed()
    }

    // MARK: Answering

    /// Queues a refusal; everything after it is ignored and the connection closes once the
    /// refusal is written. Descriptors not yet attached to a request are closed.
    private func refuse(_ error: APIError) {
        guard !refusing else { return }
        refusing = true
        continueOwed = false
        parser.reset()
        input.discardAll()
        pendingDescriptors = []
        queue.append(.refuse(error))
        processNext()
        updateInterest()
    }

    /// Starts the next queued work if nothing is in progress.
    private func processNext() {
        guard !isClosed, !busy, !queue.isEmpty else { return }
        switch queue.removeFirst() {
        case let .refuse(error):
            write(APIResponse(error: error), method: .GET, keepAlive: false, minorVersion: 1)
        case let .request(request, keepAlive, minorVersion):
            inFlight = (request.method, keepAlive, minorVersion)
            guard host.submit(request, from: id) else {
                close()
                return
            }
        }
        // A slot freed: requests already buffered may now be parsed.
        if !refusing, input.count > 0, queue.count < limits.maxQueuedRequests { parseAvailable() }
    }

    /// The worker answered the request in flight.
    func completed(_ response: APIResponse) {
        guard !isClosed, let request = inFlight else { return }
        inFlight = nil
        if peerGone {
            close()
            return
        }
        write(response, method: request.method, keepAlive: request.keepAlive, minorVersion: request.minorVersion)
    }

    private func write(_ response: APIResponse, method: HTTPMethod, keepAlive: Bool, minorVersion: Int) {
        let keepAlive = keepAlive && !(inputClosed && queue.isEmpty)
        output += Self.encode(response, method: method, keepAlive: keepAlive, minorVersion: minorVersion)
        closeWhenWritten = !keepAlive
        flush()
    }

    /// Sends `100 Continue` when the request whose body is awaited is the next to answer.
    private func sendContinueIfOwed() {
        guard continueOwed, !busy, queue.isEmpty, !refusing, !isClosed else { return }
        continueOwed = false
        output = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
        flush()
    }

    /// Writes what it can of the output; when all is written, goes on with the next work.
    private func flush() {
        while outputSent < output.count {
            let sent: Int?
            do {
                sent = try socket.send(output[outputSent...])
            } catch {
                close()
                return
            }
            guard let sent else {
                updateInterest()
                return
            }
            outputSent += sent
        }
        output = []
        outputSent = 0
        if closeWhenWritten {
            close()
            return
        }
        armDeadline()
        processNext()
        sendContinueIfOwed()
        if inputClosed, !busy, queue.isEmpty { close() }
        updateInterest()
    }

    /// One response's bytes: status line, headers, body.
    static func encode(_ response: APIResponse, method: HTTPMethod, keepAlive: Bool, minorVersion: Int) -> [UInt8] {
        let body = response.body ?? []
        var text = "HTTP/1.1 \(response.status.code) \(response.status.reasonPhrase)\r\nServer: Cloud Hypervisor API (Swift)\r\n"
        // RFC 9110 section 8.6: no Content-Length on a 1xx or 204 answer.
        if response.status.code >= 200, response.status != .noContent {
            if !body.isEmpty { text += "Content-Type: application/json\r\n" }
            text += "Content-Length: \(body.count)\r\n"
        }
        if !keepAlive {
            text += "Connection: close\r\n"
        } else if minorVersion == 0 {
            text += "Connection: keep-alive\r\n"
        }
        text += "\r\n"
        var bytes = Array(text.utf8)
        if method != .HEAD { bytes += body }
        return bytes
    }

    // MARK: Interest, time-outs, closing

    /// Watches for reading while requests may come and there is room, for writing while
    /// output is pending.
    private func updateInterest() {
        guard !isClosed else { return }
        var wanted: EpollEvents = []
        if !refusing, !inputClosed, queue.count < limits.maxQueuedRequests { wanted.formUnion([.readable, .readHangUp]) }
        if !output.isEmpty { wanted.insert(.writable) }
        if wanted != watching {
            watching = wanted
            host.watch(socket, events: wanted)
        }
    }

    private func armDeadline() {
        deadline = clock.now + limits.requestTimeout
    }

    /// Acts on a passed deadline: a slow sender gets 408, an idle connection is closed, a
    /// client that does not read its answers is dropped; a busy VMM just moves the deadline.
    func deadlinePassed() {
        guard !isClosed else { return }
        if inFlight != nil || (output.isEmpty && !queue.isEmpty) {
            armDeadline()
        } else if !output.isEmpty || refusing {
            close()
        } else if bytesPending || !parser.isIdle || input.count > 0 {
            let parts = limits.requestTimeout.components
            refuse(.requestTimeout(seconds: Double(parts.seconds) + Double(parts.attoseconds) / 1e18))
            armDeadline()
        } else {
            close()
        }
    }

    /// Closes the connection: descriptors and requests not yet sent to the worker are dropped.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        queue = []
        pendingDescriptors = []
        input.discardAll()
        host.forget(self)
    }
}
