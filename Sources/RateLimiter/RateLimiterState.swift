/// A token bucket's state for snapshot and restore: its settings and what it holds, with
/// no clock reading in it, so it restores into another process (whose monotonic clock
/// has another origin). The refill restarts from the restoring process's "now".
public struct TokenBucketState: Codable, Equatable, Sendable {
    /// The capacity in tokens.
    public var size: UInt64
    /// The one-time burst the bucket was made with.
    public var oneTimeBurst: UInt64
    /// The refill time in nanoseconds.
    public var refillNanoseconds: UInt64
    /// The tokens held when saved (negative: a debt being paid back).
    public var balance: Int64
    /// What was left of the one-time burst.
    public var burstLeft: UInt64

    /// A state with every field given.
    public init(size: UInt64, oneTimeBurst: UInt64, refillNanoseconds: UInt64, balance: Int64, burstLeft: UInt64) {
        self.size = size
        self.oneTimeBurst = oneTimeBurst
        self.refillNanoseconds = refillNanoseconds
        self.balance = balance
        self.burstLeft = burstLeft
    }
}

/// Why a saved rate limiter state does not fit the limiter it is restored into.
public struct RateLimiterStateError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The offending field (for example `bandwidth.balance`).
    public var field: String
    /// What is wrong with it.
    public var reason: String

    /// An error naming `field`.
    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    /// One sentence naming the field.
    public var description: String { "rate limiter state field \(field): \(reason)" }
}

extension TokenBucket {
    /// The bucket's state, refilled up to `now` first so that the balance is current.
    public func state(now: UInt64) -> TokenBucketState {
        var current = self
        current.refill(now: now)
        return TokenBucketState(size: current.size, oneTimeBurst: current.oneTimeBurst,
                                refillNanoseconds: current.refillNanoseconds, balance: current.balance,
                                burstLeft: current.burstLeft)
    }

    /// Takes the balance and burst of `state`, counting the refill from `now`.
    ///
    /// - Throws: ``RateLimiterStateError`` (fields prefixed with `prefix`) when the settings
    ///   differ from this bucket's, the balance is above the size or below the deepest debt
    ///   a bucket can reach, or the burst left exceeds the one-time burst.
    public mutating func restore(_ state: TokenBucketState, now: UInt64, prefix: String = "") throws(RateLimiterStateError) {
        let settings = [("size", state.size, size), ("oneTimeBurst", state.oneTimeBurst, oneTimeBurst),
                        ("refillNanoseconds", state.refillNanoseconds, refillNanoseconds)]
        for (field, saved, own) in settings where saved != own {
            throw RateLimiterStateError(field: prefix + field, reason: "saved \(saved) but this limiter is configured with \(own)")
        }
        guard state.balance <= Int64(size), state.balance >= Int64.min / 2 else {
            throw RateLimiterStateError(field: prefix + "balance", reason: "\(state.balance) is outside \(Int64.min / 2)...\(size)")
        }
        guard state.burstLeft <= min(oneTimeBurst, UInt64(Int64.max / 2)) else {
            throw RateLimiterStateError(field: prefix + "burstLeft", reason: "\(state.burstLeft) exceeds the one-time burst \(oneTimeBurst)")
        }
        setHeld(balance: state.balance, burstLeft: state.burstLeft, now: now)
    }
}

extension RateLimiter {
    /// A limiter's state for snapshot and restore: both buckets and the refusal count.
    ///
    /// A wake-up pending when saved is not kept: the old process's timer is gone, so the
    /// restored limiter asks for a new wake-up at the next refusal (the VMM notifies the
    /// device's queues after restore, which retries the request that was waiting).
    public struct State: Codable, Equatable, Sendable {
        /// The bandwidth bucket (`nil` when bytes are not limited).
        public var bandwidth: TokenBucketState?
        /// The operations bucket (`nil` when operations are not limited).
        public var operations: TokenBucketState?
        /// How many requests were refused so far.
        public var refusals: UInt64

        /// A state with every field given.
        public init(bandwidth: TokenBucketState?, operations: TokenBucketState?, refusals: UInt64) {
            self.bandwidth = bandwidth
            self.operations = operations
            self.refusals = refusals
        }
    }

    /// The current state, the buckets refilled up to now.
    public func saveState() -> State {
        let now = clock()
        return state.withLock { state in
            State(bandwidth: state.bandwidth?.state(now: now), operations: state.operations?.state(now: now),
                  refusals: state.refusals)
        }
    }

    /// Replaces the buckets' contents with `saved`; the refill counts from now on this
    /// limiter's clock. Nothing changes when it throws.
    ///
    /// - Throws: ``RateLimiterStateError`` when a bucket is present in one and not the
    ///   other, or a bucket's state does not fit (see ``TokenBucket/restore(_:now:prefix:)``).
    public func restoreState(_ saved: State) throws(RateLimiterStateError) {
        let now = clock()
        try state.withLock { (state) throws(RateLimiterStateError) in
            let (bandwidth, operations) = try Self.restored(state, saved, now: now)
            state.bandwidth = bandwidth
            state.operations = operations
            state.refusals = saved.refusals
            state.wakeUpPending = false
        }
    }

    /// Checks that `saved` would restore, changing nothing (for a device that restores
    /// several parts and must refuse before changing any).
    ///
    /// - Throws: what ``restoreState(_:)`` would throw.
    public func checkState(_ saved: State) throws(RateLimiterStateError) {
        let now = clock()
        try state.withLock { (state) throws(RateLimiterStateError) in
            _ = try Self.restored(state, saved, now: now)
        }
    }

    /// The buckets `saved` restores into `state`'s.
    private static func restored(_ state: BucketPair, _ saved: State, now: UInt64)
        throws(RateLimiterStateError) -> (TokenBucket?, TokenBucket?)
    {
        var bandwidth = state.bandwidth
        var operations = state.operations
        try restore(&bandwidth, saved.bandwidth, now: now, name: "bandwidth")
        try restore(&operations, saved.operations, now: now, name: "operations")
        return (bandwidth, operations)
    }

    private static func restore(_ bucket: inout TokenBucket?, _ saved: TokenBucketState?, now: UInt64,
                                name: String) throws(RateLimiterStateError) {
        switch (bucket, saved) {
        case (nil, nil): return
        case (.some, nil):
            throw RateLimiterStateError(field: name, reason: "the saved limiter had no \(name) bucket but this one has")
        case (nil, .some):
            throw RateLimiterStateError(field: name, reason: "the saved limiter had a \(name) bucket but this one has none")
        case (.some(var live), .some(let saved)):
            try live.restore(saved, now: now, prefix: name + ".")
            bucket = live
        }
    }
}
