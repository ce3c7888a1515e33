import DeviceModel
import GuestMemory
import PCI
import Synchronization
import Testing
import VirtioDevices
import VirtioQueue

/// Host memory that records what the balloon hands back and asks for, with a page size of
/// its choosing; it refuses, as the real one does, ranges outside guest RAM.
final class RecordingBalloonMemory: BalloonMemory {
    let pageSize: UInt64
    let calls = Mutex<(released: [(UInt64, UInt64)], needed: [(UInt64, UInt64)])>(([], []))
    init(pageSize: UInt64 = 4096) { self.pageSize = pageSize }

    func release(_ address: GuestAddress, length: UInt64, in memory: GuestMemory) throws(GuestMemoryError) {
        guard memory.region(containing: address) != nil else { throw .outOfRange(address: address, length: Int(length)) }
        calls.withLock { $0.released.append((address.rawValue, length)) }
    }

    func willNeed(_ address: GuestAddress, length: UInt64, in memory: GuestMemory) throws(GuestMemoryError) {
        try memory.checkRange(address, length: Int(length))
        calls.withLock { $0.needed.append((address.rawValue, length)) }
    }

    var released: [[UInt64]] { calls.withLock { $0.released.map { [$0.0, $0.1] } } }
    var needed: [[UInt64]] { calls.withLock { $0.needed.map { [$0.0, $0.1] } } }
}

private let driverOK = VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK

/// Little-endian bytes of 32-bit page numbers, as the driver puts them on the queues.
private func pfnBytes(_ numbers: [UInt32]) -> [UInt8] {
    numbers.flatMap { number in (0..<4).map { UInt8(truncatingIfNeeded: number >> ($0 * 8)) } }
}

@Suite struct VirtioBalloonTests {
    /// A running balloon and its driver (1 MiB of guest RAM at 0).
    func running(_ options: VirtioBalloon.Options = .init(size: 0), host: any BalloonMemory = RecordingBalloonMemory(),
                 features: UInt64 = VirtioFeature.version1, queues: [Int] = [0, 1]) throws -> (StateDriver, VirtioBalloon) {
        let device = VirtioBalloon(options: options, host: host)
        let guest = try StateDriver(device: device)
        guest.bringUp(features: features, queues: queues)
        return (guest, device)
    }

    /// Puts `numbers` on `queue` in one device-readable descriptor and notifies it.
    func give(_ guest: StateDriver, queue: Int, _ numbers: [UInt32]) throws {
        let bytes = pfnBytes(numbers)
        try guest.post(queue, [(try guest.buffer(bytes), bytes.count, false)])
        guest.notify(queue)
    }

    func config(_ guest: StateDriver, _ offset: UInt64) -> UInt64 {
        guest.transport.readBAR(index: 0, offset: VirtioPCILayout.deviceConfigOffset + offset, size: 4)
    }

    @Test func typeFeaturesQueuesAndConfigurationSpace() throws {
        let plain = VirtioBalloon(options: .init(size: 64 << 20), host: RecordingBalloonMemory())
        #expect(plain.deviceType.rawValue == 5 && plain.deviceType.description == "balloon")
        #expect(plain.features == 0 && plain.queueMaxSizes == [128, 128])
        let full = VirtioBalloon(options: .init(size: 0, deflateOnOOM: true, freePageReporting: true), host: RecordingBalloonMemory())
        #expect(full.features == 1 << 2 | 1 << 5 && full.queueMaxSizes == [128, 128, 32])
        // num_pages counts 4 KiB pages; actual starts at 0.
        #expect(plain.readConfig(offset: 0, size: 4) == 16384 && plain.readConfig(offset: 4, size: 4) == 0)
        #expect(plain.readConfig(offset: 0, size: 8) == 16384)
        #expect(plain.readConfig(offset: 1, size: 1) == 0x40 && plain.readConfig(offset: 8, size: 4) == 0)
        // Only a 4-byte write of actual is taken.
        plain.writeConfig(offset: 0, size: 4, value: 7)
        plain.writeConfig(offset: 4, size: 2, value: 7)
        #expect(plain.readConfig(offset: 0, size: 8) == 16384)
        plain.writeConfig(offset: 4, size: 4, value: 300)
        #expect(plain.readConfig(offset: 4, size: 4) == 300 && plain.actualSize == 300 * 4096)
        // The size is truncated to 32 bits of pages as Cloud Hypervisor's num_pages is.
        plain.resize(to: (UInt64(1) << 44) + 8192)
        #expect(plain.readConfig(offset: 0, size: 4) == 2 && plain.targetSize == 8192)
    }

    @Test func resizeSetsNumPagesAndRaisesTheConfigInterrupt() throws {
        let (guest, device) = try running()
        #expect(config(guest, 0) == 0)
        device.resize(to: 256 << 20)
        #expect(config(guest, 0) == 65536)
        #expect(guest.routing.deliveries == [0])
        // The driver reports what it holds through the transport's device configuration.
        guest.write(VirtioPCILayout.deviceConfigOffset + 4, size: 4, 65536)
        #expect(device.actualSize == 256 << 20)
        // Before activation nothing is signalled.
        let idle = VirtioBalloon(options: .init(size: 0), host: RecordingBalloonMemory())
        idle.resize(to: 4096)
        #expect(idle.targetSize == 4096)
    }

    @Test func inflatedPagesGoBackToTheHostAndDeflatedOnesAreAdvised() throws {
        let host = RecordingBalloonMemory()
        let (guest, device) = try running(host: host)
        try give(guest, queue: 0, [0x80, 0x81, 0xF0])
        #expect(host.released == [[0x80000, 4096], [0x81000, 4096], [0xF0000, 4096]])
        let used = try guest.used(0)
        #expect(used.index == 1 && used.entries[0].1 == 0)
        #expect(guest.routing.deliveries == [1])
        try give(guest, queue: 1, [0x81])
        #expect(host.needed == [[0x81000, 4096]])
        #expect(try guest.used(1).index == 1 && guest.routing.deliveries == [1, 2])
        #expect(device.counters.inflatedPages == 3 && device.counters.deflatedPages == 1 && device.counters.refused == 0)
    }

    @Test func realHostMemoryReadsZerosAfterInflate() throws {
        let (guest, _) = try running(host: HostBalloonMemory())
        let page = GuestAddress(0x80000)
        try guest.memory.fill(0xAB, count: 8192, at: page)
        try give(guest, queue: 0, [0x80])
        #expect(try guest.memory.readBytes(count: 4096, at: page).allSatisfy { $0 == 0 })
        #expect(try guest.memory.readBytes(count: 4096, at: GuestAddress(0x81000)).allSatisfy { $0 == 0xAB })
        try give(guest, queue: 1, [0x80])
        try guest.memory.write(UInt32(42), at: page)
        #expect(try guest.memory.read(UInt32.self, at: page) == 42)
    }

    @Test func largerHostPagesAreReleasedOnceComplete() throws {
        // 16 KiB host pages: four balloon pages make one; a page of another host page starts over.
        let host = RecordingBalloonMemory(pageSize: 16384)
        let (guest, _) = try running(host: host)
        try give(guest, queue: 0, [0x80, 0x81, 0x82])
        #expect(host.released.isEmpty)
        try give(guest, queue: 0, [0x83, 0x84])
        #expect(host.released == [[0x80000, 16384]])
        try give(guest, queue: 0, [0x88, 0x85, 0x86, 0x87])
        #expect(host.released == [[0x80000, 16384]])
        try give(guest, queue: 1, [0x85])
        #expect(host.needed == [[0x84000, 16384]])
    }

    @Test func hostileGuestBreaksNothingButItsOwnRequests() throws {
        let host = RecordingBalloonMemory()
        let (guest, device) = try running(host: host)
        // Page numbers outside the 1 MiB of RAM, the largest page number.
        try give(guest, queue: 0, [0x100, 0xFFFF_FFFF, 0x90])
        #expect(host.released == [[0x90000, 4096]])
        #expect(device.counters.refused == 2)
        // A device-writable descriptor, a length not a multiple of 4, one above 1 KiB:
        // skipped, the chains still returned.
        let good = pfnBytes([0x91])
        let buffer = try guest.buffer(good + [UInt8](repeating: 0, count: 2048))
        try guest.post(0, [(buffer, 4, true)])
        try guest.post(0, [(buffer, 6, false)])
        try guest.post(0, [(buffer, 1028, false)])
        guest.notify(0)
        #expect(host.released == [[0x90000, 4096]])
        #expect(device.counters.skippedDescriptors == 3)
        #expect(try guest.used(0).index == 4)
        #expect(guest.transport.status == driverOK)
        // A good request afterwards is served.
        try give(guest, queue: 0, [0x91])
        #expect(host.released.last == [0x91000, 4096])
        // A descriptor outside guest memory, or a loop, breaks the queue rules: only this device stops.
        try guest.post(0, [(0xF_0000_0000, 8, false)])
        guest.notify(0)
        #expect(guest.transport.status & VirtioStatus.deviceNeedsReset != 0)
        let (other, _) = try running(host: host)
        let base = GuestAddress(StateDriver.descriptors(1))
        try other.memory.write(UInt64(0x40000), at: base)
        try other.memory.write(UInt32(4), at: GuestAddress(base.rawValue + 8))
        try other.memory.write(UInt16(1), at: GuestAddress(base.rawValue + 12))
        try other.memory.write(UInt16(0), at: GuestAddress(base.rawValue + 14))
        try other.memory.write(UInt16(0), at: GuestAddress(StateDriver.available(1) + 4))
        try other.memory.write(UInt16(1), at: GuestAddress(StateDriver.available(1) + 2))
        other.notify(1)
        #expect(other.transport.status & VirtioStatus.deviceNeedsReset != 0)
    }

    @Test func freePageReportingReleasesReportedRanges() throws {
        let host = RecordingBalloonMemory()
        let options = VirtioBalloon.Options(size: 0, freePageReporting: true)
        let (guest, device) = try running(options, host: host, features: VirtioFeature.version1 | VirtioBalloon.featureReporting, queues: [0, 1, 2])
        try guest.post(2, [(0x80000, 0x10000, true), (0xC0000, 0x8000, true)])
        guest.notify(2)
        #expect(host.released == [[0x80000, 0x10000], [0xC0000, 0x8000]])
        let used = try guest.used(2)
        #expect(used.index == 1 && used.entries[0].1 == 0x18000)
        #expect(device.counters.reportedBytes == 0x18000)
    }

    @Test func reportingQueueRunsOnlyWhenNegotiated() throws {
        let options = VirtioBalloon.Options(size: 0, freePageReporting: true)
        let (guest, device) = try running(options, queues: [0, 1, 2])
        #expect(device.isActivated)
        guest.notify(2)
        #expect(guest.transport.status & VirtioStatus.deviceNeedsReset != 0)
    }

    @Test func stateRoundTripsThroughJSON() throws {
        let (guest, device) = try running(.init(size: 8 << 20, deflateOnOOM: true),
                                          features: VirtioFeature.version1 | VirtioBalloon.featureDeflateOnOOM)
        guest.write(VirtioPCILayout.deviceConfigOffset + 4, size: 4, 1024)
        try give(guest, queue: 0, [0x80])
        let saved = try throughJSON(guest.transport.saveState())
        #expect(saved.device == .balloon(VirtioBalloon.State(features: VirtioFeature.version1 | VirtioBalloon.featureDeflateOnOOM,
                                                             numPages: 2048, actual: 1024)))
        let twin = VirtioBalloon(options: .init(size: 0, deflateOnOOM: true), host: RecordingBalloonMemory())
        let restored = try StateDriver(device: twin, memory: guest.memory)
        try restored.transport.restoreState(saved)
        #expect(restored.transport.isActivated && restored.transport.status == driverOK)
        #expect(twin.actualSize == device.actualSize && twin.targetSize == 8 << 20)
        #expect(restored.transport.saveState() == saved)
        // A balloon without deflate_on_oom cannot take these features.
        let plain = try StateDriver(device: VirtioBalloon(options: .init(size: 0), host: RecordingBalloonMemory()))
        #expect(throws: DeviceStateError.self) { try plain.transport.restoreState(saved) }
        let rng = try StateDriver(device: VirtioRng(source: CountingEntropy()))
        #expect(throws: DeviceStateError.self) { try rng.transport.restoreState(saved) }
    }
}
