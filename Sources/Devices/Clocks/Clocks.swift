#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A moment of wall-clock time: seconds and nanoseconds since 1970-01-01 00:00:00 UTC.
public struct WallClockTime: Hashable, Sendable {
    /// Whole seconds since the Unix epoch (negative before 1970).
    public var seconds: Int64
    /// Nanoseconds into the current second, `0 ..< 1_000_000_000`.
    public var nanoseconds: UInt32

    /// Creates a time `seconds` after the epoch plus `nanoseconds` (reduced modulo one second).
    public init(seconds: Int64, nanoseconds: UInt32 = 0) {
        self.seconds = seconds + Int64(nanoseconds / 1_000_000_000)
        self.nanoseconds = nanoseconds % 1_000_000_000
    }
}

/// Where a device reads the current date and time (the CMOS RTC's time registers).
public protocol WallClock: Sendable {
    /// The current UTC time.
    func now() -> WallClockTime
}

/// The host's real-time clock. The corresponding system call is
/// `clock_gettime(CLOCK_REALTIME)`.
public struct SystemWallClock: WallClock {
    /// Creates the host real-time clock.
    public init() {}

    /// The host's current UTC time.
    public func now() -> WallClockTime {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return WallClockTime(seconds: Int64(spec.tv_sec), nanoseconds: UInt32(clamping: spec.tv_nsec))
    }
}

/// Where a device measures elapsed time (the debug port's boot timestamps).
public protocol MonotonicClock: Sendable {
    /// Nanoseconds since an arbitrary fixed point; never decreases.
    func nanoseconds() -> UInt64
}

/// The host's monotonic clock. The corresponding system call is
/// `clock_gettime(CLOCK_MONOTONIC)`.
public struct SystemMonotonicClock: MonotonicClock {
    /// Creates the host monotonic clock.
    public init() {}

    /// Nanoseconds since the host booted (an unspecified but fixed point).
    public func nanoseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(clamping: spec.tv_sec) &* 1_000_000_000 &+ UInt64(clamping: spec.tv_nsec)
    }
}

/// What a device calls when the guest asks the machine to reset (the i8042 `0xFE`
/// command, the CMOS shutdown-status write). Cloud Hypervisor writes its reset eventfd
/// here; the handler runs on the vCPU thread that made the access, so keep it short
/// and never call back into the device.
public typealias ResetHandler = @Sendable () -> Void
