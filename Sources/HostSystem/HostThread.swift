import CLinux

/// A named, joinable OS thread (a POSIX thread).
///
/// The VMM runs each vCPU and each event loop on a thread of its own: blocking calls such as
/// `KVM_RUN` or `epoll_wait` must never occupy Swift's cooperative thread pool.
public final class HostThread: @unchecked Sendable {
    // Written once in init before the thread can be joined; join() is called by the owner.
    private var handle: pthread_t
    private var joined = false
    /// The name given at creation.
    public let name: String

    private final class Start {
        let name: String
        let body: () -> Void
        init(name: String, body: @escaping () -> Void) { self.name = name; self.body = body }
    }

    /// Starts a thread called `name` running `body`.
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        self.name = name
        let start = Unmanaged.passRetained(Start(name: name, body: body))
        var thread = pthread_t()
        let result = clinux_thread_spawn(&thread, { context in
            // SAFETY: `context` is the retained Start passed just below; taken exactly once.
            let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
            clinux_thread_set_name(start.name)
            start.body()
        }, start.toOpaque())
        if result != 0 {
            start.release()
            throw SystemError(call: "pthread_create(\(name))", errno: result)
        }
        handle = thread
    }

    /// The POSIX thread handle, for `pthread_kill`.
    public var pthread: pthread_t { handle }

    /// Waits for the thread to finish. Calling it twice is harmless.
    public func join() {
        if joined { return }
        joined = true
        pthread_join(handle, nil)
    }

    /// Sends `signal` to the thread (`pthread_kill(3)`).
    public func send(signal: Int32) throws(SystemError) {
        let result = pthread_kill(handle, signal)
        if result != 0 { throw SystemError(call: "pthread_kill(\(name))", errno: result) }
    }

    deinit {
        if !joined { pthread_detach(handle) }
    }
}
