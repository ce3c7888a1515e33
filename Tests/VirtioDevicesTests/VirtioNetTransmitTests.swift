import GuestMemory
import Testing
import Synchronization
import VirtioDevices
import VirtioQueue

private let tx = VirtioNet.transmitQueueIndex(pair: 0)

@Suite struct VirtioNetTransmitTests {
    @Test func packetReachesTheBackendIntact() throws {
        let guest = try NetGuest()
        try guest.activate()
        let packet = netPacket(frameBytes: 1514, flags: 1, gsoType: 0)
        let head = try guest.postTransmit([packet])
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == [packet])
        let used = try guest.takeUsed(tx)
        #expect(used.map(\.head) == [head])
        #expect(used.map(\.length) == [0])
        #expect(guest.interrupt.events == [.queue(tx)])
        #expect(guest.net.counters == .init(txBytes: 1514, txFrames: 1))
        #expect(guest.net.counters.dictionary["tx_bytes"] == 1514)
        #expect(guest.net.counters.dictionary["tx_frames"] == 1)
    }

    @Test func severalDescriptorsAndSeveralChainsArriveInOrder() throws {
        let guest = try NetGuest()
        try guest.activate()
        let first = netPacket(frameBytes: 300, seed: 1)
        let second = netPacket(frameBytes: 4000, seed: 2)
        // The header split in two, the frame in three pieces, an empty buffer among them.
        try guest.postTransmit([Array(first[0..<5]), Array(first[5..<12]), Array(first[12..<100]), [], Array(first[100...])])
        try guest.postTransmit([Array(second[0..<12]), Array(second[12...])])
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == [first, second])
        #expect(try guest.takeUsed(tx).count == 2)
        #expect(guest.interrupt.events == [.queue(tx)])  // One interrupt per batch.
        #expect(guest.net.counters.txFrames == 2 && guest.net.counters.txBytes == 4300)
    }

    @Test("with event index each packet is returned as it is sent and the driver interrupted when the used index passes its used_event, as QEMU does")
    func eventIndexInterruptsWithinTheBatch() throws {
        let guest = try NetGuest()
        try guest.activate(features: NetGuest.linuxFeatures | VirtioFeature.eventIndex)
        // used_event 1: interrupt once the second packet is used (the first check always interrupts).
        try guest.memory.write(UInt16(1), at: GuestAddress(NetGuest.availableRing(tx) + 4 + 2 * UInt64(guest.queueSize)))
        for seed in 1...3 { try guest.postTransmit([netPacket(frameBytes: 100, seed: UInt8(seed))]) }
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent.count == 3)
        #expect(try guest.takeUsed(tx).count == 3)
        #expect(guest.interrupt.events == [.queue(tx), .queue(tx)], "after the first packet and after the second, not after the third")
    }

    @Test func indirectChainsAreSent() throws {
        let guest = try NetGuest()
        try guest.activate()
        let packet = netPacket(frameBytes: 900)
        try guest.postTransmit([Array(packet[0..<12]), Array(packet[12..<500]), Array(packet[500...])], indirect: true)
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == [packet])
    }

    @Test func writableBuffersAfterThePacketAreIgnored() throws {
        let guest = try NetGuest()
        try guest.activate()
        let packet = netPacket(frameBytes: 60)
        try guest.postTransmit([packet], writableLengths: [32])
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == [packet])
        #expect(try guest.takeUsed(tx).map(\.length) == [0])
    }

    @Test func largestPacketPassesAndLargerOnesAreDropped() throws {
        let guest = try NetGuest()
        try guest.activate()
        let largest = netPacket(frameBytes: VirtioNetABI.maxFrameSize)
        let tooLarge = netPacket(frameBytes: VirtioNetABI.maxFrameSize + 1)
        try guest.postTransmit([Array(largest[0..<40000]), Array(largest[40000...])])
        try guest.postTransmit([tooLarge])
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent.map(\.count) == [VirtioNetABI.maxPacketSize])
        #expect(guest.backends[0].sent.first == largest)
        #expect(try guest.takeUsed(tx).count == 2)
        #expect(guest.net.counters.txDropped == 1)
    }

    @Test func malformedPacketsAreDroppedWithoutStoppingTheDevice() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.postTransmit([[1, 2, 3, 4]])                                 // Shorter than the header.
        try guest.post(queue: tx, [GuestBuffer(address: 0x30000, length: 64, writable: true)])  // Nothing to send.
        try guest.postTransmit([Array(repeating: 0, count: 12)])               // A header without a frame is sent.
        let good = netPacket(frameBytes: 42)
        try guest.postTransmit([good])
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == [Array(repeating: 0, count: 12), good])
        #expect(try guest.takeUsed(tx).map(\.length) == [0, 0, 0, 0])
        #expect(guest.net.counters.txDropped == 2)
        #expect(guest.net.counters.txFrames == 2 && guest.net.counters.txBytes == 42)
    }

    @Test func aFullBackendDropsAndCounts() throws {
        let backend = MemoryNetBackend(sendCapacity: 1)
        let guest = try NetGuest(backends: [backend])
        try guest.activate()
        try guest.postTransmit([netPacket(frameBytes: 100, seed: 1)])
        try guest.postTransmit([netPacket(frameBytes: 100, seed: 2)])
        try guest.net.processQueue(tx)
        #expect(backend.takeSent() == [netPacket(frameBytes: 100, seed: 1)])
        #expect(guest.net.counters.txDropped == 1 && guest.net.counters.txFrames == 1)
        #expect(try guest.takeUsed(tx).count == 2)
        try guest.postTransmit([netPacket(frameBytes: 100, seed: 3)])
        try guest.net.processQueue(tx)
        #expect(backend.sent == [netPacket(frameBytes: 100, seed: 3)])
    }

    @Test func aFailingBackendNeedsReset() throws {
        let guest = try NetGuest()
        try guest.activate()
        let good = netPacket(frameBytes: 80)
        try guest.postTransmit([good])
        try guest.postTransmit([netPacket(frameBytes: 90)])
        try guest.net.processQueue(tx)
        guest.backends[0].failNext(.send, with: .host(call: "writev", errno: 5))
        try guest.postTransmit([netPacket(frameBytes: 90)])
        let error = #expect(throws: VirtioDeviceError.self) { try guest.net.processQueue(tx) }
        guard case .backend(let message)? = error else { Issue.record("unexpected \(String(describing: error))"); return }
        #expect(message.contains("writev") && message.contains("errno 5"))
        #expect(guest.backends[0].sent.count == 2)
    }

    @Test func withEventIndexAvailEventFollowsEveryDrain() throws {
        let guest = try NetGuest()
        try guest.activate(features: NetGuest.linuxFeatures | VirtioFeature.eventIndex)
        for round in 1...3 {
            try guest.postTransmit([netPacket(frameBytes: 60)])
            try guest.net.processQueue(tx)
            #expect(try guest.memory.read(UInt16.self, at: guest.availEvent(tx)) == UInt16(round))
        }
        #expect(guest.backends[0].sent.count == 3)
    }

    @Test func suppressedInterruptIsNotSent() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.memory.write(UInt16(1), at: GuestAddress(NetGuest.availableRing(tx)))  // VIRTQ_AVAIL_F_NO_INTERRUPT
        try guest.postTransmit([netPacket(frameBytes: 60)])
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent.count == 1)
        #expect(guest.interrupt.events.isEmpty)
    }
}

/// Transmit rounds served later (QEMU's bottom half): a notification sends a bounded burst and
/// hands the queue back to the VMM, which serves it again after its other events.
@Suite struct VirtioNetTransmitRoundTests {
    @Test("with serveTransmitLater, a notification sends at most a burst and hands the queue back; the next call sends the rest")
    func aBurstThenTheRest() throws {
        let guest = try NetGuest()
        try guest.activate(features: NetGuest.linuxFeatures | VirtioFeature.eventIndex)
        let scheduled = Mutex<[Int]>([])
        guest.net.serveTransmitLater(burst: 4) { queue in scheduled.withLock { $0.append(queue) } }
        let packets = (1...6).map { netPacket(frameBytes: 100, seed: UInt8($0)) }
        for packet in packets { try guest.postTransmit([packet]) }
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == Array(packets[0..<4]))
        #expect(try guest.takeUsed(tx).count == 4, "the burst's chains are returned before the queue is handed back")
        #expect(scheduled.withLock { $0 } == [tx])
        // Notifications stayed off: avail_event still asks for the first chain's notification.
        #expect(try guest.memory.read(UInt16.self, at: guest.availEvent(tx)) == 0)
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent == packets)
        #expect(try guest.takeUsed(tx).count == 2)
        #expect(scheduled.withLock { $0 } == [tx], "the queue stayed empty: nothing more to schedule")
        #expect(try guest.memory.read(UInt16.self, at: guest.availEvent(tx)) == 6, "re-armed at the driver's index")
        #expect(guest.net.counters.txFrames == 6)
    }

    @Test("without serveTransmitLater a notification sends the whole queue")
    func wholeQueueByDefault() throws {
        let guest = try NetGuest()
        try guest.activate(features: NetGuest.linuxFeatures | VirtioFeature.eventIndex)
        for seed in 1...12 { try guest.postTransmit([netPacket(frameBytes: 60, seed: UInt8(seed))]) }
        try guest.net.processQueue(tx)
        #expect(guest.backends[0].sent.count == 12)
        #expect(try guest.takeUsed(tx).count == 12)
    }
}
