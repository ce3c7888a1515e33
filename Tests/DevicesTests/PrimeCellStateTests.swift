import DeviceModel
import Devices
import Foundation
import Testing
import TestSupport

@Suite("PrimeCell device state")
struct PrimeCellStateTests {
    typealias UART = PL011State.Register
    typealias GPIO = PL061State.Register

    // MARK: PL011

    static func busyPL011(_ line: RecordingInterruptLine, _ output: BufferSerialOutput) -> PL011 {
        let uart = PL011(interrupt: line, output: output)
        uart.write32(UART.integerBaudRate.rawValue, 13)
        uart.write32(UART.fractionalBaudRate.rawValue, 1)
        uart.write32(UART.lineControl.rawValue, 0x70)       // 8 bits, FIFOs on
        uart.write32(UART.fifoLevelSelect.rawValue, 0x09)
        uart.write32(UART.debug.rawValue, 0x41)
        uart.write32(UART.interruptMask.rawValue, PL011State.Interrupt.receive | PL011State.Interrupt.transmit)
        #expect(uart.enqueueInput(Array("abcdef".utf8)) == 6)
        #expect(uart.read32(UART.data.rawValue) == 0x61)
        uart.write32(UART.data.rawValue, 0x5a)
        return uart
    }

    /// Reads every register, drains the receive FIFO, clears TX, and transmits one byte.
    static func probe(_ uart: PL011) -> [UInt32] {
        let offsets: [UART] = [.flags, .integerBaudRate, .fractionalBaudRate, .lineControl, .control,
                               .fifoLevelSelect, .interruptMask, .rawInterruptStatus, .maskedInterruptStatus,
                               .dmaControl, .debug, .receiveStatus]
        var reads = offsets.map { uart.read32($0.rawValue) }
        while uart.read32(UART.flags.rawValue) & PL011State.Flag.receiveEmpty == 0 {
            reads.append(uart.read32(UART.data.rawValue))
        }
        uart.write32(UART.interruptClear.rawValue, PL011State.Interrupt.transmit)
        reads += [uart.read32(UART.rawInterruptStatus.rawValue), uart.read32(UART.flags.rawValue)]
        uart.write32(UART.data.rawValue, 0x21)
        reads.append(uart.read32(UART.maskedInterruptStatus.rawValue))
        return reads
    }

    @Test func restoredPL011BehavesAsTheSavedOne() throws {
        let line = RecordingInterruptLine(), output = BufferSerialOutput()
        let uart = Self.busyPL011(line, output)
        let saved = try savedThroughJSON(uart)
        #expect(saved.receiveFIFO == Array("bcdef".utf8) && saved.maskedInterrupts == 0x30)
        #expect(try stateJSON(uart).contains("\"receive_fifo\":[98,99,100,101,102]"))

        let freshLine = RecordingInterruptLine(), freshOutput = BufferSerialOutput()
        let fresh = PL011(interrupt: freshLine, output: freshOutput)
        try fresh.restoreState(saved)
        #expect(freshLine.take() == 1)          // RX and TX are raised and enabled
        #expect(fresh.receiveSpace == uart.receiveSpace)
        _ = line.take()
        let expected = Self.probe(uart)
        #expect(Self.probe(fresh) == expected)
        #expect(expected.count == 12 + 5 + 3)
        #expect(freshOutput.bytes == [0x21] && output.bytes == [0x5a, 0x21])
        #expect(freshLine.take() == line.take())
    }

    @Test func pl011RefusesImpossibleStates() throws {
        let line = RecordingInterruptLine()
        let uart = Self.busyPL011(line, BufferSerialOutput())
        _ = line.take()
        let good = uart.saveState()
        var state = good
        state.receiveFIFO = Array(repeating: 0x41, count: 17)
        expectRefusal(uart, state, naming: "receive_fifo holds 17 bytes")
        state = good
        state.lineControl = 0x60                // FIFOs off: one byte at most
        expectRefusal(uart, state, naming: "receive_fifo holds 5 bytes")
        state = good
        state.flags |= PL011State.Flag.receiveEmpty
        expectRefusal(uart, state, naming: "flags")
        state = good
        state.receiveFIFO = []
        state.flags = PL011State.Flag.transmitEmpty | PL011State.Flag.receiveEmpty
        expectRefusal(uart, state, naming: "empty receive_fifo")
        state = good
        state.interruptMask = 0x800
        expectRefusal(uart, state, naming: "interrupt_mask")
        #expect(line.take() == 0)
    }

    @Test func pl011ReachableStatesAreAccepted() throws {
        let uart = PL011(interrupt: RecordingInterruptLine())
        var random = SplitMix64(seed: 0x011)
        let offsets: [UInt64] = UART.allCases.map(\.rawValue)
        for step in 1...20_000 {
            let offset = offsets[Int(random.next() % UInt64(offsets.count))]
            switch random.next() % 4 {
            case 0: _ = uart.enqueueInput((0..<Int(random.next() % 20)).map { UInt8(truncatingIfNeeded: $0) })
            case 1: _ = uart.read32(offset)
            default:
                let value = random.next() % 2 == 0 ? UInt32(truncatingIfNeeded: random.next()) : UInt32(random.next() % 0x80)
                uart.write32(offset, value)
            }
            guard step % 100 == 0 else { continue }
            let saved = try savedThroughJSON(uart)
            let fresh = PL011(interrupt: RecordingInterruptLine())
            try fresh.restoreState(saved)
            #expect(fresh.saveState() == saved)
        }
    }

    // MARK: PL031

    @Test func pl031CountsOnFromTheLoadedTime() throws {
        let rtc = PL031(clock: FixedWallClock(seconds: leapDayEvening, nanoseconds: 250_000_000))
        rtc.write32(PL031State.Register.load.rawValue, 1000)
        rtc.write32(PL031State.Register.match.rawValue, 2000)
        rtc.write32(PL031State.Register.interruptMask.rawValue, 1)
        let saved = try savedThroughJSON(rtc)
        #expect(try stateJSON(rtc).contains("\"offset_nanoseconds\":"))

        // A new process 50 s later: the counter went on, it did not reset to the host's time.
        let fresh = PL031(clock: FixedWallClock(seconds: leapDayEvening + 50, nanoseconds: 250_000_000))
        try fresh.restoreState(saved)
        #expect(fresh.read32(PL031State.Register.data.rawValue) == 1050)
        #expect(fresh.read32(PL031State.Register.match.rawValue) == 2000)
        #expect(fresh.read32(PL031State.Register.load.rawValue) == 1000)
        #expect(fresh.read32(PL031State.Register.interruptMask.rawValue) == 1)

        var state = saved
        state.interruptMask = 2
        expectRefusal(fresh, state, naming: "interrupt_mask 0x2")
    }

    // MARK: PL061

    static func busyPL061(_ line: RecordingInterruptLine) -> PL061 {
        let gpio = PL061(interrupt: line)
        gpio.write32(GPIO.direction.rawValue, 0xF0)             // lines 4-7 outputs
        gpio.write32(0x3FC, 0xA5)                               // outputs: 0xA0
        gpio.write32(GPIO.interruptSense.rawValue, 0x01)        // line 0 level, the rest edges
        gpio.write32(GPIO.interruptEvent.rawValue, 0x09)        // line 0 high, line 3 rising
        gpio.write32(GPIO.interruptMask.rawValue, 0x0B)
        gpio.setInput(line: 0, high: true)
        gpio.pressPowerButton()
        gpio.setInput(line: 1, high: true)                      // rising, but IEV wants falling
        return gpio
    }

    static func probe(_ gpio: PL061) -> [UInt32] {
        var reads = [0x3FC, 0x004, GPIO.rawInterruptStatus.rawValue, GPIO.maskedInterruptStatus.rawValue,
                     GPIO.direction.rawValue, GPIO.interruptSense.rawValue, GPIO.interruptBothEdges.rawValue,
                     GPIO.interruptEvent.rawValue, GPIO.interruptMask.rawValue].map { gpio.read32($0) }
        gpio.releasePowerButton()
        gpio.write32(GPIO.interruptClear.rawValue, 0xFF)        // the level on line 0 raises it again
        gpio.setInput(line: 1, high: false)                     // falling edge on line 1
        reads += [gpio.read32(GPIO.rawInterruptStatus.rawValue), gpio.read32(GPIO.maskedInterruptStatus.rawValue)]
        return reads
    }

    @Test func restoredPL061BehavesAsTheSavedOne() throws {
        let line = RecordingInterruptLine()
        let gpio = Self.busyPL061(line)
        let saved = try savedThroughJSON(gpio)
        #expect(saved.maskedInterrupts == 0x09)
        let freshLine = RecordingInterruptLine()
        let fresh = PL061(interrupt: freshLine)
        try fresh.restoreState(saved)
        #expect(freshLine.take() == 1)
        _ = line.take()
        let expected = Self.probe(gpio)
        #expect(Self.probe(fresh) == expected)
        #expect(expected.first == 0xAB && expected.suffix(2) == [0x03, 0x03])
        #expect(freshLine.take() == line.take())
    }

    @Test func pl061RefusesImpossibleStates() throws {
        let line = RecordingInterruptLine()
        let gpio = Self.busyPL061(line)
        _ = line.take()
        let good = gpio.saveState()
        var state = good
        state.data = 0x1AB
        expectRefusal(gpio, state, naming: "data 0x1ab")
        state = good
        state.previousInputs ^= 0x02
        expectRefusal(gpio, state, naming: "previous_inputs")
        state = good
        state.rawInterrupts = 0
        expectRefusal(gpio, state, naming: "level-sensitive")
        #expect(line.take() == 0)
    }

    @Test func pl061ReachableStatesAreAccepted() throws {
        let gpio = PL061(interrupt: RecordingInterruptLine())
        var random = SplitMix64(seed: 0x061)
        let offsets: [UInt64] = GPIO.allCases.map(\.rawValue) + [0x3FC, 0x004, 0x100]
        for step in 1...20_000 {
            if random.next() % 3 == 0 {
                gpio.setInput(line: Int(random.next() % 8), high: random.next() % 2 == 0)
            } else {
                gpio.write32(offsets[Int(random.next() % UInt64(offsets.count))], UInt32(truncatingIfNeeded: random.next()))
            }
            guard step % 100 == 0 else { continue }
            let saved = try savedThroughJSON(gpio)
            let fresh = PL061(interrupt: RecordingInterruptLine())
            try fresh.restoreState(saved)
            #expect(fresh.saveState() == saved)
        }
    }
}
