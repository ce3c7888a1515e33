import GuestMemory
import Testing
import VirtioDevices
import VirtioQueue

private typealias F = VirtioNetABI.Feature
private let rx = VirtioNet.receiveQueueIndex(pair: 0)
private let tx = VirtioNet.transmitQueueIndex(pair: 0)
/// A Linux guest without mergeable receive buffers.
private let plainFeatures = NetGuest.linuxFeatures & ~F.mergeableReceiveBuffers

@Suite struct VirtioNetReceiveTests {
    @Test func withoutMergeableBuffersAPacketFillsOneChain() throws {
        let guest = try NetGuest()
        try guest.activate(features: plainFeatures)
        let head = try guest.postReceive([1526])
        try guest.postReceive([1526])
        let packet = netPacket(frameBytes: 1000, flags: 1)
        guest.backends[0].inject(packet)
        // The backend ran dry with a buffer left: keep watching it.
        #expect(guest.net.backendReadable(pair: 0))
        let used = try guest.takeUsed(rx)
        #expect(used.map(\.head) == [head])
        #expect(used.map(\.length) == [1012])
        #expect(used.first?.bytes == withNumBuffers(packet, 1))
        #expect(guest.interrupt.events == [.queue(rx)])
        #expect(guest.net.counters == .init(rxBytes: 1000, rxFrames: 1))
        #expect(guest.net.counters.dictionary["rx_frames"] == 1)
    }

    @Test func aChainOfSeveralBuffersIsFilledInOrder() throws {
        let guest = try NetGuest()
        try guest.activate(features: plainFeatures)
        try guest.postReceive([5, 12, 100, 2000], indirect: true)
        let packet = netPacket(frameBytes: 1500, seed: 9)
        guest.backends[0].inject(packet)
        guest.net.backendReadable(pair: 0)
        let used = try guest.takeUsed(rx)
        #expect(used.map(\.length) == [1512])
        #expect(used.first?.bytes == withNumBuffers(packet, 1))
    }

    @Test func withoutMergeableBuffersATooBigPacketIsDropped() throws {
        let guest = try NetGuest()
        try guest.activate(features: plainFeatures)
        try guest.postReceive([500])
        let big = netPacket(frameBytes: 1000, seed: 1)
        let small = netPacket(frameBytes: 100, seed: 2)
        guest.backends[0].inject(big)
        guest.backends[0].inject(small)
        guest.net.backendReadable(pair: 0)
        let used = try guest.takeUsed(rx)
        #expect(used.map(\.length) == [112])
        #expect(used.first?.bytes == withNumBuffers(small, 1))
        #expect(guest.net.counters.rxDropped == 1 && guest.net.counters.rxFrames == 1)
        #expect(guest.backends[0].pendingCount == 0)
    }

    @Test func aChainLargeEnoughForAnyPacketReceivesStraightFromTheBackend() throws {
        let guest = try NetGuest()
        try guest.activate(features: plainFeatures)
        // Linux without mergeable buffers but with large receive offload posts 64 KiB chains.
        try guest.postReceive([12, 40000, 25550])
        try guest.postReceive([12, 40000, 25550])
        let largest = netPacket(frameBytes: VirtioNetABI.maxFrameSize, seed: 4)
        let small = netPacket(frameBytes: 60, seed: 5)
        guest.backends[0].inject(largest)
        guest.backends[0].inject(small)
        guest.net.backendReadable(pair: 0)
        let used = try guest.takeUsed(rx)
        #expect(used.map(\.length) == [UInt32(VirtioNetABI.maxPacketSize), 72])
        #expect(used.first?.bytes == withNumBuffers(largest, 1))
        #expect(used.last?.bytes == withNumBuffers(small, 1))
        #expect(guest.net.counters.rxBytes == UInt64(VirtioNetABI.maxFrameSize + 60))
    }

    @Test func withMergeableBuffersAPacketSpansSeveralChains() throws {
        let guest = try NetGuest()
        try guest.activate()
        let heads = try (0..<4).map { _ in try guest.postReceive([1536]) }
        let packet = netPacket(frameBytes: 4000, seed: 3)
        guest.backends[0].inject(packet)
        guest.net.backendReadable(pair: 0)
        var used = try guest.takeUsed(rx)
        #expect(used.map(\.head) == Array(heads.prefix(3)))
        #expect(used.map(\.length) == [1536, 1536, 940])
        #expect(used.flatMap(\.bytes) == withNumBuffers(packet, 3))
        #expect(guest.interrupt.events == [.queue(rx)])
        // The fourth chain takes the next packet alone.
        let small = netPacket(frameBytes: 200, seed: 6)
        guest.backends[0].inject(small)
        guest.net.backendReadable(pair: 0)
        used = try guest.takeUsed(rx)
        #expect(used.map(\.head) == [heads[3]])
        #expect(used.first?.bytes == withNumBuffers(small, 1))
        #expect(guest.net.counters == .init(rxBytes: 4200, rxFrames: 2))
    }

    @Test func withMergeableBuffersAndEnoughChainsPacketsGoStraightIntoThem() throws {
        // 48 chains of 1536 bytes hold a largest packet together: the backend writes across
        // them, and each packet takes the chains it fills, in order.
        let guest = try NetGuest(queueSize: 64)
        try guest.activate()
        let heads = try (0..<48).map { _ in try guest.postReceive([1536]) }
        let packets = [netPacket(frameBytes: 5000, seed: 4), netPacket(frameBytes: 60, seed: 5),
                       netPacket(frameBytes: VirtioNetABI.maxPacketSize - VirtioNetABI.headerSize - 3000, seed: 6)]
        for packet in packets { #expect(guest.backends[0].inject(packet)) }
        guest.net.backendReadable(pair: 0)
        let used = try guest.takeUsed(rx)
        let third = packets[2].count
        var expectedLengths: [UInt32] = [1536, 1536, 1536, 404, 72]
        expectedLengths += Array(repeating: UInt32(1536), count: third / 1536)
        expectedLengths.append(UInt32(third % 1536))
        #expect(used.map(\.length) == expectedLengths)
        #expect(used.map(\.head) == Array(heads.prefix(used.count)))
        #expect(used.prefix(4).flatMap(\.bytes) == withNumBuffers(packets[0], 4))
        #expect(used[4].bytes == withNumBuffers(packets[1], 1))
        #expect(used.dropFirst(5).flatMap(\.bytes) == withNumBuffers(packets[2], UInt16(used.count - 5)))
        #expect(guest.net.counters.rxFrames == 3 && guest.net.counters.rxDropped == 0)
        #expect(guest.interrupt.events == [.queue(rx)])
    }

    @Test func withMergeableBuffersAPacketWaitsForEnoughChains() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.postReceive([1000])
        try guest.postReceive([1000])
        let packet = netPacket(frameBytes: 3000, seed: 7)
        guest.backends[0].inject(packet)
        guest.backends[0].inject(netPacket(frameBytes: 10, seed: 8))
        #expect(!guest.net.backendReadable(pair: 0))
        #expect(!guest.net.wantsBackendEvents(pair: 0))
        #expect(try guest.takeUsed(rx).isEmpty)
        // One packet was read and is held; the other stays in the backend.
        #expect(guest.backends[0].pendingCount == 1)
        for _ in 0..<4 { try guest.postReceive([1000]) }
        try guest.net.processQueue(rx)
        let used = try guest.takeUsed(rx)
        #expect(used.map(\.length) == [1000, 1000, 1000, 12, 22])
        #expect(used.prefix(4).flatMap(\.bytes) == withNumBuffers(packet, 4))
        #expect(used.last?.bytes == withNumBuffers(netPacket(frameBytes: 10, seed: 8), 1))
        #expect(guest.net.wantsBackendEvents(pair: 0))
    }

    @Test func aPacketNoQueueCanHoldIsDroppedRatherThanBlockingTheQueue() throws {
        let guest = try NetGuest(queueSize: 4)
        try guest.activate()
        for _ in 0..<4 { try guest.postReceive([100]) }
        guest.backends[0].inject(netPacket(frameBytes: 1000))
        guest.backends[0].inject(netPacket(frameBytes: 50, seed: 2))
        guest.net.backendReadable(pair: 0)
        let used = try guest.takeUsed(rx)
        #expect(used.map(\.length) == [62])
        #expect(guest.net.counters.rxDropped == 1)
    }

    @Test func withoutBuffersPacketsStayInTheBackendUntilTheGuestPostsSome() throws {
        let guest = try NetGuest()
        try guest.activate()
        let packets = (0..<3).map { netPacket(frameBytes: 100 + $0, seed: UInt8($0)) }
        for packet in packets { guest.backends[0].inject(packet) }
        for _ in 0..<50 {
            #expect(!guest.net.backendReadable(pair: 0))
        }
        // Nothing was read: the packets wait in the backend, not in the device.
        #expect(guest.backends[0].pendingCount == 3)
        #expect(guest.backends[0].receiveCalls == 0)
        #expect(!guest.net.wantsBackendEvents(pair: 0))
        try guest.postReceive([1536])
        try guest.postReceive([1536])
        try guest.net.processQueue(rx)
        var used = try guest.takeUsed(rx)
        #expect(used.map(\.bytes) == packets.prefix(2).map { withNumBuffers($0, 1) })
        #expect(guest.interrupt.events == [.queue(rx)])
        #expect(guest.backends[0].pendingCount == 1)
        #expect(!guest.net.wantsBackendEvents(pair: 0))
        try guest.postReceive([1536])
        try guest.postReceive([1536])
        try guest.net.processQueue(rx)
        used = try guest.takeUsed(rx)
        #expect(used.map(\.bytes) == [withNumBuffers(packets[2], 1)])
        #expect(guest.net.wantsBackendEvents(pair: 0))
        #expect(guest.net.counters.rxFrames == 3)
    }

    @Test func withEventIndexRunningOutOfBuffersPublishesAvailEvent() throws {
        let guest = try NetGuest()
        try guest.activate(features: NetGuest.linuxFeatures | VirtioFeature.eventIndex)
        try guest.postReceive([1536])
        try guest.postReceive([1536])
        for seed in 0..<3 { guest.backends[0].inject(netPacket(frameBytes: 64, seed: UInt8(seed))) }
        #expect(!guest.net.backendReadable(pair: 0))
        // The driver's next buffer (index 2) passes avail_event, so it notifies.
        #expect(try guest.memory.read(UInt16.self, at: guest.availEvent(rx)) == 2)
        #expect(try guest.takeUsed(rx).count == 2)
        #expect(guest.interrupt.events == [.queue(rx)])
    }

    @Test func notificationsOfNewBuffersAreWantedOnlyWhenTheBuffersRanOut() throws {
        let guest = try NetGuest()
        try guest.activate()
        let usedFlags = GuestAddress(NetGuest.usedRing(rx))
        try guest.postReceive([1536])
        try guest.postReceive([1536])
        guest.backends[0].inject(netPacket(frameBytes: 60))
        #expect(guest.net.backendReadable(pair: 0))
        #expect(try guest.memory.read(UInt16.self, at: usedFlags) == SplitQueue.usedNoNotify)
        guest.backends[0].inject(netPacket(frameBytes: 60))
        guest.backends[0].inject(netPacket(frameBytes: 60))
        #expect(!guest.net.backendReadable(pair: 0))
        #expect(try guest.memory.read(UInt16.self, at: usedFlags) == 0)

        let indexed = try NetGuest()
        try indexed.activate(features: NetGuest.linuxFeatures | VirtioFeature.eventIndex)
        indexed.backends[0].inject(netPacket(frameBytes: 60))
        #expect(!indexed.net.backendReadable(pair: 0))
        #expect(try indexed.memory.read(UInt16.self, at: indexed.availEvent(rx)) == 0)
        for _ in 0..<3 { try indexed.postReceive([1536]) }
        try indexed.net.processQueue(rx)
        // Buffers remain: avail_event stays where it was, so refills do not notify.
        #expect(try indexed.takeUsed(rx).count == 1)
        #expect(try indexed.memory.read(UInt16.self, at: indexed.availEvent(rx)) == 0)
        #expect(indexed.net.wantsBackendEvents(pair: 0))
    }

    @Test func packetsShorterThanAHeaderAreDropped() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.postReceive([1536])
        guest.backends[0].inject([1, 2, 3])
        guest.backends[0].inject(netPacket(frameBytes: 20))
        guest.net.backendReadable(pair: 0)
        #expect(try guest.takeUsed(rx).map(\.length) == [32])
        #expect(guest.net.counters.rxDropped == 1)
    }

    @Test func twoQueuePairsKeepTheirTrafficApart() throws {
        let guest = try NetGuest(pairs: 2)
        try guest.activate()
        try guest.postReceive(queue: 0, [1536])
        try guest.postReceive(queue: 2, [1536])
        try guest.postReceive(queue: 2, [1536])
        let forPair1 = netPacket(frameBytes: 300, seed: 11)
        guest.backends[1].inject(forPair1)
        #expect(guest.net.backendReadable(pair: 1))
        #expect(try guest.takeUsed(0).isEmpty)
        #expect(try guest.takeUsed(2).map(\.bytes) == [withNumBuffers(forPair1, 1)])
        #expect(guest.interrupt.events == [.queue(2)])
        let fromPair1 = netPacket(frameBytes: 77, seed: 12)
        try guest.postTransmit(queue: 3, [fromPair1])
        try guest.net.processQueue(3)
        #expect(guest.backends[1].sent == [fromPair1])
        #expect(guest.backends[0].sent.isEmpty)
        #expect(guest.net.counters.rxFrames == 1 && guest.net.counters.txFrames == 1)
    }

    @Test func withoutMultiqueueOnlyPairZeroRunsAndQueueTwoIsTheControlQueue() throws {
        let guest = try NetGuest(pairs: 2)
        try guest.activate(features: NetGuest.linuxFeatures & ~F.multiQueue, enabled: [0, 1, 2])
        guest.backends[1].inject(netPacket(frameBytes: 60))
        #expect(!guest.net.backendReadable(pair: 1))
        #expect(!guest.net.wantsBackendEvents(pair: 1))
        #expect(guest.backends[1].pendingCount == 1)
        #expect(try guest.control(VirtioNetABI.ControlClass.receiveMode.rawValue, 0, [1], queue: 2) == 0)
        try guest.net.processQueue(3)  // A queue the driver may not use: ignored.
        try guest.net.processQueue(4)
    }

    @Test func aFailingBackendIsReportedAtTheNextNotification() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.postReceive([1536])
        guest.backends[0].inject(netPacket(frameBytes: 60))
        guest.backends[0].failNext(.receive, with: .host(call: "readv", errno: 14))
        #expect(!guest.net.backendReadable(pair: 0))
        guard case .backend(let message)? = guest.net.receiveError else {
            Issue.record("no receive error recorded")
            return
        }
        #expect(message.contains("readv"))
        #expect(throws: VirtioDeviceError.backend(message)) { try guest.net.processQueue(tx) }
        #expect(!guest.net.backendReadable(pair: 0))
        try guest.reset()
        #expect(guest.net.receiveError == nil)
        try guest.activate()
        try guest.postReceive([1536])
        try guest.net.processQueue(rx)
        #expect(try guest.takeUsed(rx).count == 1)
    }

    @Test func aPacketHeldAcrossAResetReachesTheNextDriver() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.postReceive([100])
        let packet = netPacket(frameBytes: 1000, seed: 21)
        guest.backends[0].inject(packet)
        #expect(!guest.net.backendReadable(pair: 0))
        #expect(guest.backends[0].pendingCount == 0)
        try guest.reset()
        try guest.activate(features: plainFeatures)
        try guest.postReceive([2048])
        try guest.net.processQueue(rx)
        #expect(try guest.takeUsed(rx).map(\.bytes) == [withNumBuffers(packet, 1)])
    }

    @Test func dirtyTrackingSeesPacketsWrittenStraightIntoGuestMemory() throws {
        let guest = try NetGuest()
        try guest.activate(features: plainFeatures)
        try guest.postReceive([VirtioNetABI.maxPacketSize])
        _ = guest.memory.takeDirtyBitmaps()
        guest.memory.enableDirtyTracking()
        guest.backends[0].inject(netPacket(frameBytes: 20000))
        guest.net.backendReadable(pair: 0)
        // The packet's pages (at least four 4 KiB pages) and the used ring's.
        #expect(guest.memory.dirtyPageCount >= 5)
    }
}
