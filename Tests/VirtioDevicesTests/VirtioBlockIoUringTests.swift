import BlockStorage
import Foundation
import GuestMemory
import TestSupport
import Testing
import VirtioDevices
import VirtioQueue

/// A raw image in a temporary file, removed when the test ends.
final class TemporaryImage {
    let path: String
    init(_ bytes: [UInt8]) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("blk-uring-\(UUID().uuidString).img").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
    var contents: [UInt8] { [UInt8]((try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()) }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

private let pattern = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

/// virtio-blk with its reads, writes and flushes through io_uring: the behaviours the
/// synchronous device has, and what only the asynchronous one has (several requests in
/// flight, drain on pause and reset).
@Suite struct VirtioBlockIoUringTests {
    func disk(_ bytes: [UInt8], readOnly: Bool = false) throws -> (TemporaryImage, RawFileBackend) {
        let image = try TemporaryImage(bytes)
        return (image, try RawFileBackend(path: image.path, options: .init(readOnly: readOnly, lock: .none, ioUring: true)))
    }

    @Test func theDeviceGetsOneRingPerQueue() throws {
        let (_, backend) = try disk(pattern)
        let options = VirtioBlock.Options(queueCount: 3)
        #expect(try VirtioBlock.makeAsyncQueues(backend: backend, options: options).count == 3)
        #expect(try VirtioBlock.makeAsyncQueues(backend: MemoryBlockBackend(size: 4096), options: options).isEmpty)
    }

    @Test func writeThenReadRoundTripsThroughTheRing() throws {
        let (image, backend) = try disk([UInt8](repeating: 0, count: 1 << 20))
        var blk = try BlockDriver(disk: backend)
        #expect(!blk.device.asyncQueues.isEmpty)
        var result = try blk.submit(type: 1, sector: 8, dataLengths: [4096, 4096], payload: pattern)
        #expect(result.status == 0 && result.used == 1)
        #expect(Array(image.contents[4096..<(4096 + 8192)]) == pattern)
        try blk.driver.memory.fill(0, count: 8192, at: GuestAddress(BlockDriver.data))
        result = try blk.submit(type: 0, sector: 8, dataLengths: [512, 7680], deviceWrites: true)
        #expect(result.status == 0 && result.used == 8193)
        #expect(try blk.guestData(8192) == pattern)
        #expect(try blk.submit(type: 4, sector: 0).status == 0)
        #expect(blk.device.counters == .init(readBytes: 8192, writeBytes: 8192, readOps: 1, writeOps: 1, errors: 0))
        #expect(blk.driver.status & VirtioStatus.deviceNeedsReset == 0)
    }

    @Test func badRequestsStillFailOneByOne() throws {
        let (_, backend) = try disk([UInt8](repeating: 0, count: 64 * 1024))
        var blk = try BlockDriver(disk: backend)
        #expect(try blk.submit(type: 0, sector: 127, dataLengths: [1024], deviceWrites: true).status == 1)
        #expect(try blk.submit(type: 1, sector: UInt64.max / 256, dataLengths: [512]).status == 1)
        #expect(try blk.submit(type: 0, sector: 126, dataLengths: [1024], deviceWrites: true).status == 0)
        #expect(try blk.submit(type: 1, sector: 0, dataLengths: [100]).status == 1)
        #expect(try blk.submit(type: 8, sector: 0, dataLengths: [20], deviceWrites: true).status == 0)  // GET_ID stays synchronous
        #expect(try blk.submit(type: 7, sector: 0).status == 2)
        #expect(blk.device.counters.errors == 4)  // the unsupported type counts too, as in the synchronous device
    }

    @Test func readOnlyImageRefusesWrites() throws {
        let (image, backend) = try disk(pattern, readOnly: true)
        var blk = try BlockDriver(disk: backend)
        #expect(try blk.submit(type: 1, sector: 0, dataLengths: [512], payload: [UInt8](repeating: 9, count: 512)).status == 1)
        #expect(try blk.submit(type: 4, sector: 0).status == 0)
        #expect(image.contents == pattern)
    }

    @Test func writeThroughWritesStillComplete() throws {
        let (image, backend) = try disk([UInt8](repeating: 0, count: 8192))
        var blk = try BlockDriver(disk: backend, features: VirtioFeature.version1)  // no FLUSH: every write durable, synchronously
        #expect(try blk.submit(type: 1, sector: 1, dataLengths: [512], payload: pattern).status == 0)
        #expect(Array(image.contents[512..<1024]) == Array(pattern[0..<512]))
    }

    /// Posts `count` reads of 512 bytes (sector i into its own buffer) before any completion is handled.
    func postReads(_ blk: inout BlockDriver, count: Int) throws {
        for index in 0..<count {
            let head = UInt16(index * 3)
            let header = GuestAddress(BlockDriver.headers + UInt64(index) * 16)
            var bytes = [UInt8](repeating: 0, count: 16)
            bytes[8] = UInt8(index)
            try blk.driver.memory.write(bytes: bytes, at: header)
            try blk.driver.putDescriptor(head, address: header.rawValue, length: 16, flags: 1, next: head + 1)
            try blk.driver.putDescriptor(head + 1, address: BlockDriver.data + UInt64(index) * 512, length: 512, flags: 3, next: head + 2)
            try blk.driver.putDescriptor(head + 2, address: BlockDriver.statuses + UInt64(index), length: 1, flags: 2)
            try blk.driver.makeAvailable(head)
        }
        blk.driver.notify()
    }

    @Test("five requests in flight at once; each completes with its own data")
    func severalInFlight() throws {
        let (_, backend) = try disk(pattern)
        var blk = try BlockDriver(disk: backend)
        try postReads(&blk, count: 5)
        #expect(blk.device.asyncQueues[0].inFlight + Int(blk.usedIndex) == 5)
        try blk.settle()
        #expect(blk.usedIndex == 5)
        for index in 0..<5 {
            #expect(try blk.driver.memory.readBytes(count: 512, at: GuestAddress(BlockDriver.data + UInt64(index) * 512))
                    == Array(pattern[(index * 512)..<((index + 1) * 512)]))
            #expect(try blk.driver.memory.read(UInt8.self, at: GuestAddress(BlockDriver.statuses + UInt64(index))) == 0)
        }
        #expect(blk.device.counters.readOps == 5)
    }

    @Test("saving the state drains: nothing in flight, every request used")
    func saveDrains() throws {
        let (_, backend) = try disk(pattern)
        var blk = try BlockDriver(disk: backend)
        try postReads(&blk, count: 5)
        _ = blk.device.saveDeviceState()
        #expect(blk.device.asyncQueues[0].inFlight == 0)
        #expect(blk.usedIndex == 5)
    }

    @Test("a reset waits for the requests in flight and drops them; the device serves again after")
    func resetDrains() throws {
        let (_, backend) = try disk(pattern)
        var blk = try BlockDriver(disk: backend)
        try postReads(&blk, count: 4)
        blk.driver.setStatus(0)
        #expect(blk.device.asyncQueues[0].inFlight == 0)
        #expect(!blk.device.isActivated)
        blk.driver.availableIndex = 0
        try blk.driver.memory.fill(0, count: 0x3000, at: GuestAddress(0x1000))
        blk.driver.enableMSIX()
        blk.driver.negotiate(VirtioFeature.version1 | VirtioBlockABI.Feature.flush)
        blk.driver.setUpQueue()
        blk.driver.setStatus(0x0f)
        #expect(try blk.submit(type: 0, sector: 3, dataLengths: [512], deviceWrites: true).status == 0)
        #expect(try blk.guestData(512) == Array(pattern[1536..<2048]))
    }

    @Test func randomChainsNeverCrashTheDevice() throws {
        var random = SplitMix64(seed: 0x0A51)
        let (_, backend) = try disk([UInt8](repeating: 0, count: 64 * 1024))
        for _ in 0..<200 {
            var blk = try BlockDriver(disk: backend)
            let count = Int(random.next() % 4) + 1
            for index in 0..<count {
                let address = random.next() % 3 == 0 ? random.next() : BlockDriver.headers + random.next() % 0x40000
                let length = UInt32(truncatingIfNeeded: random.next() % 3 == 0 ? random.next() : random.next() % 9000)
                try blk.driver.putDescriptor(UInt16(index), address: address, length: length, flags: UInt16(truncatingIfNeeded: random.next() % 8),
                                             next: UInt16(truncatingIfNeeded: random.next() % 20))
            }
            var header = [UInt8](repeating: 0, count: 16)
            for i in 0..<16 { header[i] = UInt8(truncatingIfNeeded: random.next()) }
            header[0] = [0, 1, 4, 8, 11, 13, 7][Int(random.next() % 7)]
            header[8] = UInt8(random.next() % 100); for i in 9..<16 { header[i] = 0 }
            try blk.driver.memory.write(bytes: header, at: GuestAddress(BlockDriver.headers))
            try blk.driver.makeAvailable(UInt16(random.next() % UInt64(Layout.queueSize + 2)))
            blk.driver.notify()
            blk.device.drain()
            blk.driver.setStatus(0)
            #expect(blk.device.asyncQueues[0].inFlight == 0)
        }
    }
}
