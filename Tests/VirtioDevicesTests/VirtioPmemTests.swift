import DeviceModel
import GuestMemory
import PCI
import Synchronization
import Testing
import VirtioDevices
import VirtioQueue

/// A pmem backend that counts flushes and fails when told to.
final class FakePmemBackend: PmemBackend {
    let flushes = Mutex(0)
    let failing: Bool
    init(failing: Bool = false) { self.failing = failing }
    func flush() throws(VirtioDeviceError) {
        if failing { throw .backend("fsync failed: Input/output error") }
        flushes.withLock { $0 += 1 }
    }
    var count: Int { flushes.withLock { $0 } }
}

private let driverOK = VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK
private let start: UInt64 = 0xff_7fe0_0000
private let size: UInt64 = 64 << 20

@Suite struct VirtioPmemTests {
    /// A running device and its driver; the request type and status buffers are returned.
    func running(_ backend: FakePmemBackend = FakePmemBackend()) throws -> (StateDriver, VirtioPmem) {
        let device = VirtioPmem(start: start, size: size, backend: backend)
        let guest = try StateDriver(device: device)
        guest.bringUp(features: VirtioFeature.version1, queues: [0])
        return (guest, device)
    }

    func request(_ guest: StateDriver, type: UInt32) throws -> UInt64 {
        let request = try guest.buffer([UInt8(type & 0xff), UInt8(type >> 8 & 0xff), UInt8(type >> 16 & 0xff), UInt8(type >> 24)])
        let status = try guest.buffer([0xAA, 0xAA, 0xAA, 0xAA])
        try guest.post(0, [(request, 4, false), (status, 4, true)])
        guest.notify(0)
        return status
    }

    @Test func typeQueueAndConfigurationSpace() throws {
        let device = VirtioPmem(start: start, size: size, backend: FakePmemBackend())
        #expect(device.deviceType.rawValue == 27 && device.deviceType.description == "pmem")
        #expect(device.queueMaxSizes == [256])
        #expect(device.features == 0)
        #expect(device.readConfig(offset: 0, size: 8) == start)
        #expect(device.readConfig(offset: 8, size: 8) == size)
        #expect(device.readConfig(offset: 0, size: 4) == start & 0xffff_ffff)
        #expect(device.readConfig(offset: 4, size: 4) == start >> 32)
        #expect(device.readConfig(offset: 12, size: 4) == size >> 32)
        #expect(device.readConfig(offset: 16, size: 4) == 0)
        #expect(device.readConfig(offset: 1000, size: 8) == 0)
        device.writeConfig(offset: 0, size: 8, value: 0)
        #expect(device.readConfig(offset: 0, size: 8) == start)
    }

    @Test func flushSyncsTheFileAndAnswersOK() throws {
        let backend = FakePmemBackend()
        let (guest, device) = try running(backend)
        let status = try request(guest, type: VirtioPmem.requestFlush)
        #expect(backend.count == 1)
        #expect(try guest.memory.read(UInt32.self, at: GuestAddress(status)) == VirtioPmem.responseOK)
        let used = try guest.used(0)
        #expect(used.index == 1 && used.entries[0].1 == 4)
        #expect(guest.routing.deliveries == [1])
        #expect(device.counters.flushes == 1 && device.counters.errors == 0)
    }

    @Test func failedFsyncAnswersError() throws {
        let (guest, device) = try running(FakePmemBackend(failing: true))
        let status = try request(guest, type: VirtioPmem.requestFlush)
        #expect(try guest.memory.read(UInt32.self, at: GuestAddress(status)) == VirtioPmem.responseError)
        #expect(try guest.used(0).entries[0].1 == 4)
        #expect(device.counters.errors == 1)
        #expect(guest.transport.status == driverOK)
    }

    @Test func unknownRequestTypeAnswersErrorWithoutFlushing() throws {
        let backend = FakePmemBackend()
        let (guest, _) = try running(backend)
        let status = try request(guest, type: 7)
        #expect(backend.count == 0)
        #expect(try guest.memory.read(UInt32.self, at: GuestAddress(status)) == VirtioPmem.responseError)
        #expect(try guest.used(0).entries[0].1 == 4)
    }

    @Test func malformedChainsAreReturnedEmptyAndTheDeviceGoesOn() throws {
        let backend = FakePmemBackend()
        let (guest, device) = try running(backend)
        // No status buffer; a 2-byte request; a status of 2 bytes; only a writable buffer.
        let request = try guest.buffer([0, 0, 0, 0])
        let status = try guest.buffer([0xAA, 0xAA, 0xAA, 0xAA])
        try guest.post(0, [(request, 4, false)])
        try guest.post(0, [(request, 2, false), (status, 4, true)])
        try guest.post(0, [(request, 4, false), (status, 2, true)])
        try guest.post(0, [(status, 4, true)])
        guest.notify(0)
        let used = try guest.used(0)
        #expect(used.index == 4 && used.entries.allSatisfy { $0.1 == 0 })
        #expect(try guest.memory.readBytes(count: 4, at: GuestAddress(status)) == [0xAA, 0xAA, 0xAA, 0xAA])
        #expect(backend.count == 0 && device.counters.malformed == 4)
        // A good request afterwards is served.
        let answer = try self.request(guest, type: VirtioPmem.requestFlush)
        #expect(try guest.memory.read(UInt32.self, at: GuestAddress(answer)) == VirtioPmem.responseOK)
        #expect(guest.transport.status == driverOK)
    }

    @Test func brokenQueueRulesStopOnlyThisDevice() throws {
        let (guest, _) = try running()
        // A descriptor that points at itself: a loop the queue refuses.
        let base = GuestAddress(StateDriver.descriptors(0))
        try guest.memory.write(UInt64(0x40000), at: base)
        try guest.memory.write(UInt32(4), at: GuestAddress(base.rawValue + 8))
        try guest.memory.write(UInt16(1), at: GuestAddress(base.rawValue + 12))
        try guest.memory.write(UInt16(0), at: GuestAddress(base.rawValue + 14))
        try guest.memory.write(UInt16(0), at: GuestAddress(StateDriver.available(0) + 4))
        try guest.memory.write(UInt16(1), at: GuestAddress(StateDriver.available(0) + 2))
        guest.notify(0)
        #expect(guest.transport.status & VirtioStatus.deviceNeedsReset != 0)
    }

    @Test func stateRoundTripsThroughJSON() throws {
        let (guest, _) = try running()
        _ = try request(guest, type: VirtioPmem.requestFlush)
        let saved = try throughJSON(guest.transport.saveState())
        #expect(saved.device == .pmem(VirtioPmem.State(features: VirtioFeature.version1, start: start, size: size)))
        let backend = FakePmemBackend()
        let restored = try StateDriver(device: VirtioPmem(start: start, size: size, backend: backend), memory: guest.memory)
        try restored.transport.restoreState(saved)
        #expect(restored.transport.isActivated && restored.transport.status == driverOK)
        #expect(restored.transport.saveState() == saved)
    }

    @Test func restoreRefusesAnotherRange() throws {
        let (guest, _) = try running()
        let saved = guest.transport.saveState()
        let moved = try StateDriver(device: VirtioPmem(start: start - (2 << 20), size: size, backend: FakePmemBackend()))
        #expect(throws: DeviceStateError.self) { try moved.transport.restoreState(saved) }
        let rng = try StateDriver(device: VirtioRng(source: CountingEntropy()))
        #expect(throws: DeviceStateError.self) { try rng.transport.restoreState(saved) }
    }
}
