import DeviceModel
import Devices
import Testing

extension Serial16550 {
    func read(_ register: Register) -> UInt8 { readByte(register.rawValue) }
    func write(_ register: Register, _ value: UInt8) { writeByte(register.rawValue, value) }
}

/// A UART wired to a recording interrupt line and an in-memory output.
struct UARTFixture {
    let line = RecordingInterruptLine()
    let output = BufferSerialOutput()
    let uart: Serial16550

    init() {
        uart = Serial16550(interrupt: line, output: output)
    }
}

@Suite("16550A UART")
struct Serial16550Tests {
    @Test func resetStateMatchesCloudHypervisor() {
        let uart = UARTFixture().uart
        #expect(uart.read(.interruptEnable) == 0x00)
        #expect(uart.read(.interruptIdentification) == 0x01)
        #expect(uart.read(.lineControl) == 0x03)
        #expect(uart.read(.modemControl) == 0x08)
        #expect(uart.read(.lineStatus) == 0x60)
        #expect(uart.read(.modemStatus) == 0xb0)
        #expect(uart.read(.scratch) == 0x00)
        #expect(uart.read(.data) == 0x00)
        #expect(uart.name == "serial")
    }

    @Test func divisorLatchShadowsDataAndInterruptEnable() {
        let uart = UARTFixture().uart
        uart.write(.lineControl, 0x83)
        #expect(uart.read(.data) == 12)  // 9600 baud after reset
        #expect(uart.read(.interruptEnable) == 0)
        uart.write(.data, 0x01)          // 115200 baud
        uart.write(.interruptEnable, 0x02)
        #expect(uart.read(.data) == 0x01)
        #expect(uart.read(.interruptEnable) == 0x02)
        #expect(uart.read(.lineControl) == 0x83)

        uart.write(.lineControl, 0x03)
        #expect(uart.read(.interruptEnable) == 0x00)  // IER was untouched by DLM writes
        uart.write(.lineControl, 0x80)
        #expect(uart.read(.data) == 0x01)
        #expect(uart.read(.interruptEnable) == 0x02)
    }

    @Test func transmittedBytesReachTheOutputInOrder() {
        let fixture = UARTFixture()
        for byte in "Linux version 6.x\r\n".utf8 { fixture.uart.write(.data, byte) }
        #expect(fixture.output.text == "Linux version 6.x\r\n")
        #expect(fixture.line.count == 0)  // THR-empty interrupts were not enabled
        #expect(fixture.uart.read(.lineStatus) & 0x60 == 0x60)
    }

    @Test func divisorWritesAreNotTransmitted() {
        let fixture = UARTFixture()
        fixture.uart.write(.lineControl, 0x80)
        fixture.uart.write(.data, 0x41)
        fixture.uart.write(.lineControl, 0x03)
        #expect(fixture.output.bytes.isEmpty)
    }

    @Test func thrEmptyInterruptFollowsLinuxProbeSequence() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        // serial8250_do_startup: enable THRI, read IIR, disable, enable again, read IIR.
        uart.write(.interruptEnable, 0x02)
        #expect(fixture.line.take() == 1)
        #expect(uart.read(.interruptIdentification) == 0x02)
        #expect(uart.read(.interruptIdentification) == 0x01)  // reading IIR acknowledged it
        uart.write(.interruptEnable, 0x00)
        uart.write(.interruptEnable, 0x02)
        #expect(fixture.line.take() == 1)
        #expect(uart.read(.interruptIdentification) == 0x02)
        #expect(uart.read(.interruptIdentification) == 0x01)
        // Rewriting the same enable bits is not a rising edge.
        uart.write(.interruptEnable, 0x02)
        #expect(fixture.line.take() == 0)
        #expect(uart.read(.interruptIdentification) == 0x01)
    }

    @Test func everyTransmittedByteRaisesThrEmpty() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        uart.write(.interruptEnable, 0x02)
        _ = uart.read(.interruptIdentification)
        _ = fixture.line.take()
        for byte in "ok".utf8 {
            uart.write(.data, byte)
            #expect(fixture.line.take() == 1)
            #expect(uart.read(.interruptIdentification) == 0x02)
        }
        #expect(fixture.output.text == "ok")
    }

    @Test func disablingThrEmptyMasksThePendingEvent() {
        let fixture = UARTFixture()
        fixture.uart.write(.interruptEnable, 0x02)
        #expect(fixture.uart.interruptPending)
        fixture.uart.write(.interruptEnable, 0x00)
        #expect(!fixture.uart.interruptPending)
        #expect(fixture.uart.read(.interruptIdentification) == 0x01)
    }

    @Test func receivedDataRaisesInterruptAndDataReady() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        uart.write(.interruptEnable, 0x01)
        #expect(fixture.line.take() == 0)  // nothing to receive yet
        #expect(uart.enqueueInput(Array("abc".utf8)) == 3)
        #expect(fixture.line.take() == 1)
        #expect(uart.read(.lineStatus) == 0x61)
        #expect(uart.read(.interruptIdentification) == 0x04)
        #expect(uart.read(.data) == UInt8(ascii: "a"))
        #expect(uart.read(.interruptIdentification) == 0x04)  // still data waiting
        #expect(uart.read(.data) == UInt8(ascii: "b"))
        #expect(uart.read(.data) == UInt8(ascii: "c"))
        #expect(uart.read(.lineStatus) == 0x60)
        #expect(uart.read(.interruptIdentification) == 0x01)
        #expect(uart.read(.data) == 0)  // empty FIFO
    }

    @Test func inputWithoutReceiveInterruptOnlySetsDataReady() {
        let fixture = UARTFixture()
        #expect(fixture.uart.enqueueInput([0x0d]) == 1)
        #expect(fixture.line.count == 0)
        #expect(fixture.uart.read(.lineStatus) & 0x01 == 0x01)
        #expect(fixture.uart.read(.interruptIdentification) == 0x01)
        // Enabling the interrupt with data already waiting raises it at once.
        fixture.uart.write(.interruptEnable, 0x01)
        #expect(fixture.line.take() == 1)
        #expect(fixture.uart.read(.interruptIdentification) == 0x04)
    }

    @Test func characterTimeoutRaisesTheInterruptAgainForUntouchedBytes() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        #expect(uart.checkReceiveTimeout() == .empty)
        uart.write(.interruptEnable, 0x01)
        #expect(uart.enqueueInput(Array("ls\n".utf8)) == 3)
        #expect(fixture.line.take() == 1)
        // The guest missed that edge: the next check finds the bytes untouched and raises
        // the interrupt again, and again at every later check until the guest reads.
        #expect(uart.checkReceiveTimeout() == .stale)
        #expect(fixture.line.take() == 1)
        #expect(uart.checkReceiveTimeout() == .stale)
        #expect(fixture.line.take() == 1)
        // A guest that reads is left alone while bytes remain.
        #expect(uart.read(.data) == UInt8(ascii: "l"))
        #expect(uart.checkReceiveTimeout() == .draining)
        #expect(fixture.line.take() == 0)
        #expect(uart.read(.data) == UInt8(ascii: "s"))
        #expect(uart.read(.data) == UInt8(ascii: "\n"))
        #expect(uart.checkReceiveTimeout() == .empty)
        #expect(fixture.line.take() == 0)
    }

    @Test func characterTimeoutStaysQuietWhileTheReceiveInterruptIsOff() {
        let fixture = UARTFixture()
        #expect(fixture.uart.enqueueInput([0x0d]) == 1)
        #expect(fixture.uart.checkReceiveTimeout() == .stale)
        #expect(fixture.line.count == 0)
    }

    @Test func receiveFIFOIsBoundedAt64Bytes() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        #expect(Serial16550.receiveFIFOCapacity == 64)
        #expect(uart.receiveSpace == 64)
        let input = (0..<100).map { UInt8($0) }
        #expect(uart.enqueueInput(input) == 64)
        #expect(uart.receiveSpace == 0)
        #expect(uart.enqueueInput(input[64...]) == 0)
        #expect(uart.read(.data) == 0)
        #expect(uart.receiveSpace == 1)
        #expect(uart.enqueueInput(input[64...]) == 1)
        // The bytes come out in order: 1...63 then 64.
        var received: [UInt8] = []
        while uart.read(.lineStatus) & 0x01 != 0 { received.append(uart.read(.data)) }
        #expect(received == Array(1...64))
        #expect(uart.read(.lineStatus) & 0x02 == 0)  // refusing input is not an overrun
    }

    @Test func receivedDataOutranksThrEmpty() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        uart.write(.interruptEnable, 0x03)
        uart.enqueueInput([0x55])
        #expect(uart.read(.interruptIdentification) == 0x04)
        #expect(uart.read(.interruptIdentification) == 0x04)  // IIR read does not drop RDA
        #expect(uart.read(.data) == 0x55)
        #expect(uart.read(.interruptIdentification) == 0x02)
        #expect(uart.read(.interruptIdentification) == 0x01)
    }

    @Test func loopbackEchoesTransmittedBytes() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        uart.write(.modemControl, 0x10)
        for byte in "xyz".utf8 { uart.write(.data, byte) }
        #expect(fixture.output.bytes.isEmpty)
        #expect(uart.enqueueInput([0x41]) == 0)  // the external line is disconnected
        #expect(uart.receiveSpace == 0)
        #expect(uart.read(.data) == UInt8(ascii: "x"))
        #expect(uart.read(.data) == UInt8(ascii: "y"))
        #expect(uart.read(.data) == UInt8(ascii: "z"))
        #expect(uart.read(.lineStatus) & 0x01 == 0)
        uart.write(.modemControl, 0x08)
        uart.write(.data, 0x21)
        #expect(fixture.output.bytes == [0x21])
    }

    @Test func loopbackMapsModemOutputsToInputs() {
        let uart = UARTFixture().uart
        // Linux's 8250 autoconfig: MCR = LOOP | OUT2 | RTS must read back CTS | DCD.
        uart.write(.modemControl, 0x1a)
        #expect(uart.read(.modemStatus) & 0xf0 == 0x90)
        uart.write(.modemControl, 0x1f)
        #expect(uart.read(.modemStatus) == 0xf0 | 0x02)  // DSR changed since the last read (RI rose: no bit)
        #expect(uart.read(.modemStatus) == 0xf0)         // reading MSR cleared the change bits
        uart.write(.modemControl, 0x1b)                  // OUT1 off: RI trailing edge
        #expect(uart.read(.modemStatus) == 0xb4)
        uart.write(.modemControl, 0x10)
        #expect(uart.read(.modemStatus) & 0xf0 == 0x00)
        uart.write(.modemControl, 0xff)
        #expect(uart.read(.modemControl) == 0x1f)        // bits 5-7 do not exist
    }

    @Test func modemStatusChangeInterruptsWhenEnabled() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        uart.write(.modemControl, 0x10)
        _ = uart.read(.modemStatus)
        uart.write(.interruptEnable, 0x08)
        #expect(fixture.line.take() == 0)
        uart.write(.modemControl, 0x12)  // RTS → CTS
        #expect(fixture.line.take() == 1)
        #expect(uart.read(.interruptIdentification) == 0x00)
        #expect(uart.read(.modemStatus) == 0x11)
        #expect(uart.read(.interruptIdentification) == 0x01)
    }

    @Test func loopbackOverrunRaisesLineStatusFirst() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        uart.write(.modemControl, 0x10)
        uart.write(.interruptEnable, 0x05)
        for byte in 0..<65 { uart.write(.data, UInt8(byte)) }
        #expect(fixture.line.count == 65)
        #expect(uart.read(.interruptIdentification) == 0x06)
        #expect(uart.read(.lineStatus) == 0x63)
        #expect(uart.read(.lineStatus) == 0x61)  // OE clears when LSR is read
        #expect(uart.read(.interruptIdentification) == 0x04)
        var received: [UInt8] = []
        while uart.read(.lineStatus) & 0x01 != 0 { received.append(uart.read(.data)) }
        #expect(received == Array(0..<64))       // the 65th byte was the one lost
    }

    @Test func scratchRegisterHoldsAnyByte() {
        let uart = UARTFixture().uart
        for value: UInt8 in [0x00, 0x55, 0xaa, 0xff] {
            uart.write(.scratch, value)
            #expect(uart.read(.scratch) == value)
        }
    }

    @Test func iirReportsFIFOsOnlyWhenEnabled() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        uart.write(.interruptIdentification, 0x01)  // FCR: enable FIFOs
        #expect(uart.read(.interruptIdentification) == 0xc1)
        #expect(uart.read(.interruptIdentification) >> 6 == 3)  // how Linux detects a 16550A
        uart.write(.interruptEnable, 0x02)
        #expect(uart.read(.interruptIdentification) == 0xc2)
        uart.write(.interruptIdentification, 0x00)  // FCR: disable FIFOs
        #expect(uart.read(.interruptIdentification) == 0x01)
        uart.write(.interruptIdentification, 0xc7)
        #expect(uart.read(.interruptIdentification) == 0xc1)
    }

    @Test func fifoControlClearsTheReceiveFIFO() {
        let uart = UARTFixture().uart
        uart.write(.interruptIdentification, 0x01)
        uart.enqueueInput([1, 2, 3])
        uart.write(.interruptIdentification, 0x01)  // no clear bit: data stays
        #expect(uart.read(.lineStatus) & 0x01 == 0x01)
        uart.write(.interruptIdentification, 0x03)  // clear receive FIFO
        #expect(uart.read(.lineStatus) & 0x01 == 0x00)
        uart.enqueueInput([4])
        uart.write(.interruptIdentification, 0x00)  // turning FIFOs off empties them
        #expect(uart.read(.lineStatus) & 0x01 == 0x00)
        uart.enqueueInput([5])
        uart.write(.interruptIdentification, 0x02)  // clear without enable: not programmed
        #expect(uart.read(.data) == 5)
    }

    @Test func interruptEnableKeepsOnlyFourBits() {
        let uart = UARTFixture().uart
        uart.write(.interruptEnable, 0xff)
        #expect(uart.read(.interruptEnable) == 0x0f)
        // Linux's XScale probe toggles bit 6 and must see it stay clear.
        uart.write(.interruptEnable, 0x40)
        #expect(uart.read(.interruptEnable) & 0x40 == 0)
    }

    @Test func widerAccessesAndUnknownOffsetsDoNothing() {
        let fixture = UARTFixture()
        let uart = fixture.uart
        uart.enqueueInput([0x7f])
        #expect(uart.read(offset: 0, size: 2) == 0)
        #expect(uart.read(.lineStatus) & 0x01 == 0x01)  // the wide read did not consume data
        uart.write(offset: 0, size: 4, value: 0x41)
        #expect(fixture.output.bytes.isEmpty)
        uart.writeByte(8, 0x41)
        uart.writeByte(0xff, 0x41)
        #expect(uart.readByte(8) == 0)
        #expect(uart.readByte(.max) == 0)
        #expect(uart.read(.lineStatus) == 0x61)
        uart.writeByte(5, 0x00)  // LSR is read-only
        uart.writeByte(6, 0x00)  // MSR is read-only
        #expect(uart.read(.lineStatus) == 0x61)
        #expect(uart.read(.modemStatus) == 0xb0)
    }

    @Test func failedInterruptDeliveryIsCountedNotThrown() {
        let uart = Serial16550(interrupt: FailingInterruptLine())
        uart.write(.interruptEnable, 0x02)
        uart.write(.data, 0x41)
        #expect(uart.interruptFailures == 2)
        #expect(uart.lastInterruptError as? FailingInterruptLine.DeliveryFailed == .init())
    }

    @Test func worksThroughTheBusAtCOM1() throws {
        let fixture = UARTFixture()
        let pio = Bus(name: "I/O port bus")
        try pio.insert(fixture.uart, base: Serial16550.com1Base, length: Serial16550.registerCount)
        #expect(Serial16550.com1IRQ == 4)
        pio.write(address: 0x3f8, size: 1, value: 0x4f)
        pio.write(address: 0x3f8, size: 1, value: 0x4b)
        #expect(fixture.output.text == "OK")
        #expect(pio.read(address: 0x3fd, size: 1) == 0x60)
        #expect(pio.read(address: 0x400, size: 1) == nil)
    }
}
