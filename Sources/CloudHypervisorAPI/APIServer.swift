// The REST API server: HTTP/1.1 on a Unix socket (created at a path, or inherited as a
// descriptor). One event loop thread accepts and does every connection's I/O; requests are
// answered on a worker thread so the loop never blocks on the VMM. Descriptors passed with a
// request (SCM_RIGHTS, as libvirt and Kata pass TAP devices) reach the router with it.
import Glibc
import HostSystem
import Logging
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
///
/// Descriptors a client passes with a request arrive in ``APIRequest/fileDescriptors``. The
/// request owns them: the responder keeps those it uses (holding the `OwnedFileDescriptor` or
/// calling `take()`), and the rest close when the request is done with, whether it succeeded,
/// was refused, or never reached the responder (a malformed request, a closed connection).
public final class APIServer: Sendable {
    /// The server's threads, for ``Configuration/threadSetup``.
    public enum ThreadRole: Sendable, Equatable {
        /// The event loop thread (`ch-api`): the socket and HTTP.
        case eventLoop
        /// A worker thread (`ch-api-worker`) that runs `VMMControl` actions.
        case worker
    }

    /// Tunables; the defaults suit a VMM.
    public struct Configuration: Sendable {
        /// The largest request body accepted (a `VmConfig` is a few KiB). Default 1 MiB.
        public var maxBodySize = 1 << 20
        /// How long a client may take to send one complete request, and how long an idle
        /// connection is kept. Default 10 seconds.
        public var requestTimeout = Duration.seconds(10)
        /// Threads that run VMMControl calls. Default 1, which serializes actions as Cloud
        /// Hypervisor's single VMM thread does. Requests on one connection are always answered
        /// one at a time, in order.
        public var workerThreads = 1
        /// Pipelined requests queued per connection before it stops reading. Default 16.
        public var maxQueuedRequests = 16
        /// Descriptors accepted with one request (SCM_RIGHTS); more is a bad request. Default 64.
        public var maxDescriptorsPerRequest = 64
        /// Runs once on each of the server's threads before the socket is bound, so before
        /// anything is served (the VMM installs each thread's seccomp filter here). An error
        /// makes `start()` fail. Default none.
        public var threadSetup: (@Sendable (ThreadRole) throws -> Void)?

        /// The defaults.
        public init() {}
    }

    private struct Running {
        var loop: ServerLoop
        var loopThread: HostThread
        var workers: [HostThread]
        /// `<socket>.lock`, held while the server runs (a path socket only).
        var lock: OwnedFileDescriptor?
    }

    private enum State {
        case idle
        case running(Running)
        case stopped
    }

    /// Where the server listens.
    public let socket: APISocketConfig
    /// The VMM it controls (nil for a server made with its own responder).
    public let control: (any VMMControl)?
    /// Its tunables.
    public let configuration: Configuration
    private let respond: @Sendable (APIRequest) -> APIResponse
    private let logger: Logger
    private let state = Mutex<State>(.idle)

    /// Creates a server for `control` on `socket`; nothing happens until `start()`.
    public init(socket: APISocketConfig, control: any VMMControl, configuration: Configuration = Configuration(),
                logger: Logger = Logger(label: "cloud-hypervisor.api")) {
        self.socket = socket
        self.control = control
        self.configuration = configuration
        self.logger = logger
        let router = APIRouter(control: control)
        respond = { router.respond(to: $0) }
    }

    /// Creates a server that answers every request with `responder` (on the worker threads)
    /// instead of an `APIRouter`: for embedding the HTTP side alone, and for tests.
    public init(socket: APISocketConfig, configuration: Configuration = Configuration(),
                logger: Logger = Logger(label: "cloud-hypervisor.api"),
                responder: @escaping @Sendable (APIRequest) -> APIResponse) {
        self.socket = socket
        control = nil
        self.configuration = configuration
        self.logger = logger
        respond = responder
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

    /// Starts the threads, runs ``Configuration/threadSetup`` on each, then listens; returns
    /// once the socket accepts connections.
    public func start() throws(APIServerError) {
        let claimed = state.withLock { state -> Bool in
            guard case .idle = state else { return false }
            state = .stopped  // Placeholder until running; a failed start cannot be retried.
            return true
        }
        guard claimed else { throw .alreadyStarted }

        let limits = ConnectionLimits(
            maxBodySize: configuration.maxBodySize, requestTimeout: configuration.requestTimeout,
            maxQueuedRequests: max(1, configuration.maxQueuedRequests),
            maxDescriptors: min(253, max(1, configuration.maxDescriptorsPerRequest)))
        let jobs: WorkQueue
        let loop: ServerLoop
        let launch: Launch
        do {
            jobs = try WorkQueue()
            loop = try ServerLoop(jobs: jobs, limits: limits, logger: logger)
            launch = try Launch()
        } catch {
            throw .threadSetupFailed(reason: "\(error)")
        }

        // Every thread runs its setup and reports; the loop thread then waits for the listener.
        let setup = configuration.threadSetup
        let workerCount = max(1, configuration.workerThreads)
        var threads: [HostThread] = []
        var loopThread: HostThread?
        do {
            loopThread = try HostThread(name: "ch-api") {
                guard launch.setUp(setup, role: .eventLoop), let listener = launch.waitForListener() else { return }
                loop.run(listener: listener)
            }
            for index in 0..<workerCount {
                let respond = self.respond
                threads.append(try HostThread(name: workerCount == 1 ? "ch-api-worker" : "ch-api-worker\(index)") {
                    guard launch.setUp(setup, role: .worker) else { return }
                    Self.work(jobs: jobs, loop: loop, respond: respond)
                })
            }
        } catch {
            Self.abort(launch: launch, jobs: jobs, loopThread: loopThread, workers: threads)
            throw .threadSetupFailed(reason: "\(error)")
        }
        if let failure = launch.waitForSetUp(threads: workerCount + 1) {
            Self.abort(launch: launch, jobs: jobs, loopThread: loopThread, workers: threads)
            throw .threadSetupFailed(reason: failure)
        }

        let listener: UnixSocket
        var lock: OwnedFileDescriptor?
        do throws(APIServerError) {
            if case let .path(path) = socket { lock = try Self.acquireLock(for: path) }
            listener = try Self.listen(on: socket)
        } catch {
            Self.abort(launch: launch, jobs: jobs, loopThread: loopThread, workers: threads)
            throw error
        }
        launch.go(with: listener)
        state.withLock { $0 = .running(Running(loop: loop, loopThread: loopThread!, workers: threads, lock: lock)) }
        logger.info("API server listening", metadata: ["socket": "\(socket)"])
    }

    /// Stops accepting, lets the requests in flight finish (queued ones are dropped), writes
    /// their answers, closes every connection, and removes the socket file it created. Call
    /// from a thread that is not one of the server's.
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
        running.loop.advance(to: .stopAccepting)
        running.loop.jobs.close(wakingWorkers: running.workers.count)
        for worker in running.workers { worker.join() }
        running.loop.advance(to: .drain)
        running.loopThread.join()
        if case let .path(path) = socket { UnixSocket.removeSocketFile(at: path) }
        _ = running.lock  // released with the socket file gone
        logger.info("API server stopped")
    }

    /// Whether the server is listening.
    public var isRunning: Bool {
        state.withLock { if case .running = $0 { true } else { false } }
    }

    /// A worker thread's life: take a request, answer it, hand the answer to the loop.
    private static func work(jobs: WorkQueue, loop: ServerLoop, respond: @Sendable (APIRequest) -> APIResponse) {
        while var job = jobs.take() {
            let connection = job.connection
            let response = respond(job.request)
            // The request's descriptors that nobody kept close here, before the client can
            // read the answer.
            job = WorkQueue.Job(connection: connection, request: APIRequest(method: .GET, uri: ""))
            loop.deliver(response, to: connection)
        }
    }

    /// Ends the threads of a start that failed.
    private static func abort(launch: Launch, jobs: WorkQueue, loopThread: HostThread?, workers: [HostThread]) {
        launch.cancel()
        jobs.close(wakingWorkers: workers.count)
        loopThread?.join()
        for worker in workers { worker.join() }
    }

    /// Takes Cloud Hypervisor's `<socket>.lock`: a file beside the socket, locked exclusively
    /// while a VMM serves the socket, so a second VMM refuses the path instead of replacing
    /// (and deleting) a socket in use. The file stays; the lock goes with the process.
    private static func acquireLock(for path: String) throws(APIServerError) -> OwnedFileDescriptor {
        let lockPath = path + ".lock"
        do {
            let file = try OwnedFileDescriptor(path: lockPath, flags: O_WRONLY | O_CREAT | O_CLOEXEC, mode: 0o600)
            guard try file.tryLockExclusively() else { throw APIServerError.socketInUse(path: path) }
            return file
        } catch let error as APIServerError {
            throw error
        } catch {
            throw .bindFailed(path: path, reason: "cannot lock \(lockPath): \(error)")
        }
    }

    /// The listening socket for `config`.
    private static func listen(on config: APISocketConfig) throws(APIServerError) -> UnixSocket {
        switch config {
        case let .path(path):
            if UnixSocket.hasListener(at: path) { throw .socketInUse(path: path) }
            do {
                return try UnixSocket.listening(at: path)
            } catch {
                throw .bindFailed(path: path, reason: "\(error)")
            }
        case let .fileDescriptor(fd):
            do {
                return try UnixSocket.adoptingListener(fd)
            } catch {
                throw .badDescriptor(fd: fd, reason: error.description)
            }
        }
    }
}

/// Start-up handshake between `start()` and the server's threads: each thread reports its
/// setup; the loop thread then waits for the listener (or a cancellation).
private final class Launch: Sendable {
    private struct State {
        var failures: [String] = []
        var listener: UnixSocket?
        var cancelled = false
    }

    private let state = Mutex(State())
    private let reported: EventFD
    private let started: EventFD

    init() throws(SystemError) {
        reported = try EventFD(nonBlocking: false, semaphore: true)
        started = try EventFD(nonBlocking: false, semaphore: true)
    }

    /// Runs `setup` for `role` on this thread and reports; false if it failed.
    func setUp(_ setup: (@Sendable (APIServer.ThreadRole) throws -> Void)?, role: APIServer.ThreadRole) -> Bool {
        var succeeded = true
        if let setup {
            do {
                try setup(role)
            } catch {
                succeeded = false
                state.withLock { $0.failures.append("\(role): \(error)") }
            }
        }
        try? reported.signal()
        return succeeded
    }

    /// Waits until `threads` threads reported; the first failure, if any.
    func waitForSetUp(threads: Int) -> String? {
        for _ in 0..<threads { _ = try? reported.read() }
        return state.withLock { $0.failures.first }
    }

    /// Hands the listener to the loop thread.
    func go(with listener: UnixSocket) {
        state.withLock { $0.listener = listener }
        try? started.signal()
    }

    /// Tells the loop thread not to serve.
    func cancel() {
        state.withLock { $0.cancelled = true }
        try? started.signal()
    }

    /// The listener, once `go` was called; nil after `cancel`.
    func waitForListener() -> UnixSocket? {
        _ = try? started.read()
        return state.withLock { $0.cancelled ? nil : $0.listener }
    }
}
