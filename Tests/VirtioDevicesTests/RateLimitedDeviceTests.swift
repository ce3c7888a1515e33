import BlockStorage
import GuestMemory
import RateLimiter
import Synchronization
import Testing
import VirtioDevices
import VirtioQueue

/// A monotonic clock the test moves by hand, and the wake-ups a limiter asked for.
final class LimiterHarness: Sendable {
    let nanoseconds = Atomic<UInt64>(5_000_000_000)
    let wakeUps = Mutex<[UInt64]>([])

    /// A limiter on this clock that records its wake-up requests.
    func limiter(bandwidth: RateLimiter.Bucket? = nil, operations: RateLimiter.Bucket? = nil) -> RateLimiter {
        let limiter = RateLimiter(bandwidth: bandwidth, operations: operations, clock: { self.nanoseconds.load(ordering: .relaxed) })
        limiter.onWakeUp { delay in self.wakeUps.withLock { $0.append(delay) } }
        return limiter
    }

    /// Moves the clock by `milliseconds` and tells `limiter` its wake-up came.
    func wake(_ limiter: RateLimiter, after milliseconds: UInt64) {
        nanoseconds.add(milliseconds * 1_000_000, ordering: .relaxed)
        limiter.wakeUpFired()
    }
}

@Suite("Rate-limited devices")
struct RateLimitedDeviceTests {
    @Test("virtio-blk: a refused request stays in the ring, a wake-up is asked for its delay, and it is served after it")
    func blockHoldsRequestsUntilTheWakeUp() throws {
        let harness = LimiterHarness()
        let limiter = harness.limiter(bandwidth: .init(size: 1024, refillMilliseconds: 100))
        let contents = (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7) }
        var blk = try BlockDriver(disk: MemoryBlockBackend(contents: contents), options: .init(rateLimiter: limiter))
        // The full 1024-byte bucket pays two 512-byte reads.
        for sector in UInt64(0)..<2 {
            let served = try blk.submit(type: 0, sector: sector, dataLengths: [512], deviceWrites: true)
            #expect(served.status == 0 && served.used == 513)
        }
        let third = try blk.submit(type: 0, sector: 2, dataLengths: [512], deviceWrites: true)
        #expect(third.status == 0xEE, "not served: the status byte is untouched")
        #expect(try blk.driver.usedEntry(0).index == 2)
        #expect(harness.wakeUps.withLock { $0 } == [50_000_000], "512 bytes at 1024 bytes per 100 ms")
        // Notifications before the wake-up change nothing and ask for no second one.
        blk.driver.notify()
        #expect(try blk.driver.usedEntry(0).index == 2)
        #expect(harness.wakeUps.withLock { $0.count } == 1)
        harness.wake(limiter, after: 50)
        blk.driver.notify()                                        // what the VMM's timer does
        #expect(try blk.driver.usedEntry(0).index == 3)
        #expect(try blk.driver.usedEntry(2).length == 513)
        #expect(try blk.guestData(512) == Array(contents[1024..<1536]))
        #expect(blk.device.counters.readOps == 3)
        #expect(blk.driver.status & VirtioStatus.deviceNeedsReset == 0)
    }

    @Test("virtio-blk: the operations bucket counts every request, flushes included")
    func blockOperations() throws {
        let harness = LimiterHarness()
        let limiter = harness.limiter(operations: .init(size: 2, refillMilliseconds: 1000))
        var blk = try BlockDriver(options: .init(rateLimiter: limiter))
        #expect(try blk.submit(type: 4, sector: 0).status == 0)      // flush
        #expect(try blk.submit(type: 1, sector: 0, dataLengths: [512], payload: [UInt8](repeating: 1, count: 512)).status == 0)
        #expect(try blk.submit(type: 4, sector: 0).status == 0xEE)
        #expect(harness.wakeUps.withLock { $0 } == [500_000_000])
        harness.wake(limiter, after: 500)
        blk.driver.notify()
        #expect(try blk.driver.usedEntry(0).index == 3)
    }

    @Test("virtio-net transmit: packets past the limit wait in the ring and leave in order after the wake-up")
    func transmitWaits() throws {
        let harness = LimiterHarness()
        let limiter = harness.limiter(operations: .init(size: 2, refillMilliseconds: 100))
        let guest = try NetGuest(options: .init(mac: MACAddress("52:54:00:12:34:56")!, transmitRateLimiter: limiter))
        try guest.activate()
        let packets = (1...5).map { netPacket(frameBytes: 100, seed: UInt8($0)) }
        for packet in packets { try guest.postTransmit([packet]) }
        let tx = VirtioNet.transmitQueueIndex(pair: 0)
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == Array(packets[0..<2]))
        #expect(try guest.takeUsed(tx).count == 2)
        #expect(harness.wakeUps.withLock { $0 } == [50_000_000])
        harness.wake(limiter, after: 100)
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == Array(packets[0..<4]))
        harness.wake(limiter, after: 100)
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == packets)
        #expect(guest.net.counters.txFrames == 5 && guest.net.counters.txDropped == 0)
    }

    @Test("virtio-net receive: packets stay in the backend while the limit is spent, none is lost or reordered")
    func receiveWaits() throws {
        let harness = LimiterHarness()
        // 1000 frame bytes per 10 ms: one 1000-byte frame empties the bucket.
        let limiter = harness.limiter(bandwidth: .init(size: 1000, refillMilliseconds: 10))
        let guest = try NetGuest(options: .init(mac: MACAddress("52:54:00:12:34:56")!, receiveRateLimiter: limiter))
        try guest.activate()
        let rx = VirtioNet.receiveQueueIndex(pair: 0)
        for _ in 0..<4 { try guest.postReceive([VirtioNetABI.maxPacketSize]) }
        let packets = (1...3).map { netPacket(frameBytes: 1000, seed: UInt8($0)) }
        for packet in packets { #expect(guest.backends[0].inject(packet)) }
        #expect(guest.net.backendReadable(pair: 0), "still wants the backend: buffers are left")
        #expect(try guest.takeUsed(rx).map(\.bytes) == [withNumBuffers(packets[0], 1)])
        #expect(guest.backends[0].pendingCount == 2)
        #expect(harness.wakeUps.withLock { $0 } == [10_000], "one token: 10 ms / 1000")
        harness.wake(limiter, after: 10)
        _ = guest.net.backendReadable(pair: 0)                       // what the VMM's timer does
        #expect(try guest.takeUsed(rx).map(\.bytes) == [withNumBuffers(packets[1], 1)])
        harness.wake(limiter, after: 10)
        _ = guest.net.backendReadable(pair: 0)
        #expect(try guest.takeUsed(rx).map(\.bytes) == [withNumBuffers(packets[2], 1)])
        #expect(guest.backends[0].pendingCount == 0)
        #expect(guest.net.counters.rxFrames == 3 && guest.net.counters.rxDropped == 0)
    }
}
