import DeviceModel
import Devices
import Foundation
import Testing
import TestSupport

@Suite("16550A UART state")
struct SerialStateTests {
    /// A UART with every kind of state set: divisor, LCR, FCR, scratch, MCR, 62 received
    /// bytes, an overrun, modem status changes, IER with all sources, a THR-empty event.
    static func busyUART(_ line: RecordingInterruptLine, _ output: BufferSerialOutput) -> Serial16550 {
        let uart = Serial16550(interrupt: line, output: output)
        uart.writeByte(3, 0x80)                 // DLAB
        uart.writeByte(0, 0x03)                 // 38400 baud
        uart.writeByte(1, 0x00)
        uart.writeByte(3, 0x1b)                 // 8E1
        uart.writeByte(2, 0xc1)                 // FIFOs on, trigger level 14
        uart.writeByte(7, 0x5a)
        uart.writeByte(4, 0x1f)                 // loopback with every output: modem status changes
        for byte in 0..<66 { uart.writeByte(0, UInt8(byte)) }  // 64 fit, then an overrun
        uart.writeByte(4, 0x0b)                 // loopback off again
        #expect(uart.readByte(0) == 0 && uart.readByte(0) == 1)
        uart.writeByte(1, 0x0f)                 // every source enabled
        return uart
    }

    /// Reads every register with its side effects, in an order that walks the interrupt
    /// priorities down, drains the FIFO and transmits two bytes.
    static func probe(_ uart: Serial16550) -> [UInt8] {
        var reads = [uart.readByte(2), uart.readByte(5), uart.readByte(2), uart.readByte(6), uart.readByte(6)]
        while uart.readByte(5) & 0x01 != 0 { reads.append(uart.readByte(0)) }
        reads += [uart.readByte(2), uart.readByte(2), uart.readByte(1), uart.readByte(3), uart.readByte(4),
                  uart.readByte(7)]
        uart.writeByte(3, 0x9b)
        reads += [uart.readByte(0), uart.readByte(1)]
        uart.writeByte(3, 0x1b)
        uart.writeByte(0, 0x6f)
        uart.writeByte(0, 0x6b)
        reads.append(uart.readByte(2))
        return reads
    }

    @Test func restoredUARTBehavesAsTheSavedOne() throws {
        let line = RecordingInterruptLine(), output = BufferSerialOutput()
        let uart = Self.busyUART(line, output)
        let saved = try savedThroughJSON(uart)
        #expect(saved.receiveFIFO == Array(2..<64))
        #expect(saved.overrun && saved.thrEmptyPending && saved.modemStatusDeltas != 0)

        let freshLine = RecordingInterruptLine(), freshOutput = BufferSerialOutput()
        let fresh = Serial16550(interrupt: freshLine, output: freshOutput)
        try fresh.restoreState(saved)
        #expect(fresh.saveState() == uart.saveState())
        // The overrun (line status) interrupt is pending: the restore delivers it again.
        #expect(freshLine.take() == 1)
        #expect(fresh.interruptPending)
        _ = line.take()

        let expected = Self.probe(uart)
        #expect(Self.probe(fresh) == expected)
        #expect(expected.prefix(3) == [0xc6, 0x63, 0xc4])  // line status, then LSR with overrun, then RX data
        #expect(expected.count == 5 + 62 + 6 + 2 + 1)
        #expect(freshOutput.bytes == Array(output.bytes.suffix(2)) && freshOutput.text == "ok")
        #expect(freshLine.take() == line.take())
    }

    @Test func pendingTHREmptyIsDeliveredOnRestore() throws {
        let uart = Serial16550(interrupt: RecordingInterruptLine())
        uart.writeByte(1, 0x02)                 // enabling THRE raises the event
        let saved = try savedThroughJSON(uart)
        let line = RecordingInterruptLine()
        let fresh = Serial16550(interrupt: line)
        try fresh.restoreState(saved)
        #expect(line.take() == 1)
        #expect(fresh.readByte(2) == 0x02)
        #expect(fresh.readByte(2) == 0x01)
        // A state with nothing pending delivers nothing.
        try fresh.restoreState(Serial16550.State())
        #expect(line.take() == 0)
    }

    @Test func jsonUsesSnakeCaseNames() throws {
        let uart = Serial16550(interrupt: RecordingInterruptLine())
        _ = uart.enqueueInput([0x41])
        let json = try stateJSON(uart)
        for key in ["\"receive_fifo\":[65]", "\"interrupt_enable\":0", "\"divisor\":12", "\"thr_empty_pending\":false"] {
            #expect(json.contains(key), "\(json)")
        }
    }

    @Test func impossibleStatesAreRefusedAndChangeNothing() throws {
        let line = RecordingInterruptLine()
        let uart = Self.busyUART(line, BufferSerialOutput())
        _ = line.take()
        let good = uart.saveState()
        var state = good
        state.receiveFIFO = Array(repeating: 0x41, count: 65)
        expectRefusal(uart, state, naming: "receive_fifo")
        state = good
        state.interruptEnable = 0x1f
        expectRefusal(uart, state, naming: "interrupt_enable")
        state = good
        state.modemControl = 0x20
        expectRefusal(uart, state, naming: "modem_control")
        state = good
        state.fifoControl = 0x40
        expectRefusal(uart, state, naming: "fifo_control")
        state = good
        state.modemStatusDeltas = 0x10
        expectRefusal(uart, state, naming: "modem_status_deltas")
        #expect(line.take() == 0)
    }

    @Test func everyReachableStateIsAccepted() throws {
        let uart = Serial16550(interrupt: RecordingInterruptLine(), output: BufferSerialOutput())
        var traffic = RandomAccess(random: SplitMix64(seed: 0x5afe), span: 8)
        var checked = 0
        for step in 1...20_000 {
            if traffic.coin(20) {
                _ = uart.enqueueInput((0..<Int(traffic.random.next() % 80)).map { UInt8(truncatingIfNeeded: $0) })
            } else if traffic.coin(2) {
                uart.write(offset: traffic.offset(), size: 1, value: traffic.value())
            } else {
                _ = uart.read(offset: traffic.offset(), size: 1)
            }
            guard step % 100 == 0 else { continue }
            let saved = try savedThroughJSON(uart)
            let fresh = Serial16550(interrupt: RecordingInterruptLine())
            try fresh.restoreState(saved)
            #expect(fresh.saveState() == saved)
            checked += 1
        }
        #expect(checked == 200)
    }
}
