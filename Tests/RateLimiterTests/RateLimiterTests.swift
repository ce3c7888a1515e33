import RateLimiter
import Synchronization
import Testing

/// A clock the test moves by hand.
final class FakeClock: Sendable {
    let nanoseconds = Atomic<UInt64>(1_000_000_000)
    func advance(milliseconds: UInt64) { nanoseconds.add(milliseconds * 1_000_000, ordering: .relaxed) }
    func advance(nanoseconds delta: UInt64) { nanoseconds.add(delta, ordering: .relaxed) }
    var now: UInt64 { nanoseconds.load(ordering: .relaxed) }
}

@Suite("Token bucket")
struct TokenBucketTests {
    @Test("A bucket of size 0 or refill time 0 limits nothing (nil), as Cloud Hypervisor reads it")
    func emptySettingsMeanNoBucket() {
        #expect(TokenBucket(size: 0, refillMilliseconds: 100, now: 0) == nil)
        #expect(TokenBucket(size: 100, refillMilliseconds: 0, now: 0) == nil)
    }

    @Test("Starts full, spends the one-time burst first, then refills at size per refill time")
    func burstThenRefill() throws {
        var bucket = try #require(TokenBucket(size: 1000, oneTimeBurst: 500, refillMilliseconds: 100, now: 0))
        #expect(bucket.admits(1500))
        bucket.take(1500)
        #expect(bucket.balance == 0 && bucket.burstLeft == 0)
        #expect(!bucket.admits(1))
        bucket.refill(now: 10_000_000)                 // 10 ms: 100 tokens
        #expect(bucket.balance == 100)
        #expect(bucket.admits(100) && !bucket.admits(101))
        bucket.refill(now: 1_000_000_000)              // long after: full, never above size
        #expect(bucket.balance == 1000)
        #expect(bucket.burstLeft == 0, "the burst is never refilled")
    }

    @Test("A cost above the size is admitted only by a full bucket and leaves a debt paid back first")
    func oversizedCostLeavesADebt() throws {
        var bucket = try #require(TokenBucket(size: 100, refillMilliseconds: 100, now: 0))
        #expect(bucket.admits(250))
        bucket.take(250)
        #expect(bucket.balance == -150)
        #expect(bucket.nanosecondsUntilAdmits(1, now: 0) == 151_000_000, "151 tokens at 1 token per ms")
        bucket.refill(now: 150_000_000)
        #expect(bucket.balance == 0 && !bucket.admits(1))
        bucket.refill(now: 250_000_000)
        #expect(bucket.balance == 100 && bucket.admits(250), "full again: the next big cost passes")
        bucket.take(50)
        #expect(!bucket.admits(250), "not full: a cost above the size waits for a full bucket")
        #expect(bucket.nanosecondsUntilAdmits(250, now: 250_000_000) == 50_000_000)
    }

    @Test("Extreme settings and costs never trap")
    func extremes() throws {
        var bucket = try #require(TokenBucket(size: .max, oneTimeBurst: .max, refillMilliseconds: .max, now: .max - 1))
        #expect(bucket.admits(.max))
        bucket.take(.max)
        bucket.take(.max)
        bucket.take(.max)
        bucket.refill(now: .max)
        _ = bucket.nanosecondsUntilAdmits(.max, now: .max)
        var tiny = try #require(TokenBucket(size: 1, refillMilliseconds: 1, now: 0))
        tiny.take(1000)                                // 999 tokens of debt at 1 token per ms
        #expect(!tiny.admits(1))
        #expect(tiny.nanosecondsUntilAdmits(1, now: 0) == 1_000_000_000)
        tiny.refill(now: 999_000_000)
        #expect(!tiny.admits(1))
        tiny.refill(now: 1_000_000_000)
        #expect(tiny.admits(1))
    }

    @Test("Fractions of a token carry over between refills")
    func fractionsCarryOver() throws {
        var bucket = try #require(TokenBucket(size: 3, refillMilliseconds: 10, now: 0))
        bucket.take(3)
        var now: UInt64 = 0
        for _ in 0..<30 {                              // 30 steps of 1 ms: 9 tokens earned, 3 kept
            now += 1_000_000
            bucket.refill(now: now)
            if bucket.admits(1) { bucket.take(1) }
        }
        // 3 tokens per 10 ms for 30 ms: 9 taken, whatever the step.
        #expect(bucket.balance == 0)
    }
}

@Suite("Rate limiter")
struct RateLimiterTests {
    @Test("Unlimited without buckets")
    func unlimited() {
        let limiter = RateLimiter(bandwidth: nil, operations: .init(size: 0, refillMilliseconds: 10))
        #expect(limiter.isUnlimited)
        for _ in 0..<1000 { #expect(limiter.consume(bytes: 1 << 30)) }
    }

    @Test("Bandwidth: 1 MiB per 100 ms lets 10 MiB through in about a second of clock, and asks one wake-up per stall")
    func bandwidthRate() {
        let clock = FakeClock()
        let limiter = RateLimiter(bandwidth: .init(size: 1 << 20, refillMilliseconds: 100), operations: nil, clock: { clock.now })
        let wakeUps = Mutex<[UInt64]>([])
        limiter.onWakeUp { nanoseconds in wakeUps.withLock { $0.append(nanoseconds) } }
        let start = clock.now
        var moved: UInt64 = 0
        while moved < 11 << 20 {
            if limiter.consume(bytes: 64 << 10) {
                moved += 64 << 10
                continue
            }
            // A second refusal before the wake-up asks for nothing more.
            #expect(!limiter.consume(bytes: 64 << 10))
            let delay = try? #require(wakeUps.withLock { $0.last })
            clock.advance(nanoseconds: delay ?? 1_000_000)
            limiter.wakeUpFired()
        }
        // The first MiB is the full bucket; the other 10 take 100 ms each.
        let elapsed = Double(clock.now - start) / 1e9
        #expect(elapsed >= 0.99 && elapsed <= 1.01, "\(elapsed) s")
        #expect(wakeUps.withLock { $0.count } == Int(limiter.refusals) / 2)
    }

    @Test("Operations: a request needs both buckets; a refused one takes nothing from either")
    func bothBuckets() {
        let clock = FakeClock()
        let limiter = RateLimiter(bandwidth: .init(size: 1000, refillMilliseconds: 1000),
                                  operations: .init(size: 2, refillMilliseconds: 1000), clock: { clock.now })
        #expect(limiter.consume(bytes: 100))
        #expect(limiter.consume(bytes: 100))
        #expect(!limiter.consume(bytes: 100), "out of operations")
        clock.advance(milliseconds: 500)               // operations 1, bytes full again (800 + 500)
        limiter.wakeUpFired()
        #expect(limiter.consume(bytes: 1000))          // operations 0, bytes 0
        clock.advance(milliseconds: 500)               // operations 1, bytes 500
        limiter.wakeUpFired()
        #expect(!limiter.consume(bytes: 600), "bytes missing")
        #expect(limiter.consume(bytes: 500), "the refused request took no operation")
        #expect(!limiter.consume(bytes: 0), "out of operations again")
    }

    @Test("A receive path asks admitsAny() before reading and pays the packet afterwards")
    func chargeAfterTheFact() {
        let clock = FakeClock()
        let limiter = RateLimiter(bandwidth: .init(size: 1500, refillMilliseconds: 10),
                                  operations: .init(size: 100, refillMilliseconds: 1000), clock: { clock.now })
        #expect(limiter.admitsAny())
        #expect(limiter.admitsAny(), "asking takes nothing")
        limiter.charge(bytes: 3000, operations: 1)     // a 3000-byte packet: 1500 in debt
        #expect(!limiter.admitsAny())
        clock.advance(milliseconds: 10)
        limiter.wakeUpFired()
        #expect(!limiter.admitsAny(), "the debt is paid back first")
        clock.advance(milliseconds: 1)
        #expect(limiter.admitsAny())
    }

    @Test("The wake-up delay is when the refused request fits")
    func wakeUpDelay() {
        let clock = FakeClock()
        let limiter = RateLimiter(bandwidth: nil, operations: .init(size: 10, refillMilliseconds: 1000), clock: { clock.now })
        let delays = Mutex<[UInt64]>([])
        limiter.onWakeUp { nanoseconds in delays.withLock { $0.append(nanoseconds) } }
        for _ in 0..<10 { #expect(limiter.consume(bytes: 0)) }
        #expect(!limiter.admitsAny())
        #expect(!limiter.consume(bytes: 0, operations: 3))
        #expect(delays.withLock { $0 } == [100_000_000], "the admitsAny() refusal asked for the first token")
        limiter.wakeUpFired()
        #expect(!limiter.consume(bytes: 0, operations: 3))
        #expect(delays.withLock { $0 } == [100_000_000, 300_000_000])
        #expect(limiter.isWaiting)
        clock.advance(milliseconds: 300)
        limiter.wakeUpFired()
        #expect(!limiter.isWaiting)
        #expect(limiter.consume(bytes: 0, operations: 3))
    }
}
