import HostSystem
import RateLimiter

/// The timer behind a device's rate limiter: when the limiter refuses a request it asks
/// for a wake-up, this arms a timerfd watched by the event loop, and on expiry the
/// device is let to try again (`resume`), on the event loop thread like the rest of its
/// queue work.
enum RateLimiterWakeUp {
    /// Installs the wake-up of `limiter` on `events`; `resume` runs when the timer expires.
    static func install(_ limiter: RateLimiter, events: EventManager, resume: @escaping @Sendable () -> Void) throws {
        let timer = try TimerFD()
        try events.add(timer.rawValue, events: [.readable]) { _ in
            _ = timer.expirations()
            limiter.wakeUpFired()
            resume()
        }
        limiter.onWakeUp { nanoseconds in
            // The timerfd is the event loop's own; arming it cannot fail for a valid delay.
            try? timer.arm(afterNanoseconds: max(1, nanoseconds))
        }
    }
}
