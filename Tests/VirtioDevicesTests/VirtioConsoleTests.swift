import GuestMemory
import PCI
import Testing
import TestSupport
import VirtioDevices
import VirtioQueue

private let rx = VirtioConsole.receiveQueue
private let tx = VirtioConsole.transmitQueue

@Suite struct VirtioConsoleTransmitTests {
    @Test func chainsOfSeveralBuffersArriveInOrder() throws {
        let output = RecordingConsoleOutput()
        let guest = try ConsoleGuest(output: output)
        try guest.activate()
        guest.interrupt.clear()
        let first = try guest.postTransmit([Array("hel".utf8), Array("lo ".utf8)])
        let second = try guest.postTransmit([Array("wor".utf8), [], Array("ld".utf8)])
        let third = try guest.postTransmit([Array("!\n".utf8)])
        try guest.console.processQueue(tx)
        #expect(output.bytes == Array("hello world!\n".utf8))
        let used = try guest.takeUsed(tx)
        #expect(used.map(\.head) == [first, second, third])
        #expect(used.allSatisfy { $0.length == 0 })
        #expect(guest.interrupt.events == [.queue(tx)])
    }

    @Test func writableBuffersOfATransmitChainAreLeftAlone() throws {
        let output = RecordingConsoleOutput()
        let guest = try ConsoleGuest(output: output)
        try guest.activate()
        try guest.postTransmit([[1, 2, 3]], writableLengths: [8])
        try guest.console.processQueue(tx)
        #expect(output.bytes == [1, 2, 3])
        #expect(try guest.takeUsed(tx).map(\.length) == [0])
    }

    @Test func largeChainIsHandedOverInBoundedPieces() throws {
        let output = RecordingConsoleOutput()
        let guest = try ConsoleGuest(output: output)
        try guest.activate()
        let payload = (0..<(VirtioConsole.outputChunkSize * 2 + 100)).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try guest.postTransmit([payload])
        try guest.console.processQueue(tx)
        #expect(output.bytes == payload)
        #expect(output.writes == 3)
    }

    @Test func suppressedInterruptIsNotSent() throws {
        let output = RecordingConsoleOutput()
        let guest = try ConsoleGuest(output: output)
        try guest.activate(features: 0)
        try guest.memory.write(UInt16(1), at: GuestAddress(ConsoleGuest.availableRing(tx)))
        try guest.postTransmit([[9]])
        try guest.console.processQueue(tx)
        #expect(output.bytes == [9])
        #expect(guest.interrupt.events.isEmpty)
    }
}

@Suite struct VirtioConsoleReceiveTests {
    @Test func inputFillsPostedChainsInOrderWithPartialFill() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate()
        guest.interrupt.clear()
        #expect(guest.console.enqueueInput(Array("0123456789".utf8)) == 10)
        #expect(guest.console.pendingInputCount == 10)
        let a = try guest.postReceive([4])
        let b = try guest.postReceive([1, 2])
        let c = try guest.postReceive([8])
        try guest.console.processQueue(rx)
        #expect(try guest.received(head: a, length: 4) == Array("0123".utf8))
        #expect(try guest.received(head: b, length: 3) == Array("456".utf8))
        // The last chain is filled partly: 3 of its 8 bytes.
        #expect(try guest.received(head: c, length: 8) == Array("789".utf8) + [UInt8](repeating: 0xee, count: 5))
        let used = try guest.takeUsed(rx)
        #expect(used.map(\.head) == [a, b, c])
        #expect(used.map(\.length) == [4, 3, 3])
        #expect(guest.console.pendingInputCount == 0)
        #expect(guest.interrupt.events == [.queue(rx)])
    }

    @Test func deliveredBytesMatchTheInputStream() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate()
        try guest.postReceive([4])
        try guest.postReceive([1, 2])
        try guest.postReceive([8])
        #expect(guest.console.enqueueInput(Array("abcdefghij".utf8)) == 10)
        #expect(try guest.takeReceived() == Array("abcdefghij".utf8))
        // The partly filled last chain was returned; the next input needs a new chain.
        #expect(guest.console.enqueueInput(Array("XYZ".utf8)) == 3)
        #expect(guest.console.pendingInputCount == 3)
        try guest.postReceive([2, 2])
        try guest.console.processQueue(rx)
        #expect(try guest.takeReceived() == Array("XYZ".utf8))
    }

    @Test func inputWithoutBuffersWaitsForThem() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate()
        guest.interrupt.clear()
        #expect(guest.console.enqueueInput(Array("hello".utf8)) == 5)
        #expect(try guest.takeUsed(rx).isEmpty)
        #expect(guest.interrupt.events.isEmpty)
        #expect(guest.console.pendingInputCount == 5)
        try guest.postReceive([64])
        try guest.console.processQueue(rx)
        #expect(try guest.takeReceived() == Array("hello".utf8))
        #expect(guest.interrupt.events == [.queue(rx)])
    }

    @Test func postedBuffersWaitForInput() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate()
        guest.interrupt.clear()
        try guest.postReceive([16])
        try guest.console.processQueue(rx)
        #expect(try guest.takeUsed(rx).isEmpty)
        #expect(guest.interrupt.events.isEmpty)
        guest.console.enqueueInput([0x41])
        #expect(try guest.takeReceived() == [0x41])
        #expect(guest.interrupt.events == [.queue(rx)])
    }

    @Test func inputBeforeActivationIsDeliveredAfterIt() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        #expect(guest.console.enqueueInput(Array("early".utf8)) == 5)
        try guest.postReceive([3])
        try guest.postReceive([3])
        try guest.activate()
        #expect(try guest.takeReceived() == Array("early".utf8))
    }

    @Test func pendingInputIsBounded() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput(), inputCapacity: 16)
        try guest.activate()
        let stream = (0..<40).map { UInt8($0) }
        #expect(guest.console.inputCapacity == 16)
        #expect(guest.console.enqueueInput(stream[0..<20]) == 16)
        #expect(guest.console.receiveSpace == 0)
        #expect(guest.console.enqueueInput(stream[16..<20]) == 0)
        try guest.postReceive([10])
        try guest.console.processQueue(rx)
        #expect(guest.console.receiveSpace == 10)
        #expect(guest.console.enqueueInput(stream[16..<40]) == 10)
        try guest.postReceive([64])
        try guest.console.processQueue(rx)
        #expect(guest.console.enqueueInput(stream[26..<40]) == 14)
        try guest.postReceive([64])
        try guest.console.processQueue(rx)
        #expect(try guest.takeReceived() == stream)
    }

    @Test func postedBuffersMakeRoomForLargeInput() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput(), inputCapacity: 8)
        try guest.activate()
        try guest.postReceive([16])
        try guest.postReceive([16])
        let stream = (0..<30).map { UInt8($0 + 100) }
        #expect(guest.console.enqueueInput(stream) == 30)
        #expect(try guest.takeReceived() == stream)
    }
}

@Suite struct VirtioConsoleConfigurationTests {
    @Test func identityAndFeatures() {
        let console = VirtioConsole(output: DiscardingConsoleOutput())
        #expect(console.deviceType == .console)
        #expect(console.features == VirtioConsole.Feature.size | VirtioConsole.Feature.emergencyWrite)
        #expect(console.features & (VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors) == 0)
        #expect(console.features & VirtioConsole.Feature.multiport == 0)
        #expect(console.queueMaxSizes == [256, 256])
        #expect(console.pciClassCode == .other)
        #expect(!console.isActivated)
    }

    @Test func configSpaceLayout() {
        let console = VirtioConsole(output: DiscardingConsoleOutput(), cols: 80, rows: 24)
        #expect(console.readConfig(offset: 0, size: 2) == 80)
        #expect(console.readConfig(offset: 2, size: 2) == 24)
        #expect(console.readConfig(offset: 4, size: 4) == 1)
        #expect(console.readConfig(offset: 8, size: 4) == 0)
        #expect(console.readConfig(offset: 0, size: 4) == 80 | 24 << 16)
        #expect(console.readConfig(offset: 0, size: 8) == 80 | 24 << 16 | 1 << 32)
        #expect(console.readConfig(offset: 1, size: 1) == 0)
        #expect(console.readConfig(offset: 10, size: 4) == 0)
        #expect(console.readConfig(offset: 12, size: 4) == 0)
        #expect(console.readConfig(offset: .max, size: 8) == 0)
        #expect(console.readConfig(offset: 0, size: 3) == 80 | 24 << 16)
        #expect(console.readConfig(offset: 0, size: 0) == 0)
        // Writes to the read-only fields change nothing.
        console.writeConfig(offset: 0, size: 2, value: 5)
        console.writeConfig(offset: 4, size: 4, value: 5)
        #expect(console.readConfig(offset: 0, size: 8) == 80 | 24 << 16 | 1 << 32)
    }

    @Test func resizeSignalsTheRunningDriver() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        guest.console.resize(cols: 100, rows: 30)
        #expect(guest.console.readConfig(offset: 0, size: 4) == 100 | 30 << 16)
        try guest.activate()
        // Activation with VIRTIO_CONSOLE_F_SIZE raises one configuration interrupt (as CH).
        #expect(guest.interrupt.events == [.config])
        guest.console.resize(cols: 132, rows: 43)
        #expect(guest.console.size.cols == 132 && guest.console.size.rows == 43)
        #expect(guest.console.readConfig(offset: 2, size: 2) == 43)
        #expect(guest.interrupt.events == [.config, .config])
        try guest.reset()
        guest.console.resize(cols: 1, rows: 2)
        #expect(guest.interrupt.events == [.config, .config])
    }

    @Test func resizeWithoutSizeFeatureStaysQuiet() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate(features: 0)
        guest.console.resize(cols: 132, rows: 43)
        #expect(guest.console.readConfig(offset: 0, size: 4) == 132 | 43 << 16)
        #expect(guest.interrupt.events.isEmpty)
    }

    @Test func emergencyWriteOutputsOneCharacter() throws {
        let output = RecordingConsoleOutput()
        let guest = try ConsoleGuest(output: output)
        // Allowed before the driver set up anything.
        guest.console.writeConfig(offset: VirtioConsole.ConfigOffset.emergencyWrite, size: 4, value: 0x4241)
        try guest.activate()
        guest.console.writeConfig(offset: 8, size: 4, value: 0x0a)
        // Other widths and offsets are not emergency writes.
        guest.console.writeConfig(offset: 8, size: 1, value: 0x43)
        guest.console.writeConfig(offset: 8, size: 2, value: 0x43)
        guest.console.writeConfig(offset: 9, size: 4, value: 0x43)
        #expect(output.bytes == [0x41, 0x0a])
        #expect(guest.console.readConfig(offset: 8, size: 4) == 0)
    }
}

@Suite struct VirtioConsoleHostileTests {
    @Test func transmitChainWithoutReadableBuffer() throws {
        let output = RecordingConsoleOutput()
        let guest = try ConsoleGuest(output: output)
        try guest.activate()
        try guest.postTransmit([[1]])
        let bad = try guest.post(queue: tx, [GuestBuffer(address: 0x30000, length: 8, writable: true)])
        try guest.postTransmit([[2]])
        #expect(throws: VirtioDeviceError.noReadableBuffer(queue: tx, head: bad)) { try guest.console.processQueue(tx) }
        // The chain before the broken one went out and was signalled.
        #expect(output.bytes == [1])
        #expect(guest.interrupt.events.last == .queue(tx))
    }

    @Test func receiveChainWithoutWritableBuffer() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate()
        let bad = try guest.post(queue: rx, [GuestBuffer(address: 0x30000, length: 8, writable: false)])
        guest.console.enqueueInput([7, 8])
        #expect(throws: VirtioDeviceError.noWritableBuffer(queue: rx, head: bad)) { try guest.console.processQueue(rx) }
        #expect(guest.console.pendingInputCount == 2)
    }

    @Test func failureMetWhileEnqueuingIsReportedAndInputKept() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate()
        let bad = try guest.post(queue: rx, [GuestBuffer(address: 0x30000, length: 8, writable: false)])
        try guest.console.processQueue(rx)  // Nothing waits: the chain is not looked at yet.
        #expect(guest.console.enqueueInput([1, 2, 3]) == 3)
        let expected = VirtioDeviceError.noWritableBuffer(queue: rx, head: bad)
        #expect(guest.console.inputError == expected)
        // Any later notification reports it, so the transport sets DEVICE_NEEDS_RESET.
        #expect(throws: expected) { try guest.console.processQueue(tx) }
        #expect(throws: expected) { try guest.console.processQueue(rx) }
        #expect(guest.console.enqueueInput([4]) == 1)
        // After a reset the input is still there, in order.
        try guest.reset()
        #expect(guest.console.inputError == nil)
        try guest.activate()
        try guest.postReceive([16])
        try guest.console.processQueue(rx)
        #expect(try guest.takeReceived() == [1, 2, 3, 4])
    }

    @Test func loopingChain() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate()
        try guest.putDescriptor(queue: tx, 0, address: 0x30000, length: 4, flags: 1, next: 1)
        try guest.putDescriptor(queue: tx, 1, address: 0x30010, length: 4, flags: 1, next: 0)
        try guest.publish(queue: tx, 0)
        #expect(throws: VirtioDeviceError.queue(index: tx, .chainTooLong(head: 0, limit: 16))) {
            try guest.console.processQueue(tx)
        }
    }

    @Test func bufferOutsideGuestMemory() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate()
        try guest.putDescriptor(queue: rx, 3, address: ConsoleGuest.memorySize - 4, length: 64, flags: 2)
        try guest.publish(queue: rx, 3)
        guest.console.enqueueInput([1])
        guard case .queue(index: rx, .descriptorOutOfMemory)? = guest.console.inputError else {
            Issue.record("unexpected error \(String(describing: guest.console.inputError))")
            return
        }
        #expect(guest.console.pendingInputCount == 1)
    }

    @Test func headOutOfRange() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        try guest.activate()
        try guest.publish(queue: tx, 99)
        #expect(throws: VirtioDeviceError.queue(index: tx, .headIndexOutOfRange(head: 99, size: 16))) {
            try guest.console.processQueue(tx)
        }
    }

    @Test func missingOrDisabledQueues() throws {
        let guest = try ConsoleGuest(output: RecordingConsoleOutput())
        let queues = try guest.queues()
        #expect(throws: VirtioDeviceError.queueIndexOutOfRange(index: 1, count: 1)) {
            try guest.console.activate(memory: guest.memory, queues: [queues[0]], interrupt: guest.interrupt)
        }
        #expect(throws: VirtioDeviceError.queueNotEnabled(index: 1)) {
            try guest.console.activate(memory: guest.memory, queues: guest.queues(enabled: [true, false]),
                                       interrupt: guest.interrupt)
        }
        #expect(throws: VirtioDeviceError.queueNotEnabled(index: 0)) {
            try guest.console.activate(memory: guest.memory, queues: guest.queues(enabled: [false, true]),
                                       interrupt: guest.interrupt)
        }
        #expect(!guest.console.isActivated)
        #expect(throws: VirtioDeviceError.notActivated) { try guest.console.processQueue(rx) }
        #expect(throws: VirtioDeviceError.notActivated) { try guest.console.processQueue(tx) }
        #expect(throws: VirtioDeviceError.queueIndexOutOfRange(index: 2, count: 2)) { try guest.console.processQueue(2) }
    }

    @Test func errorsExplainThemselves() {
        #expect(VirtioDeviceError.noReadableBuffer(queue: 1, head: 4).description.contains("device-readable"))
    }
}

@Suite struct VirtioConsoleLifecycleTests {
    @Test func resetForgetsQueuesButKeepsInput() throws {
        let output = RecordingConsoleOutput()
        let guest = try ConsoleGuest(output: output)
        try guest.activate()
        try guest.postTransmit([[1]])
        try guest.console.processQueue(tx)
        guest.console.enqueueInput([5, 6])
        try guest.reset()
        #expect(!guest.console.isActivated)
        #expect(throws: VirtioDeviceError.notActivated) { try guest.console.processQueue(tx) }
        guest.console.enqueueInput([7])
        #expect(guest.console.pendingInputCount == 3)
        try guest.activate()
        #expect(guest.console.isActivated)
        try guest.postReceive([2])
        try guest.postReceive([2])
        try guest.console.processQueue(rx)
        #expect(try guest.takeReceived() == [5, 6, 7])
        try guest.postTransmit([[2, 3]])
        try guest.console.processQueue(tx)
        #expect(output.bytes == [1, 2, 3])
    }
}

@Suite struct VirtioConsoleTransportTests {
    /// Queue 1 of the transport test driver, beside queue 0 of ``Layout``.
    enum Queue1 {
        static let descriptors: UInt64 = 0x5000
        static let available: UInt64 = 0x6000
        static let used: UInt64 = 0x7000
    }

    /// Negotiates the console features, programs queue 0 (vector 1) and queue 1 (vector 2).
    func bringUp(_ driver: Driver, enableQueue1: Bool = true) {
        typealias C = VirtioCommonConfig
        driver.enableMSIX()
        driver.negotiate(VirtioFeature.version1 | VirtioConsole.Feature.size | VirtioConsole.Feature.emergencyWrite)
        driver.write(C.msixConfig, size: 2, 0)
        driver.setUpQueue()
        if enableQueue1 {
            driver.write(C.queueSelect, size: 2, 1)
            driver.write(C.queueSize, size: 2, UInt64(Layout.queueSize))
            driver.write(C.queueMSIXVector, size: 2, 2)
            driver.write(C.queueDescriptor, size: 4, Queue1.descriptors)
            driver.write(C.queueDriver, size: 4, Queue1.available)
            driver.write(C.queueDevice, size: 4, Queue1.used)
            driver.write(C.queueEnable, size: 2, 1)
        }
        driver.setStatus(0x0f)
    }

    @Test func transmitAndConfigurationThroughTheTransport() throws {
        let output = RecordingConsoleOutput()
        let console = VirtioConsole(output: output, cols: 80, rows: 25)
        let driver = try Driver(device: console)
        #expect(driver.transport.offeredFeatures == VirtioFeature.version1 | 0b101)
        bringUp(driver)
        #expect(driver.transport.isActivated)
        #expect(driver.routing.deliveries == [0])
        let config = VirtioPCILayout.deviceConfigOffset
        #expect(driver.read(config, size: 2) == 80)
        #expect(driver.read(config + 2, size: 2) == 25)
        #expect(driver.read(config + 4, size: 4) == 1)
        driver.write(config + 8, size: 4, 0x21)
        #expect(output.bytes == [0x21])
        // One transmit chain on queue 1.
        try driver.memory.write(bytes: Array("hi".utf8), at: GuestAddress(Layout.buffers))
        try driver.memory.write(UInt64(Layout.buffers), at: GuestAddress(Queue1.descriptors))
        try driver.memory.write(UInt32(2), at: GuestAddress(Queue1.descriptors + 8))
        try driver.memory.write(UInt16(1), at: GuestAddress(Queue1.available + 2))
        driver.notify(1)
        #expect(output.bytes == Array("!hi".utf8))
        #expect(try driver.memory.read(UInt16.self, at: GuestAddress(Queue1.used + 2)) == 1)
        #expect(driver.routing.deliveries == [0, 2])
        console.resize(cols: 120, rows: 50)
        #expect(driver.routing.deliveries == [0, 2, 0])
        #expect(driver.read(config, size: 4) == 120 | 50 << 16)
    }

    @Test func hostileTransmitChainNeedsReset() throws {
        let console = VirtioConsole(output: RecordingConsoleOutput())
        let driver = try Driver(device: console)
        bringUp(driver)
        try driver.memory.write(UInt64(Layout.buffers), at: GuestAddress(Queue1.descriptors))
        try driver.memory.write(UInt32(2), at: GuestAddress(Queue1.descriptors + 8))
        try driver.memory.write(UInt16(2), at: GuestAddress(Queue1.descriptors + 12))
        try driver.memory.write(UInt16(1), at: GuestAddress(Queue1.available + 2))
        driver.notify(1)
        #expect(driver.transport.lastError == .noReadableBuffer(queue: 1, head: 0))
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        driver.setStatus(0)
        #expect(!console.isActivated)
    }

    @Test func activationNeedsBothQueues() throws {
        let console = VirtioConsole(output: RecordingConsoleOutput())
        let driver = try Driver(device: console)
        bringUp(driver, enableQueue1: false)
        #expect(driver.transport.lastError == .queueNotEnabled(index: 1))
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
    }

    @Test func ringFeaturesAreRefused() throws {
        let driver = try Driver(device: VirtioConsole(output: RecordingConsoleOutput()))
        driver.negotiate(VirtioFeature.version1 | VirtioFeature.eventIndex)
        #expect(driver.status & VirtioStatus.featuresOK == 0)
    }
}

@Suite struct VirtioConsoleFuzzTests {
    /// Random valid traffic in both directions, with resets: input arrives in order and
    /// complete, output in order, and waiting input never passes the bound.
    @Test(arguments: [UInt64(0xC0_25_01E), 0xFEED_F00D, 7])
    func randomTrafficKeepsBothStreams(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let capacity = 96
        let output = RecordingConsoleOutput()
        let guest = try ConsoleGuest(output: output, inputCapacity: capacity)
        try guest.activate()
        var sent: [UInt8] = []
        var received: [UInt8] = []
        var expectedOutput: [UInt8] = []
        var postedOutput: [UInt8] = []
        for _ in 0..<3000 {
            switch random.next() % 100 {
            case 0..<30:
                let chunk = (0..<Int(random.next() % 160)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                let accepted = guest.console.enqueueInput(chunk)
                #expect(accepted <= chunk.count)
                if accepted < chunk.count { #expect(guest.console.pendingInputCount == capacity) }
                sent += chunk.prefix(accepted)
            case 30..<50:
                let count = Int(random.next() % 3) + 1
                guard guest.freeDescriptors(rx) >= count else { break }
                try guest.postReceive((0..<count).map { _ in Int(random.next() % 40) })
            case 50..<70:
                let count = Int(random.next() % 3) + 1
                let writable = random.next() % 4 == 0 ? [8] : []
                guard guest.freeDescriptors(tx) >= count + writable.count else { break }
                let pieces = (0..<count).map { _ in
                    (0..<Int(random.next() % 40)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                }
                try guest.postTransmit(pieces, writableLengths: writable)
                postedOutput += pieces.joined()
            case 70..<85:
                try guest.console.processQueue(rx)
            case 85..<98:
                try guest.console.processQueue(tx)
                expectedOutput += postedOutput
                postedOutput = []
                #expect(try guest.takeUsed(tx).allSatisfy { $0.length == 0 })
            default:
                // The driver resets: posted chains are dropped, waiting input is kept.
                received += try guest.takeReceived()
                try guest.reset()
                postedOutput = []
                try guest.activate()
            }
            received += try guest.takeReceived()
            try #require(guest.console.pendingInputCount <= capacity)
            try #require(received.count + guest.console.pendingInputCount == sent.count)
        }
        #expect(output.bytes == expectedOutput)
        #expect(received == Array(sent.prefix(received.count)))
        // Drain what still waits.
        while guest.console.pendingInputCount > 0 {
            if guest.freeDescriptors(rx) == 0 { try guest.reset(); try guest.activate() }
            try guest.postReceive([64])
            try guest.console.processQueue(rx)
            received += try guest.takeReceived()
        }
        #expect(received == sent)
    }

    /// Random descriptor tables and ring indices: every call returns or throws a
    /// ``VirtioDeviceError``, waiting input stays bounded, and after a reset the device
    /// works again.
    @Test func garbageQueuesNeverCrash() throws {
        var random = SplitMix64(seed: 0xBAD_C0DE)
        let output = CountingConsoleOutput()
        let guest = try ConsoleGuest(output: output, inputCapacity: 256)
        var failures = 0
        for _ in 0..<400 {
            try guest.reset()
            try guest.activate()
            for queue in 0..<2 {
                for index in UInt16(0)..<18 {
                    let address = random.next() % 8 == 0 ? random.next() : random.next() % (ConsoleGuest.memorySize + 0x1000)
                    let length = random.next() % 16 == 0 ? UInt32(truncatingIfNeeded: random.next()) : UInt32(random.next() % 0x800)
                    try guest.putDescriptor(queue: queue, index % ConsoleGuest.queueSize, address: address, length: length,
                                            flags: UInt16(random.next() % 8), next: UInt16(random.next() % 20))
                }
                for _ in 0..<(random.next() % 6) { try guest.publish(queue: queue, UInt16(random.next() % 20)) }
                if random.next() % 10 == 0 {
                    try guest.memory.write(UInt16(truncatingIfNeeded: random.next()),
                                           at: GuestAddress(ConsoleGuest.availableRing(queue) + 2))
                }
            }
            for _ in 0..<4 {
                switch random.next() % 4 {
                case 0: guest.console.enqueueInput((0..<Int(random.next() % 300)).map { UInt8(truncatingIfNeeded: $0) })
                case 1: guest.console.writeConfig(offset: random.next() % 16, size: Int(random.next() % 9), value: random.next())
                default:
                    do {
                        try guest.console.processQueue(Int(random.next() % 3))
                    } catch {
                        failures += 1
                    }
                }
                #expect(guest.console.pendingInputCount <= 256)
            }
        }
        #expect(failures > 0)
        // A sane driver afterwards still gets its input and output through.
        try guest.reset()
        try guest.activate()
        let waiting = guest.console.pendingInputCount
        let before = output.total
        try guest.postTransmit([[1, 2, 3]])
        try guest.console.processQueue(tx)
        #expect(output.total == before + 3)
        try guest.postReceive([256])
        try guest.console.processQueue(rx)
        #expect(try guest.takeReceived().count == waiting)
    }
}
