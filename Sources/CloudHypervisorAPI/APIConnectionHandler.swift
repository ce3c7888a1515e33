// One API connection: assembles HTTP/1.1 requests (pipelined ones queue up), caps bodies,
// times out slow senders, and answers each request in order from the worker thread pool.
import NIOCore
import NIOHTTP1
import NIOPosix

/// Limits one connection enforces.
struct ConnectionLimits: Sendable {
    /// The largest body accepted, in bytes.
    var maxBodySize: Int
    /// How long a client may take to deliver a complete request (from the previous response,
    /// or from connecting), and how long an idle connection stays open.
    var requestTimeout: TimeAmount
    /// Requests queued (pipelined) before the connection stops reading.
    var maxQueuedRequests: Int
}

/// Notes whether bytes arrived since the last complete request, so a timeout can tell a slow
/// sender (answered 408) from an idle keep-alive connection (closed quietly). Sits before the
/// HTTP decoder.
final class InboundActivity: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// Set when bytes arrive; cleared when a request is complete.
    var bytesPending = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        bytesPending = true
        context.fireChannelRead(data)
    }
}

/// Serves requests on one connection.
final class APIConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// A unit of work, answered in arrival order.
    private enum Work {
        /// A complete request.
        case request(APIRequest, keepAlive: Bool)
        /// A refusal after which the connection closes.
        case refuse(APIError)
    }

    private struct Partial {
        var head: HTTPRequestHead
        var body: ByteBuffer?
        var size = 0
    }

    private let router: APIRouter
    private let pool: NIOThreadPool
    private let limits: ConnectionLimits
    private let activity: InboundActivity
    private var partial: Partial?
    private var queue: [Work] = []
    private var busy = false
    /// A refusal is queued: everything the client sends from now on is ignored.
    private var refusing = false
    private var inputClosed = false
    private var open = true
    private var heldRead = false
    private var deadline: Scheduled<Void>?

    init(router: APIRouter, pool: NIOThreadPool, limits: ConnectionLimits, activity: InboundActivity) {
        self.router = router
        self.pool = pool
        self.limits = limits
        self.activity = activity
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armDeadline(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armDeadline(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        open = false
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refusing else { return }
        switch unwrapInboundIn(data) {
        case let .head(head):
            partial = Partial(head: head)
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limits.maxBodySize {
                refuse(.bodyTooLarge(limit: limits.maxBodySize), context: context)
                return
            }
            if head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }), !busy, queue.isEmpty {
                let interim = HTTPResponseHead(version: .http1_1, status: .continue)
                context.writeAndFlush(wrapOutboundOut(.head(interim)), promise: nil)
            }
        case var .body(chunk):
            guard var current = partial else { return }
            current.size += chunk.readableBytes
            guard current.size <= limits.maxBodySize else {
                refuse(.bodyTooLarge(limit: limits.maxBodySize), context: context)
                return
            }
            if current.body == nil {
                current.body = chunk
            } else {
                current.body!.writeBuffer(&chunk)
            }
            partial = current
        case .end:
            guard let current = partial else { return }
            partial = nil
            activity.bytesPending = false
            let body = current.body.map { Array($0.readableBytesView) }
            let request = APIRequest(method: current.head.method, uri: current.head.uri, body: body)
            queue.append(.request(request, keepAlive: current.head.isKeepAlive))
            armDeadline(context: context)
            processNext(context: context)
        }
    }

    func read(context: ChannelHandlerContext) {
        // Back-pressure: a client that pipelines more than the limit waits for answers.
        if queue.count >= limits.maxQueuedRequests {
            heldRead = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            // The client sent its last byte (half-close): answer what is queued, then close.
            inputClosed = true
            if partial != nil, !refusing {
                refuse(.malformedRequest("the connection ended in the middle of a request"), context: context)
            } else if !busy, queue.isEmpty {
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if refusing { return }
        if let parserError = error as? HTTPParserError {
            refuse(.malformedRequest("\(parserError)"), context: context)
        } else {
            context.close(promise: nil)
        }
    }

    // MARK: Answering

    private func refuse(_ error: APIError, context: ChannelHandlerContext) {
        refusing = true
        partial = nil
        queue.append(.refuse(error))
        processNext(context: context)
    }

    private func processNext(context: ChannelHandlerContext) {
        guard open, !busy, !queue.isEmpty else { return }
        let work = queue.removeFirst()
        busy = true
        switch work {
        case let .refuse(error):
            write(APIResponse(error: error), method: .GET, keepAlive: false, context: context)
        case let .request(request, keepAlive):
            let router = self.router
            pool.runIfActive(eventLoop: context.eventLoop) { router.respond(to: request) }
                .assumeIsolated()
                .whenComplete { [self] result in
                    guard open else { return }
                    switch result {
                    case let .success(response):
                        write(response, method: request.method, keepAlive: keepAlive, context: context)
                    case .failure:
                        // The worker pool is gone: the server is stopping.
                        context.close(promise: nil)
                    }
                }
        }
        if heldRead, queue.count < limits.maxQueuedRequests {
            heldRead = false
            context.read()
        }
    }

    private func write(_ response: APIResponse, method: HTTPMethod, keepAlive: Bool, context: ChannelHandlerContext) {
        let keepAlive = keepAlive && !(inputClosed && queue.isEmpty)
        var headers = HTTPHeaders()
        headers.add(name: "Server", value: "Cloud Hypervisor API (Swift)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(response.body?.count ?? 0))
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: .http1_1, status: response.status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body = response.body, !body.isEmpty, method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        done.futureResult.assumeIsolated().whenComplete { [self] _ in
            busy = false
            if !keepAlive {
                context.close(promise: nil)
                return
            }
            armDeadline(context: context)
            processNext(context: context)
        }
    }

    // MARK: Time-outs

    private func armDeadline(context: ChannelHandlerContext) {
        deadline?.cancel()
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: limits.requestTimeout) {
            loopBoundSelf.value.deadlinePassed(context: loopBoundContext.value)
        }
    }

    private func deadlinePassed(context: ChannelHandlerContext) {
        guard open, !refusing else { return }
        if busy || !queue.isEmpty {
            // The VMM is still working on earlier requests: the client is not the slow one.
            armDeadline(context: context)
        } else if partial != nil || activity.bytesPending {
            let seconds = Double(limits.requestTimeout.nanoseconds) / 1e9
            refuse(.requestTimeout(seconds: seconds), context: context)
        } else {
            context.close(promise: nil)
        }
    }
}
