import Foundation
import Testing
import RateLimiter

@Suite("Rate limiter state")
struct RateLimiterStateTests {
    @Test func remainingBudgetSurvivesAnotherClock() throws {
        let oldClock = FakeClock()
        oldClock.advance(milliseconds: 4000)
        let limiter = RateLimiter(bandwidth: .init(size: 1000, oneTimeBurst: 500, refillMilliseconds: 1000),
                                  operations: .init(size: 10, refillMilliseconds: 1000), clock: { oldClock.now })
        #expect(limiter.consume(bytes: 1200, operations: 4))
        let saved = limiter.saveState()
        #expect(saved.bandwidth?.burstLeft == 0 && saved.bandwidth?.balance == 300)
        #expect(saved.operations?.balance == 6)
        let decoded = try JSONDecoder().decode(RateLimiter.State.self, from: JSONEncoder().encode(saved))
        #expect(decoded == saved)

        // A new process: its clock reads far "before" the old one.
        let newClock = FakeClock()
        let restored = RateLimiter(bandwidth: .init(size: 1000, oneTimeBurst: 500, refillMilliseconds: 1000),
                                   operations: .init(size: 10, refillMilliseconds: 1000), clock: { newClock.now })
        try restored.restoreState(decoded)
        #expect(restored.saveState() == saved)
        #expect(!restored.consume(bytes: 400, operations: 1))
        newClock.advance(milliseconds: 100)
        #expect(restored.consume(bytes: 400, operations: 1))
    }

    @Test func refusesStatesOfAnotherConfiguration() throws {
        let clock = FakeClock()
        let limiter = RateLimiter(bandwidth: .init(size: 1000, refillMilliseconds: 1000), operations: nil, clock: { clock.now })
        let good = limiter.saveState()
        var bigger = good
        bigger.bandwidth?.balance = 2000
        var otherSize = good
        otherSize.bandwidth?.size = 2000
        var withOps = good
        withOps.operations = TokenBucketState(size: 1, oneTimeBurst: 0, refillNanoseconds: 1, balance: 1, burstLeft: 0)
        var withBurst = good
        withBurst.bandwidth?.burstLeft = 1
        for (bad, field) in [(bigger, "bandwidth.balance"), (otherSize, "bandwidth.size"), (withOps, "operations"),
                             (withBurst, "bandwidth.burstLeft")] {
            #expect(throws: RateLimiterStateError.self) { try limiter.checkState(bad) }
            do {
                try limiter.restoreState(bad)
                Issue.record("accepted a damaged state")
            } catch {
                #expect(error.field == field)
            }
        }
        #expect(limiter.saveState() == good)
    }
}
