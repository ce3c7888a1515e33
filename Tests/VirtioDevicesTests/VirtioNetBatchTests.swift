import GuestMemory
import Testing
import VirtioDevices
import VirtioQueue

private let rx = VirtioNet.receiveQueueIndex(pair: 0)
private let tx = VirtioNet.transmitQueueIndex(pair: 0)

/// Batches: the transmitted chains published together, a packet's receive chains resolved
/// once and published together, and a broken chain stopping only its own queue.
@Suite struct VirtioNetBatchTests {
    @Test func aBrokenChainMidBatchStillReturnsThePacketsSentBeforeIt() throws {
        let guest = try NetGuest()
        try guest.activate()
        let good = [netPacket(frameBytes: 100, seed: 1), netPacket(frameBytes: 200, seed: 2)]
        let heads = try good.map { try guest.postTransmit([$0]) }
        // A buffer far outside guest memory, after the two good chains in the same batch.
        try guest.putDescriptor(queue: tx, 9, address: 0xffff_0000_0000, length: 100, flags: 0)
        try guest.publish(queue: tx, 9)
        #expect(throws: VirtioDeviceError.self) { try guest.net.processQueue(tx) }
        #expect(guest.backends[0].sent == good)
        // The staged entries of the good chains were published on the way out.
        #expect(try guest.takeUsed(tx).map(\.head) == heads)
    }

    @Test func aBrokenReceiveChainBreaksOnlyItsOwnDevice() throws {
        // Two devices in one guest memory: the first (pair 0, control queue 2) is the
        // NetGuest's; the second serves the rings at the layout's queues 3 and 4.
        let guest = try NetGuest(pairs: 2)
        try guest.activate(features: NetGuest.linuxFeatures & ~VirtioNetABI.Feature.multiQueue, enabled: [0, 1, 2])
        let otherBackend = MemoryNetBackend()
        let other = try VirtioNet(backends: [otherBackend])
        other.acknowledgeFeatures(VirtioNetABI.Feature.mergeableReceiveBuffers | VirtioFeature.version1)
        let rings = try guest.queues(eventIndex: false)
        let otherInterrupt = RecordingInterrupt()
        try other.activate(memory: guest.memory, queues: [rings[3], rings[4], try SplitQueue(maxSize: 64)],
                           interrupt: otherInterrupt)
        // The first device's driver posts a looping receive chain.
        try guest.putDescriptor(queue: 0, 0, address: 0x30000, length: 64, flags: 3, next: 1)
        try guest.putDescriptor(queue: 0, 1, address: 0x30040, length: 64, flags: 3, next: 0)
        try guest.publish(queue: 0, 0)
        guest.backends[0].inject(netPacket(frameBytes: 40))
        #expect(!guest.net.backendReadable(pair: 0))
        #expect(guest.net.receiveError == .queue(index: 0, .chainTooLong(head: 0, limit: 16)))
        #expect(throws: VirtioDeviceError.self) { try guest.net.processQueue(1) }
        // The second device receives and sends as before, several packets per batch.
        for _ in 0..<3 { try guest.postReceive(queue: 3, [1536]) }
        let packets = (0..<3).map { netPacket(frameBytes: 300 + $0, seed: UInt8(20 + $0)) }
        for packet in packets { otherBackend.inject(packet) }
        #expect(other.backendReadable(pair: 0) == false)  // Its buffers ran out.
        #expect(other.receiveError == nil)
        #expect(try guest.takeUsed(3).map(\.bytes) == packets.map { withNumBuffers($0, 1) })
        #expect(otherInterrupt.events == [.queue(0)])
        let outgoing = netPacket(frameBytes: 90, seed: 30)
        try guest.postTransmit(queue: 4, [outgoing])
        try other.processQueue(1)
        #expect(otherBackend.sent == [outgoing])
        #expect(try guest.takeUsed(4).count == 1)
    }

    @Test func chainsLeftInHandAfterAPacketServeTheNextOnesIntact() throws {
        // Mergeable buffers: 48 chains in hand, resolved once each; packets of mixed sizes
        // take them in order across several deliveries, each packet's chains published
        // together (num_buffers of them visible at once).
        let guest = try NetGuest(queueSize: 64)
        try guest.activate()
        let heads = try (0..<48).map { _ in try guest.postReceive([1536]) }
        var seen: [UInt16] = []
        for (index, frame) in [3000, 60, 1524, 9000].enumerated() {
            let packet = netPacket(frameBytes: frame, seed: UInt8(index))
            guest.backends[0].inject(packet)
            #expect(guest.net.backendReadable(pair: 0))
            let used = try guest.takeUsed(rx)
            let chains = (packet.count + 1535) / 1536
            #expect(used.count == chains)
            #expect(used.flatMap(\.bytes) == withNumBuffers(packet, UInt16(chains)))
            seen += used.map(\.head)
        }
        #expect(seen == Array(heads.prefix(seen.count)))
    }
}
