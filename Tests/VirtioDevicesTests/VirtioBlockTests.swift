import BlockStorage
import Foundation
import GuestMemory
import PCI
import TestSupport
import Testing
import VirtioDevices
import VirtioQueue

/// Drives a virtio-blk function through the PCI transport, as the guest driver would.
struct BlockDriver {
    typealias F = VirtioBlockABI.Feature
    var driver: Driver
    let disk: any BlockBackend
    let device: VirtioBlock
    var nextHead: UInt16 = 0
    static let headers: UInt64 = 0x20000
    static let data: UInt64 = 0x40000
    static let statuses: UInt64 = 0x30000

    init(disk: any BlockBackend = MemoryBlockBackend(size: 1 << 20), options: VirtioBlock.Options = .init(serial: Array("disk-serial-1".utf8)),
         features: UInt64 = VirtioFeature.version1 | F.flush | F.configWCE | F.discard | F.writeZeroes | F.blockSize) throws {
        self.disk = disk
        // A backend with asynchronous queues (a raw file opened with io_uring) gets them.
        device = VirtioBlock(backend: disk, options: options, asyncQueues: try VirtioBlock.makeAsyncQueues(backend: disk, options: options))
        driver = try Driver(device: device)
        driver.enableMSIX()
        driver.negotiate(features & (device.features | VirtioFeature.version1))
        driver.write(VirtioCommonConfig.msixConfig, size: 2, 0)
        driver.setUpQueue()
        driver.setStatus(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK)
    }

    /// Submits one request: header, then `data` buffers (readable for writes, writable for
    /// reads and GET_ID), then a 1-byte status buffer. Returns (status, used length).
    mutating func submit(type: UInt32, sector: UInt64, dataLengths: [UInt32] = [], deviceWrites: Bool = false,
                         payload: [UInt8] = [], headerLength: UInt32 = 16) throws -> (status: UInt8, used: UInt32) {
        let base = nextHead
        var header = [UInt8](repeating: 0, count: 16)
        for i in 0..<4 { header[i] = UInt8(truncatingIfNeeded: type >> (8 * UInt32(i))) }
        for i in 0..<8 { header[8 + i] = UInt8(truncatingIfNeeded: sector >> (8 * UInt64(i))) }
        try driver.memory.write(bytes: header, at: GuestAddress(Self.headers))
        try driver.putDescriptor(base, address: Self.headers, length: headerLength, flags: 1, next: base + 1)
        var index = base + 1
        var address = Self.data
        if !payload.isEmpty { try driver.memory.write(bytes: payload, at: GuestAddress(Self.data)) }
        for length in dataLengths {
            try driver.putDescriptor(index, address: address, length: length, flags: 1 | (deviceWrites ? 2 : 0), next: index + 1)
            address += UInt64(length)
            index += 1
        }
        try driver.memory.write(UInt8(0xEE), at: GuestAddress(Self.statuses))
        try driver.putDescriptor(index, address: Self.statuses, length: 1, flags: 2)
        nextHead = 0
        try driver.makeAvailable(base)
        driver.notify()
        try settle()
        let slot = Int((driver.availableIndex &- 1) % Layout.queueSize)
        let used = try driver.usedEntry(slot)
        return (try driver.memory.read(UInt8.self, at: GuestAddress(Self.statuses)), used.length)
    }

    /// The used ring's index.
    var usedIndex: UInt16 { (try? driver.memory.read(UInt16.self, at: GuestAddress(Layout.used.rawValue + 2))) ?? 0 }

    /// With io_uring queues: waits on the completion eventfd and lets the device finish its
    /// requests (as the event loop does) until every available request is used.
    func settle(timeoutMilliseconds: Int32 = 2000) throws {
        guard let queue = device.asyncQueues.first else { return }
        var rounds = 0
        while usedIndex != driver.availableIndex && rounds < 50 {
            var entry = pollfd(fd: queue.eventDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&entry, 1, timeoutMilliseconds / 50)
            let device = self.device
            driver.transport.serveDeviceEvent { () throws(VirtioDeviceError) in try device.processCompletions(0) }
            rounds += 1
        }
    }

    func guestData(_ count: Int) throws -> [UInt8] { try driver.memory.readBytes(count: count, at: GuestAddress(Self.data)) }
}

private let pattern = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

@Suite struct VirtioBlockRequestTests {
    @Test func writeThenReadRoundTripsThroughTheBackend() throws {
        let disk = MemoryBlockBackend(size: 1 << 20)
        var blk = try BlockDriver(disk: disk)
        var result = try blk.submit(type: 1, sector: 8, dataLengths: [4096, 4096], payload: pattern)
        #expect(result.status == 0 && result.used == 1)
        #expect(Array(disk.contents[4096..<(4096 + 8192)]) == pattern)
        try blk.driver.memory.fill(0, count: 8192, at: GuestAddress(BlockDriver.data))
        result = try blk.submit(type: 0, sector: 8, dataLengths: [512, 7680], deviceWrites: true)
        #expect(result.status == 0 && result.used == 8193)
        #expect(try blk.guestData(8192) == pattern)
        #expect(blk.device.counters == .init(readBytes: 8192, writeBytes: 8192, readOps: 1, writeOps: 1, errors: 0))
        #expect(blk.driver.status & VirtioStatus.deviceNeedsReset == 0)
    }

    @Test func headerAndDataMaySplitAnywhere() throws {
        // The header in two pieces (12 + 4 bytes), data sharing the second header buffer.
        let disk = MemoryBlockBackend(contents: pattern)
        var blk = try BlockDriver(disk: disk)
        var header = [UInt8](repeating: 0, count: 16)
        header[8] = 2 // sector 2, type IN
        try blk.driver.memory.write(bytes: header, at: GuestAddress(BlockDriver.headers))
        try blk.driver.putDescriptor(0, address: BlockDriver.headers, length: 12, flags: 1, next: 1)
        try blk.driver.putDescriptor(1, address: BlockDriver.headers + 12, length: 4, flags: 1, next: 2)
        try blk.driver.putDescriptor(2, address: BlockDriver.data, length: 1025, flags: 3, next: 3) // data + status in one buffer... plus one more
        try blk.driver.putDescriptor(3, address: BlockDriver.data + 1025, length: 0x1000 - 1025, flags: 2)
        // Writable bytes: 4096; the last one is the status, so 4095 data bytes: not whole sectors.
        try blk.driver.makeAvailable(0)
        blk.driver.notify()
        #expect(try blk.driver.usedEntry(0).length == 1)
        #expect(try blk.driver.memory.read(UInt8.self, at: GuestAddress(BlockDriver.data + 4095)) == 1) // IOERR
        // Now a proper split: 1024 data bytes over two buffers, status in the second one.
        try blk.driver.putDescriptor(2, address: BlockDriver.data, length: 1000, flags: 3, next: 3)
        try blk.driver.putDescriptor(3, address: BlockDriver.data + 1000, length: 25, flags: 2)
        try blk.driver.makeAvailable(0)
        blk.driver.notify()
        #expect(try blk.driver.usedEntry(1).length == 1025)
        #expect(try blk.guestData(1024) == Array(pattern[1024..<2048]))
        #expect(try blk.driver.memory.read(UInt8.self, at: GuestAddress(BlockDriver.data + 1024)) == 0)
    }

    @Test func withEventIndexTheDevicePublishesAvailEvent() throws {
        // Linux only kicks when the available index passes avail_event: the device must
        // publish it after each drain, or the driver's second request is never notified.
        var blk = try BlockDriver(features: VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioBlockABI.Feature.flush)
        let availEvent = GuestAddress(Layout.used.rawValue + 4 + 8 * UInt64(Layout.queueSize))
        for round in 1...3 {
            #expect(try blk.submit(type: 4, sector: 0).status == 0)
            #expect(try blk.driver.memory.read(UInt16.self, at: availEvent) == UInt16(round))
        }
    }

    @Test func requestsPastTheEndFailWithIOError() throws {
        var blk = try BlockDriver(disk: MemoryBlockBackend(size: 64 * 1024))
        #expect(try blk.submit(type: 0, sector: 127, dataLengths: [1024], deviceWrites: true).status == 1)
        #expect(try blk.submit(type: 1, sector: UInt64.max / 256, dataLengths: [512]).status == 1)
        #expect(try blk.submit(type: 0, sector: 126, dataLengths: [1024], deviceWrites: true).status == 0)
        #expect(try blk.submit(type: 1, sector: 0, dataLengths: [100]).status == 1)  // not whole sectors
        #expect(blk.device.counters.errors == 3)
    }

    @Test func readOnlyDiskRefusesWritesAndStaysUnchanged() throws {
        let disk = MemoryBlockBackend(contents: pattern, readOnly: true)
        var blk = try BlockDriver(disk: disk)
        #expect(blk.device.features & VirtioBlockABI.Feature.readOnly != 0)
        #expect(blk.device.features & VirtioBlockABI.Feature.discard == 0)
        #expect(try blk.submit(type: 1, sector: 0, dataLengths: [512], payload: [UInt8](repeating: 9, count: 512)).status == 1)
        #expect(try blk.submit(type: 13, sector: 0, dataLengths: [16], payload: [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]).status != 0)
        #expect(try blk.submit(type: 4, sector: 0).status == 0)
        #expect(disk.contents == pattern)
        #expect(try blk.submit(type: 0, sector: 1, dataLengths: [512], deviceWrites: true).status == 0)
        #expect(try blk.guestData(512) == Array(pattern[512..<1024]))
    }

    @Test func flushReachesTheBackendAndWriteThroughFlushesEveryWrite() throws {
        let disk = MemoryBlockBackend(size: 1 << 20)
        var blk = try BlockDriver(disk: disk)
        #expect(try blk.submit(type: 4, sector: 0).status == 0)
        #expect(disk.flushCount == 1)
        _ = try blk.submit(type: 1, sector: 0, dataLengths: [512], payload: pattern)
        #expect(disk.flushCount == 1)
        // The driver switches the cache to write-through (config writeback byte at 32).
        blk.driver.write(VirtioPCILayout.deviceConfigOffset + 32, size: 1, 0)
        #expect(blk.driver.read(VirtioPCILayout.deviceConfigOffset + 32, size: 1) == 0)
        _ = try blk.submit(type: 1, sector: 0, dataLengths: [512], payload: pattern)
        #expect(disk.flushCount == 2)
    }

    @Test func withoutNegotiatedFlushEveryWriteIsDurable() throws {
        let disk = MemoryBlockBackend(size: 1 << 20)
        var blk = try BlockDriver(disk: disk, features: VirtioFeature.version1)
        _ = try blk.submit(type: 1, sector: 0, dataLengths: [512], payload: pattern)
        #expect(disk.flushCount == 1)
        // Without CONFIG_WCE the writeback byte is read-only.
        blk.driver.write(VirtioPCILayout.deviceConfigOffset + 32, size: 1, 0)
        #expect(blk.driver.read(VirtioPCILayout.deviceConfigOffset + 32, size: 1) == 1)
    }

    @Test func getIDReturnsTheSerialPadded() throws {
        var blk = try BlockDriver()
        let result = try blk.submit(type: 8, sector: 0, dataLengths: [20], deviceWrites: true)
        #expect(result.status == 0 && result.used == 21)
        #expect(try blk.guestData(20) == Array("disk-serial-1".utf8) + [UInt8](repeating: 0, count: 7))
        let long = try BlockDriver(options: .init(serial: Array("0123456789abcdefghijKLMN".utf8)))
        var longDriver = long
        _ = try longDriver.submit(type: 8, sector: 0, dataLengths: [20], deviceWrites: true)
        #expect(try longDriver.guestData(20) == Array("0123456789abcdefghij".utf8))
    }

    @Test func discardAndWriteZeroesClearRanges() throws {
        let disk = MemoryBlockBackend(contents: [UInt8](repeating: 0xFF, count: 64 * 1024))
        var blk = try BlockDriver(disk: disk)
        func segment(sector: UInt64, count: UInt32, flags: UInt32) -> [UInt8] {
            (0..<8).map { UInt8(truncatingIfNeeded: sector >> (8 * UInt64($0))) }
                + (0..<4).map { UInt8(truncatingIfNeeded: count >> (8 * UInt32($0))) }
                + (0..<4).map { UInt8(truncatingIfNeeded: flags >> (8 * UInt32($0))) }
        }
        #expect(try blk.submit(type: 11, sector: 0, dataLengths: [16], payload: segment(sector: 2, count: 2, flags: 0)).status == 0)
        #expect(try blk.submit(type: 13, sector: 0, dataLengths: [16], payload: segment(sector: 10, count: 1, flags: 1)).status == 0)
        let contents = disk.contents
        #expect(contents[1024..<2048].allSatisfy { $0 == 0 } && contents[1023] == 0xFF && contents[2048] == 0xFF)
        #expect(contents[5120..<5632].allSatisfy { $0 == 0 } && contents[5632] == 0xFF)
        // Discard takes no flags; a range past the end fails; two segments exceed max_discard_seg.
        #expect(try blk.submit(type: 11, sector: 0, dataLengths: [16], payload: segment(sector: 0, count: 1, flags: 1)).status == 2)
        #expect(try blk.submit(type: 11, sector: 0, dataLengths: [16], payload: segment(sector: 127, count: 2, flags: 0)).status == 1)
        #expect(try blk.submit(type: 11, sector: 0, dataLengths: [32],
                               payload: segment(sector: 0, count: 1, flags: 0) + segment(sector: 4, count: 1, flags: 0)).status == 1)
    }

    @Test func discardWithoutNegotiationIsUnsupported() throws {
        var blk = try BlockDriver(features: VirtioFeature.version1 | VirtioBlockABI.Feature.flush)
        #expect(try blk.submit(type: 11, sector: 0, dataLengths: [16], payload: [UInt8](repeating: 0, count: 16)).status == 2)
    }

    @Test func unknownTypesAndShortHeaders() throws {
        var blk = try BlockDriver()
        #expect(try blk.submit(type: 99, sector: 0).status == 2)
        #expect(try blk.submit(type: 0, sector: 0, headerLength: 8).status == 1)
        #expect(blk.driver.status & VirtioStatus.deviceNeedsReset == 0)
    }

    @Test func aChainWithoutAStatusByteNeedsReset() throws {
        var blk = try BlockDriver()
        try blk.driver.putDescriptor(0, address: BlockDriver.headers, length: 16, flags: 0)
        try blk.driver.makeAvailable(0)
        blk.driver.notify()
        #expect(blk.driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(blk.driver.transport.lastError == .noWritableBuffer(queue: 0, head: 0))
    }

    @Test func configSpaceDescribesTheDisk() throws {
        let device = VirtioBlock(backend: MemoryBlockBackend(size: 3 << 20), options: .init(queueCount: 4, queueSize: 256))
        #expect(device.readConfig(offset: 0, size: 8) == 6144)           // capacity in sectors
        #expect(device.readConfig(offset: 12, size: 4) == 254)           // seg_max
        #expect(device.readConfig(offset: 20, size: 4) == 512)           // blk_size
        #expect(device.readConfig(offset: 32, size: 1) == 1)             // write-back
        #expect(device.readConfig(offset: 34, size: 2) == 4)             // num_queues
        #expect(device.readConfig(offset: 40, size: 4) == 1)             // max_discard_seg
        #expect(device.readConfig(offset: 56, size: 1) == 1)             // write_zeroes_may_unmap
        #expect(device.readConfig(offset: 200, size: 4) == 0)
        #expect(device.queueMaxSizes == [256, 256, 256, 256])
        #expect(device.features & VirtioBlockABI.Feature.multiQueue != 0)
        #expect(VirtioBlock(backend: MemoryBlockBackend(size: 512)).features & VirtioBlockABI.Feature.multiQueue == 0)
    }

    @Test func resetAndReactivateServeAgain() throws {
        var blk = try BlockDriver(disk: MemoryBlockBackend(contents: pattern))
        #expect(try blk.submit(type: 0, sector: 0, dataLengths: [512], deviceWrites: true).status == 0)
        blk.driver.setStatus(0)
        #expect(!blk.device.isActivated)
        blk.driver.availableIndex = 0
        try blk.driver.memory.fill(0, count: 0x3000, at: GuestAddress(0x1000))
        blk.driver.enableMSIX()
        blk.driver.negotiate(VirtioFeature.version1 | VirtioBlockABI.Feature.flush)
        blk.driver.setUpQueue()
        blk.driver.setStatus(0x0f)
        #expect(blk.device.isActivated)
        #expect(try blk.submit(type: 0, sector: 3, dataLengths: [512], deviceWrites: true).status == 0)
        #expect(try blk.guestData(512) == Array(pattern[1536..<2048]))
    }

    @Test func randomChainsNeverCrashTheDevice() throws {
        var random = SplitMix64(seed: 0xB10C)
        for round in 0..<400 {
            var blk = try BlockDriver(disk: MemoryBlockBackend(size: 64 * 1024))
            let count = Int(random.next() % 4) + 1
            for index in 0..<count {
                let address = random.next() % 3 == 0 ? random.next() : BlockDriver.headers + random.next() % 0x40000
                let length = UInt32(truncatingIfNeeded: random.next() % 3 == 0 ? random.next() : random.next() % 9000)
                let flags = UInt16(truncatingIfNeeded: random.next() % 8)
                try blk.driver.putDescriptor(UInt16(index), address: address, length: length, flags: flags,
                                             next: UInt16(truncatingIfNeeded: random.next() % 20))
            }
            var header = [UInt8](repeating: 0, count: 16)
            for i in 0..<16 { header[i] = UInt8(truncatingIfNeeded: random.next()) }
            header[0] = [0, 1, 4, 8, 11, 13, 7][Int(random.next() % 7)]
            try blk.driver.memory.write(bytes: header, at: GuestAddress(BlockDriver.headers))
            try blk.driver.makeAvailable(UInt16(random.next() % UInt64(Layout.queueSize + 2)))
            blk.driver.notify()
            _ = round
        }
    }
}

/// vm.resize-disk's device part: the capacity follows the backend and the guest hears of it.
@Suite("virtio-blk resize")
struct VirtioBlockResizeTests {
    @Test("resize(to:) changes the capacity; a running device raises a configuration interrupt; bad sizes and backends that cannot resize change nothing")
    func resize() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resize-\(UUID().uuidString).img").path
        _ = FileManager.default.createFile(atPath: path, contents: Data(count: 1 << 20))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let device = VirtioBlock(backend: try RawFileBackend(path: path))
        #expect(device.readConfig(offset: 0, size: 8) == 2048)
        try device.resize(to: 2 << 20)
        #expect(device.readConfig(offset: 0, size: 8) == 4096, "not running: no interrupt, the capacity follows")
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x10_0000)])
        let interrupt = RecordingInterrupt()
        var queue = try SplitQueue(maxSize: 256)
        queue.size = 16
        queue.descriptorTable = GuestAddress(0x1000)
        queue.availableRing = GuestAddress(0x2000)
        queue.usedRing = GuestAddress(0x3000)
        try queue.activate(in: memory)
        device.acknowledgeFeatures(VirtioFeature.version1)
        try device.activate(memory: memory, queues: [queue], interrupt: interrupt)
        try device.resize(to: 3 << 20)
        #expect(device.readConfig(offset: 0, size: 8) == 6144)
        #expect(interrupt.events == [.config])
        #expect(throws: BlockError.self) { try device.resize(to: (3 << 20) + 100) }
        #expect(device.readConfig(offset: 0, size: 8) == 6144)
        let inMemory = VirtioBlock(backend: MemoryBlockBackend(size: 1 << 20))
        #expect(throws: BlockError.self) { try inMemory.resize(to: 2 << 20) }
        #expect(inMemory.readConfig(offset: 0, size: 8) == 2048)
        #expect(interrupt.events == [.config])
    }
}
