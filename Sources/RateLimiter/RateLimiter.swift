#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// An I/O rate limiter with independent bandwidth (bytes) and operations token buckets,
/// as Cloud Hypervisor's `rate_limiter_config` describes it (its `bw_*` and `ops_*`
/// options).
///
/// A device asks ``consume(bytes:operations:)`` before each request it serves; a `false`
/// answer means "not now": the device leaves the request where it was and stops. The
/// limiter then calls the wake-up handler (``onWakeUp(_:)``) once with the delay after
/// which the request will fit, and the owner of the device (the VMM's event loop, with
/// a timer) calls ``wakeUpFired()`` and lets the device try again at that time. The
/// limiter itself has no thread and no timer: it reads a monotonic clock.
///
/// ```swift
/// let limiter = RateLimiter(bandwidth: .init(size: 10 << 20, refillMilliseconds: 1000), operations: nil)
/// limiter.onWakeUp { nanoseconds in timer.arm(after: nanoseconds) }
/// if limiter.consume(bytes: 65536) { /* serve the request */ } else { /* stop; the timer resumes */ }
/// ```
public final class RateLimiter: Sendable {
    /// The settings of one token bucket (Cloud Hypervisor's `TokenBucket` in the API).
    public struct Bucket: Sendable, Hashable, Codable {
        /// The capacity in tokens (`bw_size=` bytes, `ops_size=` operations).
        public var size: UInt64
        /// Extra tokens spent once, before the bucket's own (`..._one_time_burst=`).
        public var oneTimeBurst: UInt64
        /// Milliseconds for an empty bucket to fill up (`..._refill_time=`).
        public var refillMilliseconds: UInt64

        /// A bucket of `size` tokens refilled every `refillMilliseconds`.
        public init(size: UInt64, oneTimeBurst: UInt64 = 0, refillMilliseconds: UInt64) {
            self.size = size
            self.oneTimeBurst = oneTimeBurst
            self.refillMilliseconds = refillMilliseconds
        }

        /// The steady rate, in tokens per second.
        public var tokensPerSecond: Double { Double(size) * 1000 / Double(max(1, refillMilliseconds)) }
    }

    struct BucketPair {
        var bandwidth: TokenBucket?
        var operations: TokenBucket?
        var wakeUpPending = false
        var refusals: UInt64 = 0
    }

    /// The bandwidth bucket's settings, in bytes (`nil`: bytes are not limited).
    public let bandwidth: Bucket?
    /// The operations bucket's settings (`nil`: operations are not limited).
    public let operations: Bucket?
    let clock: @Sendable () -> UInt64
    let state: Mutex<BucketPair>
    private let wakeUp = Mutex<(@Sendable (UInt64) -> Void)?>(nil)

    /// A limiter with full buckets. A bucket whose size or refill time is 0 limits nothing.
    ///
    /// - Parameters:
    ///   - bandwidth: the bytes bucket.
    ///   - operations: the operations bucket.
    ///   - clock: nanoseconds of a monotonic clock (``monotonicNanoseconds()`` by default;
    ///     tests pass a fake one).
    public init(bandwidth: Bucket?, operations: Bucket?, clock: @escaping @Sendable () -> UInt64 = RateLimiter.monotonicNanoseconds) {
        let now = clock()
        let bytes = bandwidth.flatMap { TokenBucket(size: $0.size, oneTimeBurst: $0.oneTimeBurst, refillMilliseconds: $0.refillMilliseconds, now: now) }
        let ops = operations.flatMap { TokenBucket(size: $0.size, oneTimeBurst: $0.oneTimeBurst, refillMilliseconds: $0.refillMilliseconds, now: now) }
        self.bandwidth = bytes == nil ? nil : bandwidth
        self.operations = ops == nil ? nil : operations
        self.clock = clock
        state = Mutex(BucketPair(bandwidth: bytes, operations: ops))
    }

    /// `CLOCK_MONOTONIC` in nanoseconds.
    public static func monotonicNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    /// Whether neither bucket limits anything.
    public var isUnlimited: Bool { bandwidth == nil && operations == nil }

    /// How many times ``consume(bytes:operations:)`` said "not now".
    public var refusals: UInt64 { state.withLock { $0.refusals } }

    /// Whether a wake-up was asked for and has not fired yet (the device waits for it).
    public var isWaiting: Bool { state.withLock { $0.wakeUpPending } }

    /// Sets the handler called with a delay in nanoseconds when a request was refused and
    /// no wake-up is pending; the owner arms a timer and calls ``wakeUpFired()`` when it
    /// expires, then lets the device try again.
    public func onWakeUp(_ handler: @escaping @Sendable (_ nanoseconds: UInt64) -> Void) {
        wakeUp.withLock { $0 = handler }
    }

    /// Takes `bytes` from the bandwidth bucket and `operations` from the operations bucket
    /// when both can pay now, and returns `true`; otherwise takes nothing, asks for a
    /// wake-up (once until ``wakeUpFired()``) and returns `false`.
    ///
    /// A cost larger than a bucket's size is admitted when that bucket is full and leaves
    /// it in debt.
    public func consume(bytes: UInt64, operations: UInt64 = 1) -> Bool {
        attempt(bytes: bytes, operations: operations, take: true)
    }

    /// Whether each bucket holds at least one token, taking nothing; when not, asks for a
    /// wake-up as a refusal does. A receive path asks this before reading a packet whose
    /// size it cannot know, then pays with ``charge(bytes:operations:)``.
    public func admitsAny() -> Bool {
        attempt(bytes: 1, operations: 1, take: false)
    }

    private func attempt(bytes: UInt64, operations: UInt64, take: Bool) -> Bool {
        let now = clock()
        // nil: admitted; 0: refused, a wake-up is already pending; else: refused, wake up after that long.
        let refusal: UInt64? = state.withLock { state in
            state.bandwidth?.refill(now: now)
            state.operations?.refill(now: now)
            let bytesFit = state.bandwidth?.admits(bytes) ?? true
            let operationsFit = operations == 0 || (state.operations?.admits(operations) ?? true)
            if bytesFit && operationsFit {
                if take {
                    state.bandwidth?.take(bytes)
                    if operations > 0 { state.operations?.take(operations) }
                }
                return nil
            }
            state.refusals += 1
            guard !state.wakeUpPending else { return 0 }
            state.wakeUpPending = true
            let forBytes = state.bandwidth?.nanosecondsUntilAdmits(bytes, now: now) ?? 0
            let forOperations = operations == 0 ? 0 : state.operations?.nanosecondsUntilAdmits(operations, now: now) ?? 0
            return max(1, forBytes, forOperations)
        }
        guard let refusal else { return true }
        if refusal > 0, let handler = wakeUp.withLock({ $0 }) { handler(refusal) }
        return false
    }

    /// Pays a cost learnt after the fact (the size of a received packet), possibly into debt.
    public func charge(bytes: UInt64, operations: UInt64 = 0) {
        state.withLock { state in
            if bytes > 0 { state.bandwidth?.take(bytes) }
            if operations > 0 { state.operations?.take(operations) }
        }
    }

    /// Records that the wake-up asked for has come: the next refusal asks for another.
    public func wakeUpFired() {
        state.withLock { $0.wakeUpPending = false }
    }
}
