import DeviceModel
import Devices
import Synchronization
import Testing

/// Counts power-off requests.
final class ShutdownCounter: Sendable {
    private let value = Atomic(0)

    var count: Int { value.load(ordering: .relaxed) }

    var handler: ShutdownHandler {
        { self.value.add(1, ordering: .relaxed) }
    }
}

@Suite("ACPI shutdown device")
struct ACPIShutdownDeviceTests {
    @Test func s5SleepWritePowersOff() {
        let shutdowns = ShutdownCounter(), resets = ResetCounter()
        let device = ACPIShutdownDevice(onShutdown: shutdowns.handler, onReset: resets.handler)
        #expect(ACPIShutdownDevice.shutdownValue == 0x34)  // SLP_TYP 5 << 2 | SLP_EN
        device.writeByte(0, 0x34)
        #expect(shutdowns.count == 1 && device.shutdownRequests == 1)
        #expect(resets.count == 0 && device.resetRequests == 0)
    }

    @Test func resetValueResets() {
        let shutdowns = ShutdownCounter(), resets = ResetCounter()
        let device = ACPIShutdownDevice(onShutdown: shutdowns.handler, onReset: resets.handler)
        device.writeByte(0, ACPIShutdownDevice.resetValue)
        device.writeByte(0, 0x01)
        #expect(resets.count == 2 && device.resetRequests == 2)
        #expect(shutdowns.count == 0)
    }

    @Test(arguments: [UInt8(0x00), 0x02, 0x14, 0x20, 0x24, 0x30, 0x35, 0x3c, 0x80, 0xb4, 0xff])
    func otherBytesAreIgnored(value: UInt8) {
        let shutdowns = ShutdownCounter(), resets = ResetCounter()
        let device = ACPIShutdownDevice(onShutdown: shutdowns.handler, onReset: resets.handler)
        device.writeByte(0, value)  // 0x80 is Linux clearing WAK_STS; 0x14 is S5 without SLP_EN
        #expect(shutdowns.count == 0 && resets.count == 0)
    }

    @Test func widerAccessesAreIgnoredAndReadsAreZero() {
        let shutdowns = ShutdownCounter(), resets = ResetCounter()
        let device = ACPIShutdownDevice(onShutdown: shutdowns.handler, onReset: resets.handler)
        device.write(offset: 0, size: 2, value: 0x34)
        device.write(offset: 0, size: 4, value: 0x01)
        #expect(shutdowns.count == 0 && resets.count == 0)
        for size in [1, 2, 4, 8] { #expect(device.read(offset: 0, size: size) == 0) }
        device.write(offset: 0, size: 1, value: 0x1_0034)  // only the low byte counts
        #expect(shutdowns.count == 1)
        #expect(device.name == "acpi-shutdown")
    }

    @Test func decodesPorts0x600To0x603OnTheBus() throws {
        let shutdowns = ShutdownCounter(), resets = ResetCounter()
        let pio = Bus(name: "I/O port bus")
        try pio.insert(ACPIShutdownDevice(onShutdown: shutdowns.handler, onReset: resets.handler),
                       base: ACPIShutdownDevice.portBase, length: ACPIShutdownDevice.portLength)
        pio.write(address: 0x600, size: 1, value: 0x01)   // FADT RESET_REG
        pio.write(address: 0x603, size: 1, value: 0x34)   // offset ignored, as Cloud Hypervisor
        #expect(resets.count == 1 && shutdowns.count == 1)
        #expect(pio.read(address: 0x600, size: 1) == 0)   // SLEEP_STATUS_REG: no wake status
        #expect(pio.read(address: 0x604, size: 1) == nil)
    }
}

@Suite("ACPI PM timer")
struct ACPIPMTimerTests {
    @Test func countsAt3579545Hertz() {
        let clock = ManualMonotonicClock(start: 5_000_000_000)
        let timer = ACPIPMTimer(clock: clock)
        #expect(timer.read(offset: 0, size: 4) == 0)
        clock.advance(byNanoseconds: 1_000_000_000)
        #expect(timer.read(offset: 0, size: 4) == 3_579_545)
        clock.advance(byNanoseconds: 1_000)  // 1 µs more: 3.58 ticks
        #expect(timer.counter == 3_579_548)
    }

    @Test func wrapsAt32BitsWithoutOverflowing() {
        let clock = ManualMonotonicClock(start: 0)
        let timer = ACPIPMTimer(clock: clock)
        clock.advance(byNanoseconds: 10 * 3600 * 1_000_000_000)  // ten hours: 128,863,620,000 ticks
        #expect(timer.counter == UInt32(truncatingIfNeeded: UInt64(128_863_620_000)))
    }

    @Test func onlyDwordReadsAnswer() {
        let clock = ManualMonotonicClock(start: 0)
        let timer = ACPIPMTimer(clock: clock)
        clock.advance(byNanoseconds: 1_000_000)
        #expect(timer.read(offset: 0, size: 1) == 0)
        #expect(timer.read(offset: 0, size: 2) == 0)
        #expect(timer.read(offset: 0, size: 4) == 3579)
        timer.write(offset: 0, size: 4, value: 0)
        #expect(timer.read(offset: 0, size: 4) == 3579)
        #expect(ACPIPMTimer.portBase == 0x608 && ACPIPMTimer.portLength == 4)
    }
}

@Suite("ACPI generic event device")
struct ACPIGenericEventDeviceTests {
    @Test func notifyRaisesTheInterruptAndReadClears() throws {
        let line = RecordingInterruptLine()
        let ged = ACPIGenericEventDevice(interrupt: line)
        try ged.notify(.powerButton)
        try ged.notify(.cpuHotplug)
        #expect(line.count == 2)
        #expect(ged.pendingEvents == [.powerButton, .cpuHotplug])
        #expect(ged.readByte(0) == 0x09)
        #expect(ged.readByte(0) == 0)
        #expect(ged.read(offset: 0, size: 4) == 0)
    }

    @Test func failedDeliveryKeepsTheEvent() {
        let ged = ACPIGenericEventDevice(interrupt: FailingInterruptLine())
        #expect(throws: FailingInterruptLine.DeliveryFailed.self) { try ged.notify(.powerButton) }
        #expect(ged.pendingEvents == .powerButton)
        ged.writeByte(0, 0)  // writes are ignored
        #expect(ged.readByte(0) == 8)
    }
}
