import GuestMemory
import PCI
import Testing
import TestSupport
import VirtioDevices
import VirtioQueue

private typealias F = VirtioNetABI.Feature

@Suite struct VirtioNetIdentityTests {
    @Test func defaultFeaturesAreCloudHypervisorsSet() throws {
        let net = try VirtioNet(backends: [MemoryNetBackend()])
        let expected = F.checksum | F.guestChecksum | F.controlGuestOffloads | F.mac | F.guestTSO4 | F.guestTSO6
            | F.guestECN | F.guestUFO | F.hostTSO4 | F.hostTSO6 | F.hostECN | F.hostUFO | F.mergeableReceiveBuffers
            | F.status | F.controlQueue | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
        #expect(net.features == expected)
        #expect(net.deviceType == .net)
        #expect(net.pciClassCode == .ethernet)
        #expect(net.queueMaxSizes == [256, 256, 256])
        #expect(net.controlQueueIndex == 2)
    }

    @Test func optionsShapeTheFeatures() throws {
        let two = try VirtioNet(backends: [MemoryNetBackend(), MemoryNetBackend()], options: .init(mtu: 1400, queueSize: 64))
        #expect(two.features & F.multiQueue != 0)
        #expect(two.features & F.mtu != 0)
        #expect(two.queueMaxSizes == [64, 64, 64, 64, 64])
        #expect(two.controlQueueIndex == 4)
        #expect(VirtioNet.receiveQueueIndex(pair: 1) == 2 && VirtioNet.transmitQueueIndex(pair: 1) == 3)

        let noTSO = try VirtioNet(backends: [MemoryNetBackend()], options: .init(offloadTSO: false))
        #expect(noTSO.features & (F.hostTSO4 | F.hostTSO6 | F.hostECN | F.guestTSO4 | F.guestTSO6 | F.guestECN) == 0)
        #expect(noTSO.features & (F.checksum | F.guestChecksum | F.hostUFO | F.guestUFO) == F.checksum | F.guestChecksum | F.hostUFO | F.guestUFO)
        let noUFO = try VirtioNet(backends: [MemoryNetBackend()], options: .init(offloadUFO: false))
        #expect(noUFO.features & (F.hostUFO | F.guestUFO) == 0)
        #expect(noUFO.features & F.guestTSO4 != 0)
        let noChecksum = try VirtioNet(backends: [MemoryNetBackend()], options: .init(offloadChecksum: false))
        #expect(noChecksum.features & (F.guestOffloads | F.checksum | F.hostTSO4 | F.hostUFO | F.controlGuestOffloads) == 0)
        #expect(noChecksum.features & F.mergeableReceiveBuffers != 0)
    }

    @Test func configurationSpaceHoldsMacStatusPairsAndMTU() throws {
        let mac = try #require(MACAddress("52:54:00:ab:cd:ef"))
        let net = try VirtioNet(backends: [MemoryNetBackend(), MemoryNetBackend()], options: .init(mac: mac, mtu: 9000))
        #expect((0..<6).map { UInt8(net.readConfig(offset: UInt64($0), size: 1)) } == mac.bytes)
        #expect(net.readConfig(offset: 0, size: 4) == 0xab00_5452)
        #expect(net.readConfig(offset: 6, size: 2) == UInt64(VirtioNetABI.statusLinkUp))
        #expect(net.readConfig(offset: 8, size: 2) == 2)
        #expect(net.readConfig(offset: 10, size: 2) == 9000)
        #expect(net.readConfig(offset: 0, size: 8) == 0x0001_efcd_ab00_5452)
        #expect(net.readConfig(offset: 12, size: 4) == 0)
        #expect(net.readConfig(offset: 10, size: 4) == 9000)  // Bytes past the end read 0.
        net.writeConfig(offset: 0, size: 4, value: 0xffff_ffff)
        #expect(net.mac == mac)
        let noMTU = try VirtioNet(backends: [MemoryNetBackend()], options: .init(mac: mac))
        #expect(noMTU.readConfig(offset: 10, size: 2) == 0)
        #expect(noMTU.readConfig(offset: 8, size: 2) == 1)
    }

    @Test func badOptionsAreRefusedWithReasons() throws {
        #expect(throws: VirtioNetError.noBackend) { try VirtioNet(backends: []) }
        #expect(throws: VirtioNetError.invalidQueueSize(100)) {
            try VirtioNet(backends: [MemoryNetBackend()], options: .init(queueSize: 100))
        }
        #expect(throws: VirtioNetError.invalidQueueSize(0)) {
            try VirtioNet(backends: [MemoryNetBackend()], options: .init(queueSize: 0))
        }
        let multicast = try #require(MACAddress("01:00:5e:00:00:01"))
        #expect(throws: VirtioNetError.multicastMAC(multicast)) {
            try VirtioNet(backends: [MemoryNetBackend()], options: .init(mac: multicast))
        }
        #expect(throws: VirtioNetError.mtuTooSmall(67)) {
            try VirtioNet(backends: [MemoryNetBackend()], options: .init(mtu: 67))
        }
        #expect(VirtioNetError.mtuTooSmall(67).description.contains("at least 68"))
        #expect(VirtioNetError.multicastMAC(multicast).description.contains("01:00:5e:00:00:01"))
    }

    @Test func macAddressesParsePrintAndRandomizeAsUnicastLocal() throws {
        let mac = try #require(MACAddress("12:34:56:78:9A:bc"))
        #expect(mac.bytes == [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc])
        #expect(mac.description == "12:34:56:78:9a:bc")
        #expect(MACAddress(mac.description) == mac)
        #expect(MACAddress(bytes: [0, 1, 2, 3, 4, 5])?.description == "00:01:02:03:04:05")
        for bad in ["", "12:34:56:78:9a", "12:34:56:78:9a:bc:de", "12-34-56-78-9a-bc", "1:234:56:78:9a:bc", "12:34:56:78:9a:zz"] {
            #expect(MACAddress(bad) == nil, "\(bad) parsed")
        }
        #expect(MACAddress(bytes: [1, 2, 3]) == nil)
        var generator = SplitMix64(seed: 42)
        var seen = Set<MACAddress>()
        for _ in 0..<200 {
            let random = MACAddress.random(using: &generator)
            #expect(!random.isMulticast && random.isLocallyAdministered)
            seen.insert(random)
        }
        #expect(seen.count == 200)
        #expect(!MACAddress.random().isMulticast)
    }
}

@Suite struct VirtioNetLifecycleTests {
    @Test func activationGivesTheNegotiatedReceiveOffloadsToEveryBackend() throws {
        let guest = try NetGuest(pairs: 2)
        try guest.activate(features: F.guestChecksum | F.guestTSO4 | F.guestECN | F.hostTSO6 | F.multiQueue | F.controlQueue)
        for backend in guest.backends {
            #expect(backend.offloadHistory == [[.checksum, .tso4, .tsoECN]])
        }
        // A new driver without receive offloads: the backends must stop giving offloaded packets.
        try guest.reset()
        try guest.activate(features: F.checksum | F.hostTSO4)
        for backend in guest.backends {
            #expect(backend.offloadHistory == [[.checksum, .tso4, .tsoECN], []])
        }
        try guest.reset()
        try guest.activate(features: F.guestOffloads)
        #expect(guest.backends[0].offloadHistory.last == [.checksum, .tso4, .tso6, .tsoECN, .ufo])
    }

    @Test func activationNeedsQueuePairZeroAndTheRightQueueCount() throws {
        let guest = try NetGuest()
        guest.net.acknowledgeFeatures(VirtioFeature.version1)
        #expect(throws: VirtioDeviceError.queueNotEnabled(index: 0)) {
            try guest.net.activate(memory: guest.memory, queues: guest.queues(eventIndex: false, enabled: [1, 2]),
                                   interrupt: guest.interrupt)
        }
        #expect(throws: VirtioDeviceError.queueNotEnabled(index: 1)) {
            try guest.net.activate(memory: guest.memory, queues: guest.queues(eventIndex: false, enabled: [0, 2]),
                                   interrupt: guest.interrupt)
        }
        #expect(throws: VirtioDeviceError.queueIndexOutOfRange(index: 2, count: 3)) {
            try guest.net.activate(memory: guest.memory, queues: Array(guest.queues(eventIndex: false).prefix(2)),
                                   interrupt: guest.interrupt)
        }
        #expect(!guest.net.isActivated)
        #expect(throws: VirtioDeviceError.notActivated) { try guest.net.processQueue(1) }
        #expect(throws: VirtioDeviceError.queueIndexOutOfRange(index: 3, count: 3)) { try guest.net.processQueue(3) }
        // Without a control queue the driver may run with pair 0 alone.
        try guest.net.activate(memory: guest.memory, queues: guest.queues(eventIndex: false, enabled: [0, 1]),
                               interrupt: guest.interrupt)
        #expect(guest.net.isActivated)
    }

    @Test func backendRefusingOffloadsFailsActivation() throws {
        let guest = try NetGuest()
        guest.backends[0].failNext(.setOffloads, with: .host(call: "TUNSETOFFLOAD", errno: 22))
        let error = #expect(throws: VirtioDeviceError.self) { try guest.activate() }
        guard case .backend(let message)? = error else { Issue.record("unexpected \(String(describing: error))"); return }
        #expect(message.contains("TUNSETOFFLOAD"))
        #expect(!guest.net.isActivated)
    }

    @Test func resetForgetsQueuesButKeepsBackendsAndCounters() throws {
        let guest = try NetGuest()
        try guest.activate()
        try guest.postTransmit([netPacket(frameBytes: 60)])
        try guest.net.processQueue(1)
        try guest.reset()
        #expect(!guest.net.isActivated)
        #expect(guest.net.backendReadable(pair: 0) == false)
        #expect(throws: VirtioDeviceError.notActivated) { try guest.net.processQueue(1) }
        try guest.activate()
        try guest.postTransmit([netPacket(frameBytes: 70)])
        try guest.net.processQueue(1)
        #expect(guest.backends[0].sent.map(\.count) == [72, 82])
        #expect(guest.net.counters.txFrames == 2)
    }
}

@Suite struct VirtioNetTransportTests {
    /// Brings a virtio-net function up through the PCI transport with queues 0, 1 and 2
    /// at their own rings, and returns the driver.
    private func bringUp(_ net: VirtioNet, features: UInt64) throws -> Driver {
        let driver = try Driver(device: net)
        driver.enableMSIX()
        driver.negotiate(features | VirtioFeature.version1)
        typealias C = VirtioCommonConfig
        for queue in 0..<3 {
            let base = 0x40000 + UInt64(queue) * 0x4000
            driver.write(C.queueSelect, size: 2, UInt64(queue))
            driver.write(C.queueSize, size: 2, 16)
            driver.write(C.queueMSIXVector, size: 2, 1)
            driver.write(C.queueDescriptor, size: 4, base)
            driver.write(C.queueDriver, size: 4, base + 0x1000)
            driver.write(C.queueDevice, size: 4, base + 0x2000)
            driver.write(C.queueEnable, size: 2, 1)
        }
        driver.setStatus(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK)
        return driver
    }

    @Test func featuresAndConfigurationThroughTheBAR() throws {
        let mac = try #require(MACAddress("52:54:00:00:00:07"))
        let net = try VirtioNet(backends: [MemoryNetBackend()], options: .init(mac: mac, mtu: 1500))
        let driver = try Driver(device: net)
        driver.write(VirtioCommonConfig.deviceFeatureSelect, size: 4, 0)
        let low = driver.read(VirtioCommonConfig.deviceFeature, size: 4)
        driver.write(VirtioCommonConfig.deviceFeatureSelect, size: 4, 1)
        let high = driver.read(VirtioCommonConfig.deviceFeature, size: 4)
        #expect(low | high << 32 == net.features | VirtioFeature.version1)
        #expect(driver.read(VirtioCommonConfig.numQueues, size: 2) == 3)
        let config = VirtioPCILayout.deviceConfigOffset
        #expect(driver.read(config, size: 4) == 0x0000_5452)
        #expect(driver.read(config + 4, size: 2) == 0x0700)
        #expect(driver.read(config + 6, size: 2) == 1)
        #expect(driver.read(config + 10, size: 2) == 1500)
    }

    @Test func hostileTransmitChainSetsNeedsResetAndGoodTrafficFlowsBefore() throws {
        let backend = MemoryNetBackend()
        let net = try VirtioNet(backends: [backend])
        let driver = try bringUp(net, features: F.mac | F.controlQueue | VirtioFeature.eventIndex)
        #expect(net.isActivated)
        #expect(backend.offloadHistory == [[]])
        let txBase: UInt64 = 0x44000
        let packet = netPacket(frameBytes: 64)
        try driver.memory.write(bytes: packet, at: GuestAddress(0x80000))
        func putDescriptor(_ index: UInt64, address: UInt64, length: UInt32, flags: UInt16) throws {
            try driver.memory.write(address, at: GuestAddress(txBase + 16 * index))
            try driver.memory.write(length, at: GuestAddress(txBase + 16 * index + 8))
            try driver.memory.write(flags, at: GuestAddress(txBase + 16 * index + 12))
        }
        try putDescriptor(0, address: 0x80000, length: UInt32(packet.count), flags: 0)
        try driver.memory.write(UInt16(0), at: GuestAddress(txBase + 0x1000 + 4))
        try driver.memory.write(UInt16(1), at: GuestAddress(txBase + 0x1000 + 2))
        driver.notify(1)
        #expect(backend.sent == [packet])
        #expect(driver.status & VirtioStatus.deviceNeedsReset == 0)
        #expect(try driver.memory.read(UInt16.self, at: GuestAddress(txBase + 0x2000 + 4 + 8 * 16)) == 1)  // avail_event
        // A buffer far outside guest memory.
        try putDescriptor(1, address: 0xffff_0000_0000, length: 100, flags: 0)
        try driver.memory.write(UInt16(1), at: GuestAddress(txBase + 0x1000 + 4 + 2))
        try driver.memory.write(UInt16(2), at: GuestAddress(txBase + 0x1000 + 2))
        driver.notify(1)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(backend.sent.count == 1)
        // Status 0 resets the device; it can be brought up again.
        driver.setStatus(0)
        #expect(!net.isActivated)
    }
}
