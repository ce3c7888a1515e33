import BlockStorage
import DeviceModel
import GuestMemory
import PCI
import Testing
import VirtioDevices
import VirtioQueue

private let driverOK = VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK

@Suite struct VirtioStateTests {
    @Test func rngContinuesWherePaused() throws {
        let guest = try StateDriver(device: VirtioRng(source: CountingEntropy()))
        guest.bringUp(features: VirtioFeature.version1, queues: [0])
        try guest.post(0, [(try guest.buffer([UInt8](repeating: 0, count: 8)), 8, true)])
        guest.notify(0)
        let pending = try guest.buffer([UInt8](repeating: 0, count: 8))
        try guest.post(0, [(pending, 8, true)])
        #expect(try guest.used(0).index == 1)
        let saved = try throughJSON(guest.transport.saveState())
        #expect(saved.queues[0].queue.nextAvailable == 1 && saved.queues[0].queue.nextUsed == 1)

        let restored = try StateDriver(device: VirtioRng(source: CountingEntropy()), memory: guest.memory)
        try restored.transport.restoreState(saved)
        #expect(restored.transport.isActivated && restored.transport.status == driverOK)
        #expect(restored.transport.saveState() == saved)
        restored.notify(0)
        let used = try restored.used(0)
        #expect(used.index == 2 && used.entries.map(\.0) == [0, 1] && used.entries[1].1 == 8)
        #expect(try guest.memory.readBytes(count: 8, at: GuestAddress(pending)) == (0..<8).map { UInt8($0) })
        #expect(restored.routing.deliveries == [1])
        restored.notify(0)
        #expect(try restored.used(0).index == 2)
    }

    @Test func blockServesThePendingRequestOnce() throws {
        let disk = MemoryBlockBackend(size: 64 * 1024)
        let guest = try StateDriver(device: VirtioBlock(backend: disk))
        let features = VirtioFeature.version1 | VirtioBlockABI.Feature.flush | VirtioBlockABI.Feature.configWCE
        guest.bringUp(features: features, queues: [0])
        // Write-through cache mode, then one write served...
        guest.write(VirtioPCILayout.deviceConfigOffset + 32, size: 1, 0)
        let payload = (0..<512).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let header = [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0] as [UInt8]
        try guest.post(0, [(try guest.buffer(header), 16, false), (try guest.buffer(payload), 512, false),
                           (try guest.buffer([0xff]), 1, true)])
        guest.notify(0)
        // ... and a read left available.
        let readHeader = [0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0] as [UInt8]
        let data = try guest.buffer([UInt8](repeating: 0, count: 512))
        let status = try guest.buffer([0xff])
        try guest.post(0, [(try guest.buffer(readHeader), 16, false), (data, 512, true), (status, 1, true)])
        let saved = try throughJSON(guest.transport.saveState())
        guard case .block(let block) = saved.device else { Issue.record("not a block state"); return }
        #expect(block.counters.writeOps == 1 && !block.writeback && block.features == features)

        let device = VirtioBlock(backend: disk)
        let restored = try StateDriver(device: device, memory: guest.memory)
        try restored.transport.restoreState(saved)
        #expect(restored.transport.readBAR(index: 0, offset: VirtioPCILayout.deviceConfigOffset + 32, size: 1) == 0)
        restored.notify(0)
        let used = try restored.used(0)
        #expect(used.index == 2 && used.entries.map(\.0) == [0, 3] && used.entries[1].1 == 513)
        #expect(try guest.memory.readBytes(count: 512, at: GuestAddress(data)) == payload)
        #expect(try guest.memory.read(UInt8.self, at: GuestAddress(status)) == 0)
        #expect(device.counters.readOps == 1 && device.counters.writeOps == 1)
        #expect(restored.routing.deliveries == [1])
    }

    @Test func consoleDeliversInputSavedBeforeTheSnapshot() throws {
        let guest = try StateDriver(device: VirtioConsole(output: RecordingConsoleOutput(), cols: 80, rows: 25))
        guest.bringUp(features: VirtioFeature.version1 | VirtioConsole.Feature.size, queues: [0, 1])
        let console = guest.transport.device as! VirtioConsole
        #expect(console.enqueueInput(Array("hello".utf8)) == 5)
        console.resize(cols: 132, rows: 43)
        let saved = try throughJSON(guest.transport.saveState())

        let device = VirtioConsole(output: RecordingConsoleOutput())
        let restored = try StateDriver(device: device, memory: guest.memory)
        try restored.transport.restoreState(saved)
        #expect(device.pendingInputCount == 5 && device.size == (132, 43))
        let buffer = try guest.buffer([UInt8](repeating: 0, count: 16))
        try guest.post(0, [(buffer, 16, true)])
        restored.notify(0)
        #expect(try restored.used(0).entries.map(\.1) == [5])
        #expect(try guest.memory.readBytes(count: 5, at: GuestAddress(buffer)) == Array("hello".utf8))
        #expect(restored.routing.deliveries == [1])
    }

    @Test func netKeepsAHeldPacketAndTheChainsInHand() throws {
        let backend = MemoryNetBackend()
        let guest = try StateDriver(device: try VirtioNet(backends: [backend], options: .init(mac: MACAddress("52:54:00:12:34:56")!)))
        let features = VirtioFeature.version1 | VirtioNetABI.Feature.mac | VirtioNetABI.Feature.mergeableReceiveBuffers
        guest.bringUp(features: features, queues: [0, 1])
        let net = guest.transport.device as! VirtioNet
        let first = try guest.buffer([UInt8](repeating: 0, count: 100))
        try guest.post(0, [(first, 100, true)])
        let packet = netPacket(frameBytes: 188)
        #expect(backend.inject(packet))
        net.backendReadable(pair: 0)
        #expect(try guest.used(0).index == 0 && backend.pendingCount == 0)
        let saved = try throughJSON(guest.transport.saveState())
        guard case .net(let state) = saved.device else { Issue.record("not a net state"); return }
        #expect(state.heldPackets == [packet])
        #expect(saved.queues[0].queue.nextAvailable == 0)

        let restored = try StateDriver(device: try VirtioNet(backends: [backend], options: .init(mac: MACAddress("52:54:00:12:34:56")!)),
                                       memory: guest.memory)
        try restored.transport.restoreState(saved)
        let second = try guest.buffer([UInt8](repeating: 0, count: 200))
        try guest.post(0, [(second, 200, true)])
        restored.notify(0)
        let used = try restored.used(0)
        #expect(used.index == 2 && used.entries.map(\.0) == [0, 1] && used.entries.map(\.1) == [100, 100])
        let delivered = try guest.memory.readBytes(count: 100, at: GuestAddress(first))
            + guest.memory.readBytes(count: 100, at: GuestAddress(second))
        #expect(delivered == withNumBuffers(packet, 2))
        #expect(restored.routing.deliveries == [1])
    }

    @Test func damagedStatesAreRefusedAndChangeNothing() throws {
        let guest = try StateDriver(device: VirtioRng(source: CountingEntropy()))
        guest.bringUp(features: VirtioFeature.version1, queues: [0])
        let good = guest.transport.saveState()
        var damaged: [(VirtioPCIDevice.State, String)] = []
        var state = good
        state.queues[0].queue.size = 3
        damaged.append((state, "queues[0]"))
        state = good
        state.queues[0].vector = 7
        damaged.append((state, "queues[0].vector"))
        state = good
        state.driverFeatures |= 1 << 40
        damaged.append((state, "driverFeatures"))
        state = good
        state.configuration.barAddresses[0] = 0xe000_1000
        damaged.append((state, "barAddresses[0]"))
        state = good
        state.device = .console(.init(features: 0, cols: 0, rows: 0, pendingInput: [], inputError: nil))
        damaged.append((state, "device"))
        state = good
        state.activated = false
        damaged.append((state, "activated"))
        state = good
        state.queues[0].queue.usedRing = GuestAddress(0x10_0000)
        damaged.append((state, "queues[0]"))
        for (bad, field) in damaged {
            let fresh = try StateDriver(device: VirtioRng(source: CountingEntropy()), memory: guest.memory)
            let before = fresh.transport.saveState()
            do {
                try fresh.transport.restoreState(bad)
                Issue.record("accepted a state with a damaged \(field)")
            } catch {
                #expect(error.reason.hasPrefix(field), "\(error)")
            }
            #expect(fresh.transport.saveState() == before)
            #expect(!fresh.transport.isActivated)
        }
    }

    @Test func aFailedDeviceStaysFailed() throws {
        let guest = try StateDriver(device: VirtioRng(source: CountingEntropy()))
        guest.bringUp(features: VirtioFeature.version1, queues: [0])
        // A chain head beyond the queue breaks the rules.
        try guest.memory.write(UInt16(99), at: GuestAddress(StateDriver.available(0) + 4))
        try guest.memory.write(UInt16(1), at: GuestAddress(StateDriver.available(0) + 2))
        guest.notify(0)
        #expect(guest.transport.status & VirtioStatus.deviceNeedsReset != 0)
        let saved = try throughJSON(guest.transport.saveState())

        let restored = try StateDriver(device: VirtioRng(source: CountingEntropy()), memory: guest.memory)
        try restored.transport.restoreState(saved)
        #expect(restored.transport.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(restored.transport.lastError != nil)
        try guest.memory.write(UInt16(0), at: GuestAddress(StateDriver.available(0) + 4))
        restored.notify(0)
        #expect(try restored.used(0).index == 0)
        restored.setStatus(0)
        #expect(restored.transport.status == 0)
    }
}
