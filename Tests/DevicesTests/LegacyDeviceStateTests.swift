import DeviceModel
import Devices
import Foundation
import Testing
import TestSupport

@Suite("Legacy device state")
struct LegacyDeviceStateTests {
    // MARK: i8042 and the ACPI shutdown device keep nothing

    @Test func i8042StateIsEmptyAndTheRestoredDeviceStillWorks() throws {
        let original = I8042(onReset: {})
        #expect(try stateJSON(original) == "{}")
        let resets = ResetCounter()
        let fresh = I8042(onReset: resets.handler)
        try fresh.restoreState(try savedThroughJSON(original))
        #expect(fresh.readByte(0) == 0x20 && fresh.readByte(3) == 0)
        fresh.writeByte(3, 0xfe)
        #expect(resets.count == 1)
    }

    @Test func shutdownDeviceStateIsEmptyAndTheRestoredDeviceStillWorks() throws {
        let original = ACPIShutdownDevice(onShutdown: {}, onReset: {})
        #expect(try stateJSON(original) == "{}")
        let shutdowns = ResetCounter(), resets = ResetCounter()
        let fresh = ACPIShutdownDevice(onShutdown: shutdowns.handler, onReset: resets.handler)
        try fresh.restoreState(try savedThroughJSON(original))
        fresh.writeByte(0, 0x34)
        fresh.writeByte(0, 0x01)
        #expect(shutdowns.count == 1 && resets.count == 1 && fresh.readByte(0) == 0)
    }

    // MARK: CMOS

    static func busyCMOS(clock: FixedWallClock) -> CMOSRTC {
        let rtc = CMOSRTC(memoryBelow4G: 2 << 30, memoryAbove4G: 6 << 30, clock: clock, onReset: {})
        rtc.store(0x30, at: 0x01)       // alarm seconds
        rtc.store(0x15, at: 0x03)       // alarm minutes
        rtc.store(0x07, at: 0x05)       // alarm hours
        rtc.store(0x26, at: 0x0a)       // register A: another rate
        rtc.store(0x06, at: 0x0b)       // register B: binary, 24-hour
        rtc.store(0xab, at: 0x40)
        rtc.store(0x00, at: 0x00)       // ignored: the time is live
        rtc.writeByte(0, 0x80 | 0x0b)   // NMIs off, register B selected
        return rtc
    }

    @Test func cmosRestoresItsBytesAndKeepsFollowingTheHostClock() throws {
        let rtc = Self.busyCMOS(clock: FixedWallClock(seconds: leapDayEvening))
        let saved = try savedThroughJSON(rtc)
        #expect(saved.memory.count == 128 && saved.index == 0x8b)

        // A new process, 100 s later: 2024-03-01 00:01:38.
        let clock = FixedWallClock(seconds: leapDayEvening + 100)
        let fresh = CMOSRTC(memoryBelow4G: 2 << 30, memoryAbove4G: 6 << 30, clock: clock)
        try fresh.restoreState(saved)
        #expect(fresh.saveState() == saved)
        #expect(fresh.nmiDisabled)
        #expect(fresh.readByte(0) == 0x8b && fresh.readByte(1) == 0x06)
        // Binary mode carried over; the time is the host's now, not the time of the save.
        #expect([0x00, 0x02, 0x04, 0x07, 0x08].map { fresh.value(at: $0) } == [38, 1, 0, 1, 3])
        rtc.writeByte(0, 0x0a)
        #expect(fresh.value(at: 0x0a) == rtc.readByte(1))
        for index: UInt8 in [0x01, 0x03, 0x05, 0x34, 0x35, 0x40, 0x5b, 0x5c, 0x5d] {
            rtc.writeByte(0, index)
            #expect(fresh.value(at: index) == rtc.readByte(1), "CMOS byte \(index)")
        }
    }

    @Test func cmosRefusesImpossibleBytes() throws {
        let rtc = Self.busyCMOS(clock: FixedWallClock(seconds: leapDayEvening))
        let good = rtc.saveState()
        var state = good
        state.memory.removeLast()
        expectRefusal(rtc, state, naming: "memory holds 127 bytes")
        state = good
        state.memory[0x00] = 0x12
        expectRefusal(rtc, state, naming: "memory[0x00]")
        state = good
        state.memory[0x0a] |= 0x80
        expectRefusal(rtc, state, naming: "register A")
    }

    // MARK: PM timer

    @Test func pmTimerContinuesFromTheSavedCounter() throws {
        let clock = ManualMonotonicClock(start: 5_000_000_000)
        let timer = ACPIPMTimer(clock: clock)
        clock.advance(byNanoseconds: 2_000_000_000)
        #expect(timer.counter == 7_159_090)
        let saved = try savedThroughJSON(timer)
        #expect(saved.elapsedNanoseconds == 2_000_000_000 && saved.counter == 7_159_090)

        // A new process whose monotonic clock reads less than the time the timer has run.
        let newClock = ManualMonotonicClock(start: 1000)
        let fresh = ACPIPMTimer(clock: newClock)
        newClock.advance(byNanoseconds: 500)
        try fresh.restoreState(saved)
        #expect(fresh.read(offset: 0, size: 4) == 7_159_090)
        newClock.advance(byNanoseconds: 1_000_000_000)
        #expect(fresh.counter == 10_738_635)     // 3 s in all, not 1 s
        #expect(fresh.saveState().elapsedNanoseconds == 3_000_000_000)
    }

    // MARK: GED

    @Test func gedRestoresPendingEventsAndRaisesItsInterrupt() throws {
        let ged = ACPIGenericEventDevice(interrupt: RecordingInterruptLine())
        try ged.notify([.cpuHotplug, .powerButton])
        let saved = try savedThroughJSON(ged)
        #expect(try stateJSON(ged) == "{\"pending_events\":9}")

        let line = RecordingInterruptLine()
        let fresh = ACPIGenericEventDevice(interrupt: line)
        try fresh.restoreState(saved)
        #expect(line.take() == 1)
        #expect(fresh.pendingEvents == [.cpuHotplug, .powerButton])
        #expect(fresh.readByte(0) == 0x09 && fresh.readByte(0) == 0)
        // Nothing pending: no interrupt.
        try fresh.restoreState(ACPIGenericEventDevice.State())
        #expect(line.take() == 0)
        // A failed delivery is counted, the events stay.
        let failing = ACPIGenericEventDevice(interrupt: FailingInterruptLine())
        try failing.restoreState(saved)
        #expect(failing.interruptFailures == 1 && failing.pendingEvents == [.cpuHotplug, .powerButton])
    }

    @Test func gedRefusesUnknownEventBits() throws {
        let line = RecordingInterruptLine()
        let ged = ACPIGenericEventDevice(interrupt: line)
        try ged.notify(.pciHotplug)
        _ = line.take()
        var state = ged.saveState()
        state.pendingEvents = 0x14
        expectRefusal(ged, state, naming: "pending_events 0x14")
        #expect(line.take() == 0 && ged.pendingEvents == .pciHotplug)
    }

    // MARK: Debug port

    @Test func debugPortKeepsItsEventsAndTimesOnFromTheSave() throws {
        let clock = ManualMonotonicClock(start: 1000)
        let port = DebugPort(clock: clock, eventCapacity: 4, log: { _ in })
        clock.advance(byNanoseconds: 1_000_000)
        port.writeByte(0, 0x41)
        clock.advance(byNanoseconds: 1_000_000)
        port.writeByte(0, 0x42)
        clock.advance(byNanoseconds: 1_000_000)
        let saved = try savedThroughJSON(port)
        #expect(saved.elapsedNanoseconds == 3_000_000 && saved.events.count == 2 && saved.droppedEvents == 0)
        #expect(try stateJSON(port).contains("\"elapsed_nanoseconds\":1000000"))

        let newClock = ManualMonotonicClock(start: 7)
        let log = LogRecorder()
        let fresh = DebugPort(clock: newClock, eventCapacity: 4, log: log.sink)
        try fresh.restoreState(saved)
        newClock.advance(byNanoseconds: 1_000_000)
        fresh.writeByte(0, 0x43)
        #expect(fresh.events == port.events + [DebugPortEvent(code: 0x43, elapsedNanoseconds: 4_000_000)])
        #expect(log.lines == ["[Debug I/O port: Kernel code 0x43] 0.004000 seconds"])
        // Full again: the next one is dropped, as it would have been.
        fresh.writeByte(0, 0x44)
        fresh.writeByte(0, 0x45)
        #expect(fresh.events.count == 4 && fresh.droppedEvents == 1)
    }

    @Test func debugPortRefusesStatesItCouldNotHold() throws {
        let clock = ManualMonotonicClock(start: 0)
        let port = DebugPort(clock: clock, eventCapacity: 2, log: { _ in })
        clock.advance(byNanoseconds: 10)
        port.writeByte(0, 0x01)
        clock.advance(byNanoseconds: 10)
        let good = port.saveState()
        let event = { (time: UInt64) in DebugPortEvent(code: 0x20, elapsedNanoseconds: time) }
        var state = good
        state.events = [event(1), event(2), event(3)]
        expectRefusal(port, state, naming: "capacity of 2")
        state = good
        state.events = [event(5), event(4)]
        expectRefusal(port, state, naming: "events[1]")
        state = good
        state.droppedEvents = 3
        expectRefusal(port, state, naming: "dropped_events")
        state = good
        state.droppedEvents = -1
        expectRefusal(port, state, naming: "dropped_events")
        state = good
        state.events = [event(21)]
        expectRefusal(port, state, naming: "after elapsed_nanoseconds")
    }

    @Test func cmosReachableStatesAreAccepted() throws {
        let rtc = CMOSRTC(memoryBelow4G: 1 << 30, memoryAbove4G: 0, clock: FixedWallClock(seconds: leapDayEvening))
        var traffic = RandomAccess(random: SplitMix64(seed: 0xc3c3), span: 2)
        for step in 1...20_000 {
            if traffic.coin(2) {
                rtc.write(offset: traffic.offset(), size: 1, value: traffic.value())
            } else {
                _ = rtc.read(offset: traffic.offset(), size: 1)
            }
            guard step % 200 == 0 else { continue }
            let saved = try savedThroughJSON(rtc)
            let fresh = CMOSRTC(memoryBelow4G: 0, memoryAbove4G: 0)
            try fresh.restoreState(saved)
            #expect(fresh.saveState() == saved)
        }
    }
}
