import CLinux
import Synchronization

/// The readiness conditions of a descriptor, as `epoll(7)` reports and watches them.
public struct EpollEvents: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The `EPOLL*` bits.
    public let rawValue: UInt32
    /// Creates a set from its `EPOLL*` bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Data can be read (`EPOLLIN`).
    public static let readable = EpollEvents(rawValue: EPOLLIN.rawValue)
    /// Data can be written (`EPOLLOUT`).
    public static let writable = EpollEvents(rawValue: EPOLLOUT.rawValue)
    /// An error condition (`EPOLLERR`); always reported, whether asked for or not.
    public static let error = EpollEvents(rawValue: EPOLLERR.rawValue)
    /// The other end hung up (`EPOLLHUP`); always reported, whether asked for or not.
    public static let hangUp = EpollEvents(rawValue: EPOLLHUP.rawValue)
    /// The peer closed its writing half of a stream socket (`EPOLLRDHUP`).
    public static let readHangUp = EpollEvents(rawValue: EPOLLRDHUP.rawValue)
    /// Report only changes of state, not the state itself (`EPOLLET`); the handler must then
    /// drain the descriptor until it would block.
    public static let edgeTriggered = EpollEvents(rawValue: EPOLLET.rawValue)

    /// The names of the bits set, for example `"[readable, hangUp]"`.
    public var description: String {
        let names: [(EpollEvents, String)] = [
            (.readable, "readable"), (.writable, "writable"), (.error, "error"),
            (.hangUp, "hangUp"), (.readHangUp, "readHangUp"), (.edgeTriggered, "edgeTriggered"),
        ]
        var parts = names.filter { contains($0.0) }.map(\.1)
        let known = names.reduce(EpollEvents()) { $0.union($1.0) }
        let unknown = subtracting(known).rawValue
        if unknown != 0 { parts.append("0x" + String(unknown, radix: 16)) }
        return "[" + parts.joined(separator: ", ") + "]"
    }
}

/// An `epoll(7)` event loop: the VMM's device I/O thread.
///
/// Descriptors (ioeventfds, tap devices, sockets, timers) are registered with a handler that
/// runs on the loop's thread when they become ready. The loop can run on a thread of the
/// caller's (`runOnce`) or on a dedicated `HostThread` (`start`/`stop`).
///
/// Handlers are identified by descriptor number: one handler per descriptor. Registration
/// calls may come from any thread, including from inside a handler. Remove a descriptor
/// before closing it: epoll watches the open file, not the number, so a closed descriptor
/// with a surviving duplicate would keep being reported.
///
/// A running loop thread keeps its manager alive until `stop()` is called.
public final class EventManager: Sendable {
    /// A handler as registered.
    private struct Registration {
        let handler: @Sendable (EpollEvents) -> Void
        /// Increases with every `add`, so that events collected before a registration existed
        /// are never handed to it (a descriptor number may be reused right after `remove`).
        let serial: UInt64
    }

    /// A handler that a thread is running now.
    private struct Dispatch {
        let fd: Int32
        let thread: pthread_t
    }

    /// Everything that handlers and registration share, behind one lock.
    private struct State {
        var handlers: [Int32: Registration] = [:]
        var nextSerial: UInt64 = 1
        var dispatching: [Dispatch] = []
        var loopThread: HostThread?
        var stopRequested = false
        var loopError: SystemError?
    }

    /// Events fetched per `epoll_wait`.
    private static let batchSize = 32

    /// The epoll instance.
    private let epoll: OwnedFileDescriptor
    /// Always registered; signalled by `wake()` and `stop()`, drained by `runOnce`.
    private let wakeEvent: EventFD
    /// The handler table and loop-thread state. Never held while a handler runs.
    private let state = Mutex(State())

    /// Creates an epoll instance and the eventfd used to wake it.
    ///
    /// The corresponding system call is `epoll_create1(EPOLL_CLOEXEC)`.
    public init() throws(SystemError) {
        let fd = try checked("epoll_create1(EPOLL_CLOEXEC)") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        epoll = OwnedFileDescriptor(adopting: fd)
        wakeEvent = try EventFD(nonBlocking: true)
        var event = epoll_event(events: EpollEvents.readable.rawValue, data: epoll_data_t(fd: wakeEvent.rawValue))
        _ = try checked("epoll_ctl(ADD, wake \(wakeEvent.descriptor))") {
            // SAFETY: `event` is a local the kernel only reads during the call.
            epoll_ctl(fd, EPOLL_CTL_ADD, wakeEvent.rawValue, &event)
        }
    }

    /// How many descriptors have a handler (the internal wake eventfd is not counted).
    public var registeredCount: Int {
        state.withLock { $0.handlers.count }
    }

    /// The error that ended the loop thread started by `start`, if one did.
    public var loopError: SystemError? {
        state.withLock { $0.loopError }
    }

    // MARK: - Registration

    /// Watches `fd` for `events` and runs `handler` with the events that occurred each time
    /// the descriptor is ready. `.error` and `.hangUp` are always reported.
    ///
    /// The corresponding system call is `epoll_ctl(EPOLL_CTL_ADD)`. A descriptor that already
    /// has a handler is refused with `EEXIST`.
    public func add(_ fd: Int32, events: EpollEvents = .readable, handler: @escaping @Sendable (EpollEvents) -> Void) throws(SystemError) {
        let call = "epoll_ctl(ADD, fd \(fd))"
        try state.withLock { (state) throws(SystemError) in
            if state.handlers[fd] != nil { throw SystemError(call: call, errno: EEXIST) }
            try control(EPOLL_CTL_ADD, fd, events, call)
            // Still under the lock: the loop cannot look this descriptor up before it is stored.
            state.handlers[fd] = Registration(handler: handler, serial: state.nextSerial)
            state.nextSerial += 1
        }
    }

    /// Changes the events watched on a registered `fd`, keeping its handler.
    ///
    /// The corresponding system call is `epoll_ctl(EPOLL_CTL_MOD)`. An unknown descriptor is
    /// refused with `ENOENT`.
    public func modify(_ fd: Int32, events: EpollEvents) throws(SystemError) {
        let call = "epoll_ctl(MOD, fd \(fd))"
        try state.withLock { (state) throws(SystemError) in
            guard state.handlers[fd] != nil else { throw SystemError(call: call, errno: ENOENT) }
            try control(EPOLL_CTL_MOD, fd, events, call)
        }
    }

    /// Stops watching `fd` and forgets its handler.
    ///
    /// It may be called from inside any handler (its own included): a handler removed that way
    /// is not called again, even for events already fetched. Called from another thread, it
    /// waits for a run of that handler in progress to finish, so that once it returns the
    /// handler is never called again. (A handler must therefore not wait for a thread that is
    /// removing that same handler.)
    ///
    /// The corresponding system call is `epoll_ctl(EPOLL_CTL_DEL)`. An unknown descriptor is
    /// refused with `ENOENT`; a descriptor already closed is forgotten without complaint.
    public func remove(_ fd: Int32) throws(SystemError) {
        let call = "epoll_ctl(DEL, fd \(fd))"
        let me = pthread_self()
        let mustWait = try state.withLock { (state) throws(SystemError) -> Bool in
            guard state.handlers.removeValue(forKey: fd) != nil else {
                throw SystemError(call: call, errno: ENOENT)
            }
            do throws(SystemError) {
                try control(EPOLL_CTL_DEL, fd, [], call)
            } catch where error.errno == EBADF || error.errno == ENOENT {
                // Closing the last descriptor of a file removes it from epoll by itself.
            }
            return state.dispatching.contains { $0.fd == fd && pthread_equal($0.thread, me) == 0 }
        }
        if mustWait { waitForDispatches(of: fd, except: me) }
    }

    /// Calls `epoll_ctl` for `fd`; the caller holds the lock.
    private func control(_ operation: Int32, _ fd: Int32, _ events: EpollEvents, _ call: String) throws(SystemError) {
        var event = epoll_event(events: events.rawValue, data: epoll_data_t(fd: fd))
        // SAFETY: `event` is a local the kernel only reads during the call.
        _ = try checked(call) { epoll_ctl(epoll.rawValue, operation, fd, &event) }
    }

    /// Waits until no thread but `me` is running the handler of `fd`. Handlers are short, so
    /// this polls: a few yields first, then sleeps growing to a millisecond.
    private func waitForDispatches(of fd: Int32, except me: pthread_t) {
        var rounds = 0
        while state.withLock({ $0.dispatching.contains { $0.fd == fd && pthread_equal($0.thread, me) == 0 } }) {
            rounds += 1
            if rounds < 16 {
                sched_yield()
            } else {
                var pause = timespec(tv_sec: 0, tv_nsec: rounds < 64 ? 50_000 : 1_000_000)
                nanosleep(&pause, nil)
            }
        }
    }

    // MARK: - Running

    /// Waits once for ready descriptors (at most `timeoutMilliseconds`; -1 waits without limit)
    /// and runs their handlers on the calling thread.
    ///
    /// The corresponding system call is `epoll_wait(2)`.
    /// - Returns: how many handlers ran; 0 after a timeout, a `wake()` or a signal (`EINTR`).
    @discardableResult
    public func runOnce(timeoutMilliseconds: Int32 = -1) throws(SystemError) -> Int {
        try withUnsafeTemporaryAllocation(of: epoll_event.self, capacity: Self.batchSize) { (buffer) throws(SystemError) -> Int in
            // SAFETY: the buffer holds `batchSize` events and epoll_wait writes at most that many.
            let count = epoll_wait(epoll.rawValue, buffer.baseAddress, Int32(buffer.count), timeoutMilliseconds)
            if count < 0 {
                let error = SystemError.current("epoll_wait(\(epoll))")
                if error.isInterrupted { return 0 }
                throw error
            }
            // Registrations newer than this were made after the kernel collected the events.
            let newestSerial = state.withLock { $0.nextSerial - 1 }
            let me = pthread_self()
            var ran = 0
            for index in 0..<Int(count) {
                let fd = buffer[index].data.fd
                let events = EpollEvents(rawValue: buffer[index].events)
                if fd == wakeEvent.rawValue {
                    _ = try? wakeEvent.read()
                    continue
                }
                let handler = state.withLock { state -> (@Sendable (EpollEvents) -> Void)? in
                    guard let registration = state.handlers[fd], registration.serial <= newestSerial else { return nil }
                    state.dispatching.append(Dispatch(fd: fd, thread: me))
                    return registration.handler
                }
                guard let handler else { continue }
                handler(events)
                ran += 1
                state.withLock { state in
                    if let slot = state.dispatching.firstIndex(where: { $0.fd == fd && pthread_equal($0.thread, me) != 0 }) {
                        state.dispatching.remove(at: slot)
                    }
                }
            }
            return ran
        }
    }

    /// Makes a `runOnce` that is waiting (or the next one) return.
    public func wake() throws(SystemError) {
        try wakeEvent.signal()
    }

    /// Runs the loop on a new thread called `name` until `stop()`.
    ///
    /// `onThreadStart`, if given, runs first on the new thread (to install its seccomp
    /// filter, for example); when it returns false the thread ends without running any
    /// handler, and the closure is the one to report why.
    ///
    /// Starting a loop that is already running is refused with `EBUSY`. If `epoll_wait` fails
    /// the thread ends and `loopError` tells why.
    ///
    /// With `gate`, the thread passes the gate between two rounds of handlers: while the gate
    /// is closed no handler runs (a paused VM's devices do nothing: queue notifications,
    /// host input, TAP frames and timers wait in their descriptors). Close the gate, then
    /// ``wake()`` the loop so that a waiting round ends and the thread parks.
    public func start(name: String = "ch-event-loop", gate: PauseGate? = nil,
                      onThreadStart: (@Sendable () -> Bool)? = nil) throws(SystemError) {
        try state.withLock { (state) throws(SystemError) in
            if state.loopThread != nil {
                throw SystemError(call: "EventManager.start(\(name)) while its loop thread is running", errno: EBUSY)
            }
            state.stopRequested = false
            state.loopError = nil
            // The new thread takes this lock to read `stopRequested`, so it waits until we are done.
            state.loopThread = try HostThread(name: name) { [self] in
                if let onThreadStart, !onThreadStart() { return }
                runLoop(gate: gate)
            }
        }
    }

    /// The body of the loop thread.
    private func runLoop(gate: PauseGate?) {
        while !state.withLock({ $0.stopRequested }) {
            gate?.checkpoint()
            if state.withLock({ $0.stopRequested }) { return }
            do {
                try runOnce()
            } catch {
                state.withLock { $0.loopError = error }
                return
            }
        }
    }

    /// Asks the loop thread to end without waiting for it: a loop parked at its gate then ends
    /// when the gate opens, without running another round of handlers. ``stop()`` joins it.
    public func requestStop() {
        state.withLock { $0.stopRequested = true }
    }

    /// Asks the loop thread to end, wakes it and waits for it. Calling it again, or without
    /// a `start()`, does nothing. Called from a handler on the loop thread, it returns at
    /// once and the loop ends after that handler; a later `stop()` elsewhere joins the thread.
    public func stop() {
        let me = pthread_self()
        let thread = state.withLock { state -> HostThread? in
            state.stopRequested = true
            guard let thread = state.loopThread else { return nil }
            if pthread_equal(thread.pthread, me) != 0 { return nil }
            state.loopThread = nil
            return thread
        }
        guard let thread else { return }
        do {
            try wake()
        } catch {
            // An eventfd write only fails when the counter is about to overflow, which
            // means a wake is already pending: the loop will see `stopRequested` anyway.
        }
        thread.join()
    }
}
