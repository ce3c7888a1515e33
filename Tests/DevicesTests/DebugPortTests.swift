import DeviceModel
import Devices
import Testing

@Suite("Debug port 0x80")
struct DebugPortTests {
    @Test(arguments: [
        (UInt8(0x00), DebugPortRange.firmware), (0x1f, .firmware),
        (0x20, .bootloader), (0x3f, .bootloader),
        (0x40, .kernel), (0x5f, .kernel),
        (0x60, .userspace), (0x7f, .userspace),
        (0x80, .custom), (0xff, .custom),
    ])
    func codesAreClassifiedByRange(code: UInt8, range: DebugPortRange) {
        #expect(DebugPortRange(code: code) == range)
    }

    @Test func logLinesMatchCloudHypervisor() {
        #expect(
            DebugPortEvent(code: 0x41, elapsedNanoseconds: 1_250_000_000).description
                == "[Debug I/O port: Kernel code 0x41] 1.250000 seconds")
        #expect(
            DebugPortEvent(code: 0x00, elapsedNanoseconds: 19_004_999).description
                == "[Debug I/O port: Firmware code 0x0] 0.019004 seconds")
        #expect(
            DebugPortEvent(code: 0xff, elapsedNanoseconds: 62_000_000_001).description
                == "[Debug I/O port: Custom code 0xff] 62.000000 seconds")
    }

    @Test func writesAreTimedFromCreation() {
        let clock = ManualMonotonicClock(start: 5_000_000_000)
        let log = LogRecorder()
        let port = DebugPort(clock: clock, log: log.sink)
        clock.advance(byNanoseconds: 19_004_000)
        port.writeByte(0, 0x00)
        clock.advance(byNanoseconds: 383_740_000)
        port.writeByte(0, 0x41)
        clock.advance(byNanoseconds: 1_000_000_000)
        port.write(offset: 0, size: 4, value: 0x1234_5660)  // the low byte is the code
        #expect(
            port.events == [
                DebugPortEvent(code: 0x00, elapsedNanoseconds: 19_004_000),
                DebugPortEvent(code: 0x41, elapsedNanoseconds: 402_744_000),
                DebugPortEvent(code: 0x60, elapsedNanoseconds: 1_402_744_000),
            ])
        #expect(port.events.map(\.range) == [.firmware, .kernel, .userspace])
        #expect(
            log.lines == [
                "[Debug I/O port: Firmware code 0x0] 0.019004 seconds",
                "[Debug I/O port: Kernel code 0x41] 0.402744 seconds",
                "[Debug I/O port: Userspace code 0x60] 1.402744 seconds",
            ])
    }

    @Test func keepsOnlyTheFirstEventsButLogsAll() {
        let log = LogRecorder()
        let port = DebugPort(clock: ManualMonotonicClock(start: 0), eventCapacity: 3, log: log.sink)
        for code: UInt8 in 1...5 { port.writeByte(0, code) }
        #expect(port.events.map(\.code) == [1, 2, 3])
        #expect(port.droppedEvents == 2)
        #expect(log.lines.count == 5)
        let none = DebugPort(clock: ManualMonotonicClock(start: 0), eventCapacity: -1, log: { _ in })
        none.writeByte(0, 1)
        #expect(none.eventCapacity == 0 && none.events.isEmpty && none.droppedEvents == 1)
    }

    @Test func readsReturnZeroAndRecordNothing() throws {
        let port = DebugPort(clock: ManualMonotonicClock(start: 0), log: { _ in })
        let pio = Bus(name: "I/O port bus")
        try pio.insert(port, base: DebugPort.port, length: DebugPort.portLength)
        #expect(pio.read(address: 0x80, size: 1) == 0)
        #expect(port.events.isEmpty)
        pio.write(address: 0x80, size: 1, value: 0x42)
        #expect(port.events.map(\.code) == [0x42])
    }

    @Test func systemClockMeasuresForwards() {
        let clock = SystemMonotonicClock()
        let first = clock.nanoseconds()
        #expect(clock.nanoseconds() >= first)
        let port = DebugPort(log: { _ in })
        port.writeByte(0, 0x7f)
        #expect(port.events.count == 1)
    }
}
