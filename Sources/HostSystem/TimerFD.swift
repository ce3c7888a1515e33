import CLinux

/// A Linux timerfd: a descriptor that becomes readable when a monotonic timer expires, so
/// timers run on the same epoll loop as everything else.
public final class TimerFD: Sendable {
    /// The descriptor.
    public let descriptor: OwnedFileDescriptor

    /// Creates a disarmed, non-blocking timer on `CLOCK_MONOTONIC`.
    ///
    /// The corresponding system call is `timerfd_create(2)`.
    public init() throws(SystemError) {
        let fd = try checked("timerfd_create") { timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC)) }
        descriptor = OwnedFileDescriptor(adopting: fd)
    }

    /// The descriptor number, for epoll.
    public var rawValue: Int32 { descriptor.rawValue }

    /// Arms the timer to expire after `nanoseconds`, then every `interval` nanoseconds
    /// (0: once). Arming with 0 disarms it.
    ///
    /// The corresponding system call is `timerfd_settime(2)`.
    public func arm(afterNanoseconds nanoseconds: UInt64, intervalNanoseconds interval: UInt64 = 0) throws(SystemError) {
        var spec = itimerspec()
        spec.it_value = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        spec.it_interval = timespec(tv_sec: Int(interval / 1_000_000_000), tv_nsec: Int(interval % 1_000_000_000))
        _ = try checked("timerfd_settime") { timerfd_settime(descriptor.rawValue, 0, &spec, nil) }
    }

    /// Disarms the timer.
    public func disarm() throws(SystemError) { try arm(afterNanoseconds: 0) }

    /// Reads and clears the number of expirations since the last read (0 if none).
    public func expirations() -> UInt64 {
        var count: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &count) { unistdRead(descriptor.rawValue, $0.baseAddress, 8) }
        return n == 8 ? count : 0
    }
}
