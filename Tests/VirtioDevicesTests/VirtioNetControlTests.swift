import GuestMemory
import Testing
import TestSupport
import VirtioDevices
import VirtioQueue

private typealias F = VirtioNetABI.Feature
private typealias C = VirtioNetABI.ControlClass
private let ok: UInt8 = 0
private let err: UInt8 = 1

@Suite struct VirtioNetControlTests {
    @Test func receiveModeCommandsAreAcknowledged() throws {
        let guest = try NetGuest()
        try guest.activate()
        for command in UInt8(0)...5 {
            #expect(try guest.control(C.receiveMode.rawValue, command, [1]) == ok, "command \(command)")
        }
        #expect(try guest.control(C.receiveMode.rawValue, 6, [1]) == err)
        #expect(try guest.control(C.receiveMode.rawValue, 0, []) == err)
        #expect(guest.interrupt.events.allSatisfy { $0 == .queue(guest.net.controlQueueIndex) })
    }

    @Test func macTableSetIsCheckedForShape() throws {
        let guest = try NetGuest()
        try guest.activate()
        let unicast: [UInt8] = [1, 0, 0, 0] + [0x52, 0x54, 0, 1, 2, 3]
        let multicast: [UInt8] = [2, 0, 0, 0] + [0x01, 0, 0x5e, 0, 0, 1] + [0x33, 0x33, 0, 0, 0, 1]
        #expect(try guest.control(C.mac.rawValue, VirtioNetABI.macTableSet, unicast + multicast) == ok)
        #expect(try guest.control(C.mac.rawValue, VirtioNetABI.macTableSet, [0, 0, 0, 0, 0, 0, 0, 0]) == ok)
        #expect(try guest.control(C.mac.rawValue, VirtioNetABI.macTableSet, unicast) == err)                 // No multicast table.
        #expect(try guest.control(C.mac.rawValue, VirtioNetABI.macTableSet, unicast + multicast + [0]) == err)  // Trailing byte.
        #expect(try guest.control(C.mac.rawValue, VirtioNetABI.macTableSet, [0xff, 0xff, 0xff, 0xff]) == err)   // Huge count.
        #expect(try guest.control(C.mac.rawValue, 7, []) == err)
    }

    @Test func macAddressSetChangesTheConfigurationUntilReset() throws {
        let guest = try NetGuest()
        try guest.activate()
        let original = guest.net.mac
        let new: [UInt8] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]
        #expect(try guest.control(C.mac.rawValue, VirtioNetABI.macAddressSet, new) == ok)
        #expect(guest.net.mac.bytes == new)
        #expect((0..<6).map { UInt8(guest.net.readConfig(offset: UInt64($0), size: 1)) } == new)
        #expect(try guest.control(C.mac.rawValue, VirtioNetABI.macAddressSet, [0x03, 1, 2, 3, 4, 5]) == err)  // Multicast.
        #expect(try guest.control(C.mac.rawValue, VirtioNetABI.macAddressSet, [2, 1, 2, 3, 4]) == err)        // Short.
        #expect(guest.net.mac.bytes == new)
        try guest.reset()
        #expect(guest.net.mac == original)
    }

    @Test func queuePairsSetAcceptsOneToTheMaximum() throws {
        let guest = try NetGuest(pairs: 2)
        try guest.activate()
        #expect(guest.net.activeQueuePairs == 1)
        #expect(try guest.control(C.multiQueue.rawValue, VirtioNetABI.queuePairsSet, [2, 0]) == ok)
        #expect(guest.net.activeQueuePairs == 2)
        #expect(try guest.control(C.multiQueue.rawValue, VirtioNetABI.queuePairsSet, [0, 0]) == err)
        #expect(try guest.control(C.multiQueue.rawValue, VirtioNetABI.queuePairsSet, [3, 0]) == err)
        #expect(try guest.control(C.multiQueue.rawValue, VirtioNetABI.queuePairsSet, [2]) == err)
        #expect(try guest.control(C.multiQueue.rawValue, 1, [2, 0]) == err)  // RSS is not offered.
        #expect(try guest.control(C.multiQueue.rawValue, VirtioNetABI.queuePairsSet, [1, 0]) == ok)
        #expect(guest.net.activeQueuePairs == 1)

        let single = try NetGuest()
        try single.activate()
        #expect(try single.control(C.multiQueue.rawValue, VirtioNetABI.queuePairsSet, [1, 0]) == err)  // No multiqueue.
    }

    @Test func guestOffloadsSetReprogramsTheBackendsWithinTheNegotiatedOnes() throws {
        let guest = try NetGuest(pairs: 2)
        try guest.activate(features: NetGuest.linuxFeatures & ~(F.guestTSO6 | F.guestUFO))
        let set = VirtioNetABI.guestOffloadsSet
        func le64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) } }
        #expect(try guest.control(C.guestOffloads.rawValue, set, le64(F.guestChecksum)) == ok)
        #expect(try guest.control(C.guestOffloads.rawValue, set, le64(F.guestChecksum | F.guestTSO4 | F.guestECN)) == ok)
        #expect(try guest.control(C.guestOffloads.rawValue, set, le64(0)) == ok)
        for backend in guest.backends {
            #expect(backend.offloadHistory == [[.checksum, .tso4, .tsoECN], [.checksum], [.checksum, .tso4, .tsoECN], []])
        }
        #expect(try guest.control(C.guestOffloads.rawValue, set, le64(F.guestTSO6)) == err)  // Not negotiated.
        #expect(try guest.control(C.guestOffloads.rawValue, set, le64(F.mac)) == err)        // Not an offload.
        #expect(try guest.control(C.guestOffloads.rawValue, set, [1, 0, 0]) == err)          // Short.
        guest.backends[1].failNext(.setOffloads, with: .host(call: "TUNSETOFFLOAD", errno: 22))
        #expect(try guest.control(C.guestOffloads.rawValue, set, le64(F.guestChecksum)) == err)
        #expect(guest.backends[0].offloadHistory.count == 5)

        let fixed = try NetGuest()
        try fixed.activate(features: NetGuest.linuxFeatures & ~F.controlGuestOffloads)
        #expect(try fixed.control(C.guestOffloads.rawValue, set, le64(F.guestChecksum)) == err)
    }

    @Test func unknownAndUnofferedClassesAreRefused() throws {
        let guest = try NetGuest()
        try guest.activate()
        #expect(try guest.control(9, 0, [0]) == err)
        #expect(try guest.control(C.vlan.rawValue, 0, [1, 0]) == err)
        #expect(try guest.control(C.announce.rawValue, 0, []) == err)
        #expect(try guest.control(0xff, 0xff, []) == err)
        #expect(guest.net.isActivated)
    }

    @Test func theAcknowledgementGoesInTheFirstWritableByte() throws {
        let guest = try NetGuest()
        try guest.activate()
        let index = guest.net.controlQueueIndex
        try guest.postTransmit(queue: index, [[C.receiveMode.rawValue, 1], [0]], writableLengths: [4])
        try guest.postTransmit(queue: index, [[0x42]], writableLengths: [1, 1])  // Too short a command.
        try guest.net.processQueue(index)
        let used = try guest.takeUsed(index)
        #expect(used.map(\.length) == [1, 1])
        #expect(used.map(\.bytes) == [[ok], [err]])
    }

    @Test func aCommandWithoutRoomForItsAcknowledgementNeedsReset() throws {
        let guest = try NetGuest()
        try guest.activate()
        let index = guest.net.controlQueueIndex
        let head = try guest.postTransmit(queue: index, [[C.receiveMode.rawValue, 0, 1]])
        #expect(throws: VirtioDeviceError.noWritableBuffer(queue: index, head: head)) { try guest.net.processQueue(index) }
    }

    @Test func withoutANegotiatedControlQueueItsIndexIsIgnored() throws {
        let guest = try NetGuest()
        try guest.activate(features: F.mac)
        try guest.postTransmit(queue: 2, [[0, 0, 1]], writableLengths: [1])
        try guest.net.processQueue(2)
        #expect(try guest.takeUsed(2).isEmpty)
    }
}

@Suite struct VirtioNetHostileTests {
    @Test func transmitBufferOutsideGuestMemory() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.putDescriptor(queue: 1, 5, address: NetGuest.memorySize - 8, length: 64, flags: 0)
        try guest.publish(queue: 1, 5)
        let error = #expect(throws: VirtioDeviceError.self) { try guest.net.processQueue(1) }
        guard case .queue(index: 1, .descriptorOutOfMemory)? = error else {
            Issue.record("unexpected \(String(describing: error))")
            return
        }
        #expect(guest.backends[0].sent.isEmpty)
    }

    @Test func loopingReceiveChainFoundWhilePacketsArrive() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.putDescriptor(queue: 0, 0, address: 0x30000, length: 64, flags: 3, next: 1)
        try guest.putDescriptor(queue: 0, 1, address: 0x30040, length: 64, flags: 3, next: 0)
        try guest.publish(queue: 0, 0)
        guest.backends[0].inject(netPacket(frameBytes: 40))
        #expect(!guest.net.backendReadable(pair: 0))
        let expected = VirtioDeviceError.queue(index: 0, .chainTooLong(head: 0, limit: 16))
        #expect(guest.net.receiveError == expected)
        #expect(throws: expected) { try guest.net.processQueue(1) }
        #expect(guest.backends[0].pendingCount == 1)  // Nothing was read for a broken chain.
    }

    @Test func hugeReceiveBufferIsRefused() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.putDescriptor(queue: 0, 2, address: 0x30000, length: .max, flags: 2)
        try guest.publish(queue: 0, 2)
        let error = #expect(throws: VirtioDeviceError.self) { try guest.net.processQueue(0) }
        guard case .queue(index: 0, .descriptorOutOfMemory)? = error else {
            Issue.record("unexpected \(String(describing: error))")
            return
        }
    }

    @Test func receiveChainWithoutWritableBuffer() throws {
        let guest = try NetGuest()
        try guest.activate()
        let head = try guest.postTransmit(queue: 0, [[1, 2, 3]])
        #expect(throws: VirtioDeviceError.noWritableBuffer(queue: 0, head: head)) { try guest.net.processQueue(0) }
    }

    @Test func availableIndexJumpAndHeadOutOfRange() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.memory.write(UInt16(100), at: GuestAddress(NetGuest.availableRing(1) + 2))
        #expect(throws: VirtioDeviceError.queue(index: 1, .availableIndexJump(lastSeen: 0, published: 100, size: 16))) {
            try guest.net.processQueue(1)
        }
        let other = try NetGuest()
        try other.activate()
        try other.publish(queue: 2, 200)
        #expect(throws: VirtioDeviceError.queue(index: 2, .headIndexOutOfRange(head: 200, size: 16))) {
            try other.net.processQueue(2)
        }
    }

    @Test func randomDriversNeverCrashTheDevice() throws {
        // Seeded random descriptors, ring indices and packets on every queue of a two-pair device.
        var random = SplitMix64(seed: 0x6e65_7400)
        for round in 0..<40 {
            let guest = try NetGuest(pairs: 2, backends: [MemoryNetBackend(sendCapacity: 4), MemoryNetBackend(receiveCapacity: 2)])
            try guest.activate(features: UInt64.random(in: 0...UInt64.max, using: &random))
            for _ in 0..<60 {
                let queue = Int.random(in: 0..<guest.queueCount, using: &random)
                switch Int.random(in: 0..<6, using: &random) {
                case 0:
                    let length = UInt32.random(in: 0...70000, using: &random)
                    let address = UInt64.random(in: 0...(NetGuest.memorySize + 0x1000), using: &random)
                    try guest.putDescriptor(queue: queue, UInt16.random(in: 0..<20, using: &random), address: address,
                                            length: length, flags: UInt16.random(in: 0...7, using: &random),
                                            next: UInt16.random(in: 0..<20, using: &random))
                case 1:
                    try guest.publish(queue: queue, UInt16.random(in: 0..<18, using: &random))
                case 2:
                    let size = Int.random(in: 0...3000, using: &random)
                    guest.backends[Int.random(in: 0..<2, using: &random)].inject(netPacket(frameBytes: size, seed: UInt8(round)))
                case 3:
                    _ = guest.net.backendReadable(pair: Int.random(in: -1...2, using: &random))
                case 4:
                    try? guest.net.processQueue(queue)
                default:
                    _ = guest.backends[0].takeSent()
                    _ = guest.net.readConfig(offset: UInt64.random(in: 0...16, using: &random), size: 4)
                }
                let counters = guest.net.counters
                #expect(counters.rxBytes <= counters.rxFrames * UInt64(VirtioNetABI.maxFrameSize))
                #expect(counters.txBytes <= counters.txFrames * UInt64(VirtioNetABI.maxFrameSize))
            }
        }
    }
}
