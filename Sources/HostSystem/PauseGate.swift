#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A gate that worker threads (vCPUs) pass at safe points: while a pause is requested they
/// park at the gate until it is released, and the controller can wait until all of them
/// are parked. Built on a pthread mutex and condition variable.
public final class PauseGate: @unchecked Sendable {
    // The mutex and condition live on the heap at fixed addresses, as pthread requires;
    // every field below is read and written only with the mutex held.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var pauseRequested = false
    private var parkedCount = 0

    /// An open gate.
    public init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Whether workers should park at their next safe point.
    public var isPauseRequested: Bool { locked { pauseRequested } }

    /// How many workers are parked now.
    public var parked: Int { locked { parkedCount } }

    /// Asks workers to park; they do at their next ``checkpoint()``.
    public func close() {
        locked { pauseRequested = true }
    }

    /// Lets parked workers go on.
    public func open() {
        locked {
            pauseRequested = false
            pthread_cond_broadcast(condition)
        }
    }

    /// Called by a worker at a safe point: parks while the gate is closed. Returns whether it parked.
    @discardableResult
    public func checkpoint() -> Bool {
        locked {
            guard pauseRequested else { return false }
            parkedCount += 1
            pthread_cond_broadcast(condition)
            while pauseRequested { pthread_cond_wait(condition, mutex) }
            parkedCount -= 1
            return true
        }
    }

    /// Waits until at least `count` workers are parked, or `timeoutMilliseconds` passed.
    /// Returns whether they all parked.
    public func waitUntilParked(_ count: Int, timeoutMilliseconds: Int) -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        let total = Int(deadline.tv_nsec) + (timeoutMilliseconds % 1000) * 1_000_000
        deadline.tv_sec += timeoutMilliseconds / 1000 + total / 1_000_000_000
        deadline.tv_nsec = total % 1_000_000_000
        return locked {
            while parkedCount < count {
                if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { return parkedCount >= count }
            }
            return true
        }
    }
}
