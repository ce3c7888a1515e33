import DeviceModel
import Devices
import Testing

extension BusDevice {
    func read32(_ offset: UInt64) -> UInt32 { UInt32(read(offset: offset, size: 4)) }
    func write32(_ offset: UInt64, _ value: UInt32) { write(offset: offset, size: 4, value: UInt64(value)) }
    /// The eight PrimeCell ID bytes at 0xFE0-0xFFC.
    func primeCellID() -> [UInt32] { (0..<8).map { read32(0xFE0 + 4 * UInt64($0)) } }
}

@Suite("PL011 UART")
struct PL011Tests {
    typealias R = PL011State.Register

    @Test func resetStateAndIdentity() {
        let uart = PL011(interrupt: RecordingInterruptLine())
        #expect(uart.read32(R.flags.rawValue) == 0x90)
        #expect(uart.read32(R.control.rawValue) == 0x300)
        #expect(uart.read32(R.fifoLevelSelect.rawValue) == 0x12)
        #expect(uart.read32(R.rawInterruptStatus.rawValue) == 0)
        #expect(uart.primeCellID() == [0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1])
        #expect(uart.read32(0x800) == 0)
        #expect(uart.read(offset: 0, size: 8) == 0)
    }

    @Test func transmitRaisesTheTXInterruptWhenEnabled() {
        let line = RecordingInterruptLine(), output = BufferSerialOutput()
        let uart = PL011(interrupt: line, output: output)
        uart.write32(R.data.rawValue, 0x41)
        #expect(output.text == "A" && line.take() == 0)
        #expect(uart.read32(R.rawInterruptStatus.rawValue) == PL011State.Interrupt.transmit)
        // Unmasking a raised source delivers an edge; each further byte is another.
        uart.write32(R.interruptMask.rawValue, PL011State.Interrupt.transmit)
        #expect(line.take() == 1)
        #expect(uart.read32(R.maskedInterruptStatus.rawValue) == PL011State.Interrupt.transmit)
        uart.write(offset: R.data.rawValue, size: 1, value: 0x142)
        #expect(output.text == "AB" && line.take() == 1)
        uart.write32(R.interruptClear.rawValue, PL011State.Interrupt.transmit)
        #expect(uart.read32(R.maskedInterruptStatus.rawValue) == 0 && line.take() == 0)
        uart.write(offset: R.data.rawValue, size: 8, value: 0x43)
        #expect(output.text == "AB")
    }

    @Test func receiveFIFOFollowsFEN() {
        let line = RecordingInterruptLine()
        let uart = PL011(interrupt: line)
        uart.write32(R.interruptMask.rawValue, PL011State.Interrupt.receive)
        #expect(line.take() == 0)
        // FIFOs off: one byte at a time, RXFF as soon as it is there.
        #expect(uart.enqueueInput([1, 2, 3]) == 1)
        #expect(line.take() == 1)
        #expect(uart.read32(R.flags.rawValue) & (PL011State.Flag.receiveFull | PL011State.Flag.receiveEmpty) == PL011State.Flag.receiveFull)
        #expect(uart.read32(R.data.rawValue) == 1)
        #expect(uart.read32(R.flags.rawValue) & PL011State.Flag.receiveEmpty != 0)
        #expect(uart.read32(R.rawInterruptStatus.rawValue) & PL011State.Interrupt.receive == 0)
        // FIFOs on: 16 bytes.
        uart.write32(R.lineControl.rawValue, 0x70)
        #expect(uart.receiveSpace == 16)
        #expect(uart.enqueueInput(Array(0..<20)) == 16)
        #expect(line.take() == 1 && uart.receiveSpace == 0)
        #expect(uart.read32(R.flags.rawValue) & PL011State.Flag.receiveFull != 0)
        #expect((0..<16).map { _ in uart.read32(R.data.rawValue) } == (0..<16).map(UInt32.init))
        #expect(uart.read32(R.data.rawValue) == 0)
        // Toggling FEN flushes.
        uart.enqueueInput([9])
        uart.write32(R.lineControl.rawValue, 0x60)
        #expect(uart.read32(R.flags.rawValue) & PL011State.Flag.receiveEmpty != 0)
    }

    @Test func baudRateAndStateRoundTrip() {
        var state = PL011State()
        _ = state.write(offset: R.integerBaudRate.rawValue, value: 13)
        _ = state.write(offset: R.fractionalBaudRate.rawValue, value: 1)
        #expect(state.baudRate == (24_000_000 / ((13 << 6) + 1)) << 2)
        _ = state.receive([7, 8])
        let uart = PL011(interrupt: RecordingInterruptLine(), state: state)
        #expect(uart.currentState == state)
        #expect(uart.read32(R.data.rawValue) == 7)
    }
}

@Suite("PL031 RTC")
struct PL031Tests {
    typealias R = PL031State.Register

    @Test func counterFollowsTheClockAndTheLoadRegister() {
        let clock = FixedWallClock(seconds: 1_700_000_000, nanoseconds: 500_000_000)
        let rtc = PL031(clock: clock)
        #expect(rtc.read32(R.data.rawValue) == 1_700_000_000)
        #expect(rtc.read32(R.control.rawValue) == 1)
        #expect(rtc.primeCellID() == [0x31, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1])
        clock.set(seconds: 1_700_000_010, nanoseconds: 400_000_000)
        #expect(rtc.read32(R.data.rawValue) == 1_700_000_010)
        rtc.write32(R.load.rawValue, 1000)
        #expect(rtc.read32(R.data.rawValue) == 1000 && rtc.read32(R.load.rawValue) == 1000)
        clock.set(seconds: 1_700_000_012, nanoseconds: 300_000_000)
        #expect(rtc.read32(R.data.rawValue) == 1001)   // 1.9 s later
        rtc.write32(R.match.rawValue, 77)
        rtc.write32(R.interruptMask.rawValue, 3)
        rtc.write32(R.data.rawValue, 5)                // read-only
        #expect(rtc.read32(R.match.rawValue) == 77 && rtc.read32(R.interruptMask.rawValue) == 1)
        #expect(rtc.read32(R.rawInterruptStatus.rawValue) == 0 && rtc.read32(R.data.rawValue) == 1001)
        let restored = PL031(clock: clock, state: rtc.currentState)
        #expect(restored.read32(R.data.rawValue) == 1001)
    }
}

@Suite("PL061 GPIO")
struct PL061Tests {
    typealias R = PL061State.Register

    @Test func dataWindowMasksByAddress() {
        let gpio = PL061(interrupt: RecordingInterruptLine())
        #expect(gpio.primeCellID() == [0x61, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1])
        gpio.write32(R.direction.rawValue, 0x0F)        // lines 0-3 outputs
        gpio.write32(0x3FC, 0xFF)                        // all-lines window: only outputs change
        #expect(gpio.read32(0x3FC) == 0x0F)
        gpio.write32(0x3FC, 0x00)
        gpio.write32(0x1 << 2, 0xFF)                     // window for line 0 only
        #expect(gpio.read32(0x3FC) == 0x01 && gpio.read32(0x2 << 2) == 0)
        #expect(gpio.setInput(line: 0, high: true) == false)   // an output
        #expect(gpio.setInput(line: 8, high: true) == false)
        #expect(gpio.setInput(line: 5, high: true))
        #expect(gpio.read32(0x20 << 2) == 0x20)
    }

    @Test func powerButtonRaisesAnEdgeInterrupt() {
        let line = RecordingInterruptLine()
        let gpio = PL061(interrupt: line)
        // What Linux's gpio-keys does: both edges on line 3, unmasked.
        gpio.write32(R.interruptBothEdges.rawValue, 1 << 3)
        gpio.write32(R.interruptMask.rawValue, 1 << 3)
        #expect(line.take() == 0)
        #expect(gpio.pressPowerButton())
        #expect(line.take() == 1)
        #expect(gpio.read32(R.maskedInterruptStatus.rawValue) == 1 << 3)
        #expect(gpio.read32(0x3FC) == 1 << 3)
        gpio.write32(R.interruptClear.rawValue, 1 << 3)
        #expect(gpio.read32(R.rawInterruptStatus.rawValue) == 0)
        gpio.releasePowerButton()
        #expect(line.take() == 1 && gpio.read32(0x3FC) == 0)
        gpio.write32(R.interruptClear.rawValue, 0xFF)
        // Rising edge only: a release raises nothing.
        gpio.write32(R.interruptBothEdges.rawValue, 0)
        gpio.write32(R.interruptEvent.rawValue, 1 << 3)
        gpio.pressPowerButton()
        #expect(line.take() == 1)
        gpio.write32(R.interruptClear.rawValue, 0xFF)
        gpio.releasePowerButton()
        #expect(line.take() == 0 && gpio.read32(R.rawInterruptStatus.rawValue) == 0)
    }

    @Test func levelSenseStaysRaisedWhileTheLevelMatches() {
        let line = RecordingInterruptLine()
        var state = PL061State()
        // High level on line 2 (IEV before IS: a level-sensitive line with IEV 0 matches a low input at once).
        _ = state.write(offset: R.interruptEvent.rawValue, value: 1 << 2)
        _ = state.write(offset: R.interruptSense.rawValue, value: 1 << 2)
        #expect(state.write(offset: R.interruptMask.rawValue, value: 1 << 2) == false)
        #expect(state.setInput(line: 2, high: true) == true)
        #expect(state.write(offset: R.interruptClear.rawValue, value: 1 << 2) == false)
        #expect(state.rawInterrupts == 1 << 2)             // still high: raised again
        _ = state.setInput(line: 2, high: false)
        _ = state.write(offset: R.interruptClear.rawValue, value: 1 << 2)
        #expect(state.rawInterrupts == 0)
        let gpio = PL061(interrupt: line, state: state)
        #expect(gpio.currentState == state)
    }
}
