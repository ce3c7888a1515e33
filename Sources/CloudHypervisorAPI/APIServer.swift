// The REST API server: HTTP/1.1 on a Unix socket (created at a path, or inherited as a
// descriptor), answering from a worker thread so the event loop never blocks on the VMM.
import Glibc
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import VMM

/// Why the API server could not start.
public enum APIServerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Another process answers on the socket path.
    case socketInUse(path: String)
    /// Binding the socket path failed.
    case bindFailed(path: String, reason: String)
    /// The inherited descriptor is not a usable Unix stream socket.
    case badDescriptor(fd: Int32, reason: String)
    /// `start()` was called twice, or after `stop()`.
    case alreadyStarted
    /// ``APIServer/Configuration/threadSetup`` failed on one of the server's threads.
    case threadSetupFailed(reason: String)

    /// A sentence naming the option and the cause.
    public var description: String {
        switch self {
        case let .socketInUse(path):
            "--api-socket: \(path) is in use by another running VMM; stop it or choose another path"
        case let .bindFailed(path, reason):
            "--api-socket: cannot listen on \(path): \(reason)"
        case let .badDescriptor(fd, reason):
            "--api-socket: fd=\(fd) cannot be used: \(reason); pass a bound AF_UNIX stream socket"
        case .alreadyStarted:
            "the API server was already started"
        case let .threadSetupFailed(reason):
            "the API server's threads could not be set up: \(reason)"
        }
    }
}

/// Serves Cloud Hypervisor's REST API (`/api/v1/...`) for a `VMMControl`.
///
/// ```swift
/// let server = APIServer(socket: try APISocketConfig.parse("path=/run/ch.sock"), control: controller)
/// try server.start()
/// ...
/// server.stop()
/// ```
public final class APIServer: Sendable {
    /// The server's threads, for ``Configuration/threadSetup``.
    public enum ThreadRole: Sendable, Equatable {
        /// The SwiftNIO event loop thread: the socket and HTTP.
        case eventLoop
        /// A worker thread that runs `VMMControl` actions.
        case worker
    }

    /// Tunables; the defaults suit a VMM.
    public struct Configuration: Sendable {
        /// The largest request body accepted (a `VmConfig` is a few KiB). Default 1 MiB.
        public var maxBodySize = 1 << 20
        /// How long a client may take to send one complete request, and how long an idle
        /// connection is kept. Default 10 seconds.
        public var requestTimeout = TimeAmount.seconds(10)
        /// Threads that run VMMControl calls. Default 1, which serializes actions as Cloud
        /// Hypervisor's single VMM thread does.
        public var workerThreads = 1
        /// Pipelined requests queued per connection before it stops reading. Default 16.
        public var maxQueuedRequests = 16
        /// Runs once on each of the server's threads before the socket is bound, so before
        /// anything is served (the VMM installs each thread's seccomp filter here). An error
        /// makes `start()` fail. Default none.
        public var threadSetup: (@Sendable (ThreadRole) throws -> Void)?

        /// The defaults.
        public init() {}
    }

    private struct Running {
        var group: MultiThreadedEventLoopGroup
        var pool: NIOThreadPool
        var channel: any Channel
    }

    private enum State {
        case idle
        case running(Running)
        case stopped
    }

    /// Where the server listens.
    public let socket: APISocketConfig
    /// The VMM it controls.
    public let control: any VMMControl
    /// Its tunables.
    public let configuration: Configuration
    private let logger: Logger
    private let state = Mutex<State>(.idle)

    /// Creates a server for `control` on `socket`; nothing happens until `start()`.
    public init(socket: APISocketConfig, control: any VMMControl, configuration: Configuration = Configuration(),
                logger: Logger = Logger(label: "cloud-hypervisor.api")) {
        self.socket = socket
        self.control = control
        self.configuration = configuration
        self.logger = logger
    }

    /// A server that creates (binds) a Unix socket at `socketPath`.
    public convenience init(socketPath: String, control: any VMMControl, logger: Logger = Logger(label: "cloud-hypervisor.api")) {
        self.init(socket: .path(socketPath), control: control, logger: logger)
    }

    /// A server on an inherited, already bound Unix stream socket (`--api-socket fd=N`); the
    /// server owns the descriptor from `start()` on.
    public convenience init(adoptingFileDescriptor fd: Int32, control: any VMMControl,
                            logger: Logger = Logger(label: "cloud-hypervisor.api")) {
        self.init(socket: .fileDescriptor(fd), control: control, logger: logger)
    }

    /// Starts listening; returns once the socket accepts connections. Call from a thread that
    /// is not a SwiftNIO event loop.
    public func start() throws(APIServerError) {
        let claimed = state.withLock { state -> Bool in
            guard case .idle = state else { return false }
            state = .stopped  // Placeholder until running; a failed start cannot be retried.
            return true
        }
        guard claimed else { throw .alreadyStarted }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let workers = max(1, configuration.workerThreads)
        let pool = NIOThreadPool(numberOfThreads: workers)
        pool.start()
        if let setup = configuration.threadSetup {
            do {
                try Self.setUpThreads(setup, group: group, pool: pool, workers: workers)
            } catch {
                try? pool.syncShutdownGracefully()
                try? group.syncShutdownGracefully()
                throw .threadSetupFailed(reason: "\(error)")
            }
        }
        let router = APIRouter(control: control)
        let limits = ConnectionLimits(
            maxBodySize: configuration.maxBodySize, requestTimeout: configuration.requestTimeout,
            maxQueuedRequests: max(1, configuration.maxQueuedRequests))
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 128)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let activity = InboundActivity()
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(activity)
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
                    try sync.addHandler(APIConnectionHandler(router: router, pool: pool, limits: limits, activity: activity))
                }
            }

        let channel: any Channel
        do throws(APIServerError) {
            switch socket {
            case let .path(path):
                try Self.refuseLiveSocket(at: path, group: group)
                do {
                    channel = try bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).wait()
                } catch {
                    throw APIServerError.bindFailed(path: path, reason: "\(error)")
                }
            case let .fileDescriptor(fd):
                try Self.checkInherited(fd)
                do {
                    channel = try bootstrap.withBoundSocket(fd).wait()
                } catch {
                    throw APIServerError.badDescriptor(fd: fd, reason: "\(error)")
                }
            }
        } catch {
            try? pool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
            throw error
        }
        state.withLock { $0 = .running(Running(group: group, pool: pool, channel: channel)) }
        logger.info("API server listening", metadata: ["socket": "\(socket)"])
    }

    /// Stops accepting, closes every connection, and removes the socket file it created.
    /// Call from a thread that is not a SwiftNIO event loop.
    public func stop() {
        let running: Running? = state.withLock { state in
            defer { state = .stopped }
            if case let .running(running) = state { return running }
            return nil
        }
        guard let running else { return }
        // No new connections; let the requests in flight finish (the `vmm.shutdown` that
        // stopped the VMM among them), then let the event loop write their answers before
        // the connections close.
        try? running.channel.close().wait()
        try? running.pool.syncShutdownGracefully()
        try? running.group.next().submit {}.wait()
        try? running.group.syncShutdownGracefully()
        if case let .path(path) = socket { _ = unlink(path) }
        logger.info("API server stopped")
    }

    /// Whether the server is listening.
    public var isRunning: Bool {
        state.withLock { if case .running = $0 { true } else { false } }
    }

    /// Runs `setup` on every event loop thread, then on every worker thread: one work item
    /// per worker, each waiting until all have started, so that each lands on its own thread.
    private static func setUpThreads(_ setup: @escaping @Sendable (ThreadRole) throws -> Void,
                                     group: MultiThreadedEventLoopGroup, pool: NIOThreadPool, workers: Int) throws {
        for loop in group.makeIterator() {
            try loop.submit { try setup(.eventLoop) }.wait()
        }
        let arrived = Counter()
        let items = (0..<workers).map { _ in
            pool.runIfActive(eventLoop: group.next()) {
                defer {
                    arrived.increment()
                    while arrived.value < workers { sched_yield() }
                }
                try setup(.worker)
            }
        }
        for item in items { try item.wait() }
    }

    /// A thread-safe count.
    private final class Counter: Sendable {
        private let count = Atomic<Int>(0)
        func increment() { count.add(1, ordering: .acquiringAndReleasing) }
        var value: Int { count.load(ordering: .acquiring) }
    }

    /// Fails if a live server answers at `path` (a stale socket file is fine: bind replaces it).
    private static func refuseLiveSocket(at path: String, group: any EventLoopGroup) throws(APIServerError) {
        var status = stat()
        guard stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else { return }
        let probe = ClientBootstrap(group: group).connectTimeout(.milliseconds(500))
        if let channel = try? probe.connect(unixDomainSocketPath: path).wait() {
            try? channel.close().wait()
            throw .socketInUse(path: path)
        }
    }

    /// Checks an inherited descriptor before SwiftNIO takes it: an AF_UNIX stream socket,
    /// bound, and listening (listen(2) is called here if it is not yet).
    private static func checkInherited(_ fd: Int32) throws(APIServerError) {
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw .badDescriptor(fd: fd, reason: "it is not open (\(errnoText()))") }
        guard status.st_mode & S_IFMT == S_IFSOCK else { throw .badDescriptor(fd: fd, reason: "it is not a socket") }
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &length) == 0, value == AF_UNIX else {
            throw .badDescriptor(fd: fd, reason: "it is not an AF_UNIX socket")
        }
        length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &length) == 0, value == Int32(SOCK_STREAM.rawValue) else {
            throw .badDescriptor(fd: fd, reason: "it is not a stream socket")
        }
        guard listen(fd, 128) == 0 else { throw .badDescriptor(fd: fd, reason: "listen failed (\(errnoText())); is it bound?") }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}
