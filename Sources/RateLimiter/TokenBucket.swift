/// A token bucket: at most ``size`` tokens, refilled at ``size`` tokens per
/// ``refillNanoseconds``, plus a ``oneTimeBurst`` of extra tokens spent first and never
/// refilled (Cloud Hypervisor's and Firecracker's `TokenBucket`).
///
/// The bucket starts full. ``admits(_:)`` says whether a cost can be paid now: the tokens
/// held must cover it, or, for a cost larger than the bucket can ever hold, the bucket
/// must be full. ``take(_:)`` then pays it and may leave a debt (a negative balance) that
/// the refill pays back before anything else is admitted, so that the long-run rate is
/// `size / refill time` whatever the sizes of the costs.
///
/// Time is given by the caller in nanoseconds of a monotonic clock, so that the bucket
/// is a plain value, testable with a fake clock.
public struct TokenBucket: Sendable, Equatable {
    /// The most tokens the bucket holds.
    public let size: UInt64
    /// The extra tokens available once, at the start.
    public let oneTimeBurst: UInt64
    /// How long an empty bucket takes to refill completely, in nanoseconds.
    public let refillNanoseconds: UInt64

    /// The tokens held, negative while a cost larger than what was held is paid back.
    public private(set) var balance: Int64
    /// What is left of the one-time burst.
    public private(set) var burstLeft: UInt64
    /// The instant up to which the refill has been counted.
    private var refilledUntil: UInt64

    /// A full bucket; `nil` when `size` or `refillMilliseconds` is 0 (no limit, as Cloud
    /// Hypervisor reads such a bucket).
    ///
    /// - Parameters:
    ///   - size: the capacity, in tokens (bytes or operations).
    ///   - oneTimeBurst: extra tokens spent before the bucket's own.
    ///   - refillMilliseconds: the time an empty bucket takes to fill up.
    ///   - now: the current instant of the caller's monotonic clock, in nanoseconds.
    public init?(size: UInt64, oneTimeBurst: UInt64 = 0, refillMilliseconds: UInt64, now: UInt64) {
        guard size > 0, refillMilliseconds > 0 else { return nil }
        self.size = min(size, UInt64(Int64.max / 2))
        self.oneTimeBurst = oneTimeBurst
        let (nanoseconds, overflow) = refillMilliseconds.multipliedReportingOverflow(by: 1_000_000)
        refillNanoseconds = overflow ? UInt64.max / 2 : nanoseconds
        balance = Int64(self.size)
        burstLeft = min(oneTimeBurst, UInt64(Int64.max / 2))
        refilledUntil = now
    }

    /// The tokens that must be held to admit `cost`: the cost itself, at least one token,
    /// at most the whole bucket.
    private func threshold(_ cost: UInt64) -> Int64 { Int64(max(1, min(cost, size))) }

    /// Sets what the bucket holds (a restore) and restarts the refill count at `now`.
    mutating func setHeld(balance: Int64, burstLeft: UInt64, now: UInt64) {
        self.balance = balance
        self.burstLeft = burstLeft
        refilledUntil = now
    }

    /// Adds the tokens earned since the last refill, up to ``size``.
    public mutating func refill(now: UInt64) {
        guard now > refilledUntil else { return }
        let elapsed = now - refilledUntil
        let earned = (Double(elapsed) * Double(size) / Double(refillNanoseconds)).rounded(.down)
        if Double(balance) + earned >= Double(size) {
            balance = Int64(size)
            refilledUntil = now
            return
        }
        guard earned >= 1 else { return }
        balance += Int64(earned)
        // Count only the time those whole tokens took: the fraction carries over.
        refilledUntil += min(elapsed, UInt64(earned * Double(refillNanoseconds) / Double(size)))
    }

    /// Whether `cost` can be paid now (call ``refill(now:)`` first).
    public func admits(_ cost: UInt64) -> Bool {
        let available = balance > 0 ? Int64(clamping: UInt64(balance) + burstLeft) : balance + Int64(clamping: burstLeft)
        return available >= threshold(cost)
    }

    /// Pays `cost`: from the one-time burst first, then from the bucket, possibly into debt.
    public mutating func take(_ cost: UInt64) {
        let fromBurst = min(burstLeft, cost)
        burstLeft -= fromBurst
        let rest = Int64(clamping: cost - fromBurst)
        balance = balance > Int64.min / 2 + rest ? balance - rest : Int64.min / 2
    }

    /// Nanoseconds from `now` until ``admits(_:)`` turns true for `cost` (0 when it is true
    /// now); the refill must have been counted up to `now`.
    public func nanosecondsUntilAdmits(_ cost: UInt64, now: UInt64) -> UInt64 {
        guard !admits(cost) else { return 0 }
        let missing = Double(threshold(cost)) - Double(balance) - Double(burstLeft)
        let due = Double(refilledUntil) + (missing * Double(refillNanoseconds) / Double(size)).rounded(.up)
        guard due > Double(now) else { return 1 }
        return due >= Double(UInt64.max / 2) ? UInt64.max / 2 : UInt64(due) - now
    }
}
