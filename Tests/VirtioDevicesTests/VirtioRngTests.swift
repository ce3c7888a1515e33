#if canImport(Glibc)
import Glibc
#endif
import GuestMemory
import PCI
import Testing
import VirtioDevices
import VirtioQueue

@Suite struct VirtioRngEndToEndTests {
    @Test func requestIsFilledAndSignalled() throws {
        var driver = try Driver()
        driver.bringUp()
        try driver.putDescriptor(0, address: Layout.buffers, length: 32, flags: 2)
        try driver.makeAvailable(0)
        driver.notify()
        #expect(try driver.memory.readBytes(count: 32, at: GuestAddress(Layout.buffers)) == (0..<32).map { UInt8($0) })
        let used = try driver.usedEntry(0)
        #expect(used.index == 1 && used.id == 0 && used.length == 32)
        #expect(driver.routing.deliveries == [1])
        #expect(driver.read(VirtioPCILayout.isrOffset, size: 1) == 1)
        #expect(driver.read(VirtioPCILayout.isrOffset, size: 1) == 0)
    }

    @Test func chainAcrossTwoBuffers() throws {
        var driver = try Driver()
        driver.bringUp()
        try driver.putDescriptor(3, address: Layout.buffers, length: 4, flags: 3, next: 5)
        try driver.putDescriptor(5, address: Layout.buffers + 0x100, length: 4, flags: 2)
        try driver.makeAvailable(3)
        driver.transport.notifyQueue(0)
        #expect(try driver.memory.readBytes(count: 4, at: GuestAddress(Layout.buffers)) == [0, 1, 2, 3])
        #expect(try driver.memory.readBytes(count: 4, at: GuestAddress(Layout.buffers + 0x100)) == [4, 5, 6, 7])
        let used = try driver.usedEntry(0)
        #expect(used.id == 3 && used.length == 8)
    }

    @Test func severalRequestsOneInterrupt() throws {
        var driver = try Driver()
        driver.bringUp()
        for head: UInt16 in 0..<3 {
            try driver.putDescriptor(head, address: Layout.buffers + UInt64(head) * 0x100, length: 2, flags: 2)
            try driver.makeAvailable(head)
        }
        driver.notify()
        #expect(try driver.usedEntry(2).index == 3)
        #expect(try driver.usedEntry(2).id == 2)
        #expect(driver.routing.deliveries == [1])
    }

    @Test func noInterruptFlagSuppressesDelivery() throws {
        var driver = try Driver()
        driver.bringUp()
        try driver.memory.write(UInt16(1), at: Layout.available)
        try driver.putDescriptor(0, address: Layout.buffers, length: 8, flags: 2)
        try driver.makeAvailable(0)
        driver.notify()
        #expect(try driver.usedEntry(0).index == 1)
        #expect(driver.routing.deliveries.isEmpty)
    }

    @Test func maskedVectorBecomesPending() throws {
        var driver = try Driver()
        driver.bringUp()
        driver.write(VirtioPCILayout.msixTableOffset + 16 + 12, size: 4, 1)
        try driver.putDescriptor(0, address: Layout.buffers, length: 8, flags: 2)
        try driver.makeAvailable(0)
        driver.notify()
        #expect(driver.routing.deliveries.isEmpty)
        #expect(driver.read(VirtioPCILayout.msixPBAOffset, size: 8) == 0b10)
        driver.write(VirtioPCILayout.msixTableOffset + 16 + 12, size: 4, 0)
        #expect(driver.routing.deliveries == [1])
    }

    @Test func notifyBeforeDriverOKIsIgnored() throws {
        var driver = try Driver()
        driver.enableMSIX()
        driver.negotiate()
        driver.setUpQueue()
        try driver.putDescriptor(0, address: Layout.buffers, length: 8, flags: 2)
        try driver.makeAvailable(0)
        driver.notify()
        #expect(try driver.usedEntry(0).index == 0)
        #expect(driver.status & VirtioStatus.deviceNeedsReset == 0)
    }
}

@Suite struct VirtioHostileDriverTests {
    @Test(arguments: [UInt16(0), 3, 512])
    func badQueueSizeNeedsReset(size: UInt16) throws {
        let driver = try Driver()
        driver.enableMSIX()
        driver.negotiate()
        driver.setUpQueue(size: size)
        driver.setStatus(0x0f)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(!driver.transport.isActivated)
        guard case .queue(index: 0, .invalidSize)? = driver.transport.lastError else {
            Issue.record("unexpected error \(String(describing: driver.transport.lastError))")
            return
        }
    }

    @Test func queueNotEnabledNeedsReset() throws {
        let driver = try Driver()
        driver.negotiate()
        driver.setStatus(0x0f)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(driver.transport.lastError == .queueNotEnabled(index: 0))
    }

    @Test func ringOutsideMemoryNeedsReset() throws {
        let driver = try Driver()
        driver.negotiate()
        driver.setUpQueue(descriptors: GuestAddress(0x4000_0000))
        driver.setStatus(0x0f)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
    }

    @Test func descriptorOutsideMemoryNeedsReset() throws {
        var driver = try Driver()
        driver.bringUp()
        try driver.putDescriptor(0, address: 0x4000_0000, length: 64, flags: 2)
        try driver.makeAvailable(0)
        driver.notify()
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        guard case .queue(index: 0, .descriptorOutOfMemory)? = driver.transport.lastError else {
            Issue.record("unexpected error \(String(describing: driver.transport.lastError))")
            return
        }
        // The configuration interrupt went out on vector 0, ISR bit 1 is set.
        #expect(driver.routing.deliveries == [0])
        #expect(driver.read(VirtioPCILayout.isrOffset, size: 1) == 2)
        #expect(driver.read(VirtioCommonConfig.configGeneration, size: 1) == 1)
        // Further notifications are ignored until reset, then the device works again.
        driver.notify()
        #expect(driver.routing.deliveries == [0])
        driver.setStatus(0)
        #expect(driver.status == 0)
        #expect(driver.transport.lastError == nil)
    }

    @Test func chainWithoutWritableBufferNeedsReset() throws {
        var driver = try Driver()
        driver.bringUp()
        try driver.putDescriptor(0, address: Layout.buffers, length: 8, flags: 0)
        try driver.makeAvailable(0)
        driver.notify()
        #expect(driver.transport.lastError == .noWritableBuffer(queue: 0, head: 0))
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
    }

    @Test func headOutOfRangeNeedsReset() throws {
        var driver = try Driver()
        driver.bringUp()
        try driver.makeAvailable(200)
        driver.notify()
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
    }

    @Test func notifyOfMissingQueueNeedsReset() throws {
        let driver = try Driver()
        driver.bringUp()
        driver.notify(3)
        #expect(driver.transport.lastError == .queueIndexOutOfRange(index: 3, count: 1))
    }

    @Test func driverCannotClearNeedsReset() throws {
        var driver = try Driver()
        driver.bringUp()
        try driver.makeAvailable(200)
        driver.notify()
        driver.setStatus(0x0f)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
    }

    @Test func errorsExplainThemselves() {
        let errors: [VirtioDeviceError] = [
            .notActivated, .queueNotEnabled(index: 0), .noWritableBuffer(queue: 0, head: 1),
            .queueIndexOutOfRange(index: 2, count: 1), .backend("x"), .queue(index: 0, .notReady),
        ]
        for error in errors { #expect(!error.description.isEmpty) }
        #expect(VirtioPCIError.invalidQueueCount(0).description.contains("queues"))
    }
}

@Suite struct EntropySourceTests {
    @Test func urandomDeliversRequestedCount() throws {
        let fd = open("/dev/urandom", O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        let bytes = try FileEntropySource(fileDescriptor: fd).randomBytes(count: 4096)
        #expect(bytes.count == 4096)
        #expect(Set(bytes).count > 1)
    }

    @Test func endOfFileIsAnError() throws {
        let fd = open("/dev/null", O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(throws: VirtioDeviceError.self) { try FileEntropySource(fileDescriptor: fd).randomBytes(count: 1) }
    }

    @Test func failingSourceNeedsReset() throws {
        let fd = open("/dev/null", O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        var driver = try Driver(device: VirtioRng(source: FileEntropySource(fileDescriptor: fd)))
        driver.bringUp()
        try driver.putDescriptor(0, address: Layout.buffers, length: 8, flags: 2)
        try driver.makeAvailable(0)
        driver.notify()
        guard case .backend? = driver.transport.lastError else {
            Issue.record("unexpected error \(String(describing: driver.transport.lastError))")
            return
        }
    }
}
