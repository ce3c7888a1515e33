// The API server's two halves: the event loop thread (accepting, connection I/O, time-outs)
// and the queue that hands complete requests to the worker thread(s).
import HostSystem
import Logging
import Synchronization

/// Requests waiting for a worker, in arrival order. Workers block on an eventfd used as a
/// counting semaphore (one count per job, plus one per worker when the queue closes).
final class WorkQueue: Sendable {
    /// One request from one connection.
    struct Job: Sendable {
        let connection: UInt64
        let request: APIRequest
    }

    private struct State {
        var jobs: [Job] = []
        var closed = false
    }

    private let state = Mutex(State())
    private let ready: EventFD

    init() throws(SystemError) {
        ready = try EventFD(nonBlocking: false, semaphore: true)
    }

    /// Queues a job; false once the queue is closed.
    func submit(_ job: Job) -> Bool {
        let accepted = state.withLock { state in
            guard !state.closed else { return false }
            state.jobs.append(job)
            return true
        }
        // An eventfd write fails only when the counter would overflow 2^64-2.
        if accepted { try? ready.signal() }
        return accepted
    }

    /// Waits for the next job; nil once the queue is closed.
    func take() -> Job? {
        while true {
            do {
                _ = try ready.read()
            } catch {
                return nil
            }
            let next = state.withLock { state -> Job?? in
                if state.closed { return .some(nil) }
                return state.jobs.isEmpty ? nil : .some(state.jobs.removeFirst())
            }
            if let next { return next }
        }
    }

    /// Refuses new jobs, drops the queued ones (their descriptors close) and wakes `workers`
    /// waiting threads so that they return.
    func close(wakingWorkers workers: Int) {
        state.withLock { state in
            state.closed = true
            state.jobs = []
        }
        try? ready.signal(UInt64(max(1, workers)))
    }
}

/// The event loop: the listening socket, every connection, and their deadlines. Its mutable
/// state is touched only on the loop thread, except `shared`, which workers and `stop()` use.
final class ServerLoop: ConnectionHost, @unchecked Sendable {
    /// How far shutting down has gone.
    enum Phase: Int, Comparable {
        /// Accepting and serving.
        case serving
        /// The listener is closed; connections are still served.
        case stopAccepting
        /// The workers are gone: write the answers they gave, then close everything.
        case drain

        static func < (lhs: Phase, rhs: Phase) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    private struct Shared {
        var completions: [(connection: UInt64, response: APIResponse)] = []
        var phase = Phase.serving
    }

    /// How long the drain phase waits for clients to take their answers.
    static let drainGrace = Duration.seconds(1)

    let manager: EventManager
    let jobs: WorkQueue
    private let limits: ConnectionLimits
    private let logger: Logger
    private let shared = Mutex(Shared())
    private let clock = ContinuousClock()

    private var listener: UnixSocket?
    private var acceptPausedUntil: ContinuousClock.Instant?
    private var connections: [UInt64: APIConnection] = [:]
    private var nextID: UInt64 = 1
    private var drainDeadline: ContinuousClock.Instant?

    init(jobs: WorkQueue, limits: ConnectionLimits, logger: Logger) throws(SystemError) {
        manager = try EventManager()
        self.jobs = jobs
        self.limits = limits
        self.logger = logger
    }

    // MARK: From other threads

    /// A worker's answer for `connection` (any thread).
    func deliver(_ response: APIResponse, to connection: UInt64) {
        shared.withLock { $0.completions.append((connection, response)) }
        try? manager.wake()
    }

    /// Moves shutdown on to `phase` (any thread).
    func advance(to phase: Phase) {
        shared.withLock { $0.phase = max($0.phase, phase) }
        try? manager.wake()
    }

    // MARK: The loop thread

    /// Serves on `listener` until the drain phase ends. Runs on the loop thread.
    func run(listener: UnixSocket) {
        self.listener = listener
        do {
            try manager.add(listener.rawValue, events: .readable) { [unowned self] _ in acceptAll() }
        } catch {
            logger.error("API server: cannot watch the listening socket: \(error)")
            self.listener = nil
        }
        while true {
            do {
                try manager.runOnce(timeoutMilliseconds: nextTimeoutMilliseconds())
            } catch {
                logger.error("API server: the event loop failed: \(error)")
                break
            }
            if !afterEvents() { break }
        }
        for connection in Array(connections.values) { connection.close() }
        closeListener()
    }

    /// Completions, shutdown steps and deadlines after each wait. False when the loop ends.
    private func afterEvents() -> Bool {
        let (completions, phase) = shared.withLock { shared in
            defer { shared.completions = [] }
            return (shared.completions, shared.phase)
        }
        for completion in completions {
            connections[completion.connection]?.completed(completion.response)
        }
        if phase >= .stopAccepting { closeListener() }
        let now = clock.now
        if let paused = acceptPausedUntil, now >= paused, let listener {
            acceptPausedUntil = nil
            try? manager.modify(listener.rawValue, events: .readable)
        }
        if phase == .drain {
            let deadline = drainDeadline ?? now + Self.drainGrace
            drainDeadline = deadline
            for connection in Array(connections.values) where !connection.isWriting || now >= deadline {
                connection.close()
            }
            if connections.isEmpty { return false }
        }
        for connection in Array(connections.values) where connection.deadline <= now {
            connection.deadlinePassed()
        }
        return true
    }

    /// Milliseconds until the nearest deadline (-1: none).
    private func nextTimeoutMilliseconds() -> Int32 {
        var nearest = connections.values.map(\.deadline).min()
        for other in [drainDeadline, acceptPausedUntil].compactMap({ $0 }) { nearest = min(nearest ?? other, other) }
        guard let nearest else { return -1 }
        let left = nearest - clock.now
        guard left > .zero else { return 0 }
        let parts = left.components
        let milliseconds = parts.seconds * 1000 + (parts.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: milliseconds)
    }

    private func closeListener() {
        guard let listener else { return }
        try? manager.remove(listener.rawValue)
        self.listener = nil
    }

    /// Takes the pending connections (a bounded number per wake-up, so one flood cannot starve
    /// the others).
    private func acceptAll() {
        guard let listener else { return }
        for _ in 0..<64 {
            let accepted: UnixSocket?
            do {
                accepted = try listener.accept()
            } catch {
                // Out of descriptors, typically: stop listening for a moment instead of spinning.
                logger.warning("API server: \(error); not accepting for a second")
                acceptPausedUntil = clock.now + .seconds(1)
                try? manager.modify(listener.rawValue, events: [])
                return
            }
            guard let socket = accepted else { return }
            let id = nextID
            nextID += 1
            let connection = APIConnection(id: id, socket: socket, host: self, limits: limits)
            do {
                try manager.add(socket.rawValue, events: connection.initialEvents) { [unowned self] events in
                    if let connection = connections[id] { connection.handle(events) }
                }
            } catch {
                logger.warning("API server: cannot watch a new connection: \(error)")
                continue
            }
            connections[id] = connection
        }
    }

    // MARK: ConnectionHost

    func submit(_ request: APIRequest, from connection: UInt64) -> Bool {
        jobs.submit(WorkQueue.Job(connection: connection, request: request))
    }

    func watch(_ socket: UnixSocket, events: EpollEvents) {
        try? manager.modify(socket.rawValue, events: events)
    }

    func unwatch(_ socket: UnixSocket) {
        try? manager.remove(socket.rawValue)
    }

    func forget(_ connection: APIConnection) {
        // Already gone when its peer hung up while a request was at the worker.
        try? manager.remove(connection.socket.rawValue)
        connections[connection.id] = nil
    }
}
