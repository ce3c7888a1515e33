import DeviceModel
import Devices
import Testing
import TestSupport

/// Random register traffic: offsets mostly inside the device, sometimes far outside;
/// sizes mostly 1, sometimes the wider widths a vCPU can produce.
struct RandomAccess {
    var random: SplitMix64
    let span: UInt64

    mutating func offset() -> UInt64 {
        random.next() % 16 == 0 ? random.next() : random.next() % span
    }

    mutating func size() -> Int {
        switch random.next() % 8 {
        case 0: return 2
        case 1: return 4
        case 2: return 8
        default: return 1
        }
    }

    mutating func value() -> UInt64 {
        random.next() % 4 == 0 ? random.next() : random.next() % 256
    }

    mutating func coin(_ oneIn: UInt64) -> Bool { random.next() % oneIn == 0 }
}

@Suite("Random register traffic")
struct FuzzTests {
    static let operations = 100_000

    @Test func uartSurvivesAndStaysBounded() {
        let line = RecordingInterruptLine()
        let output = BufferSerialOutput()
        let uart = Serial16550(interrupt: line, output: output)
        var traffic = RandomAccess(random: SplitMix64(seed: 0x16550), span: 10)
        let validIIR: Set<UInt8> = [0x00, 0x01, 0x02, 0x04, 0x06]
        for _ in 0..<Self.operations {
            if traffic.coin(20) {
                let count = Int(traffic.random.next() % 80)
                let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: traffic.random.next()) }
                let space = uart.receiveSpace
                let accepted = uart.enqueueInput(bytes)
                #expect(accepted == min(space, count))
            } else if traffic.coin(2) {
                uart.write(offset: traffic.offset(), size: traffic.size(), value: traffic.value())
            } else {
                let value = uart.read(offset: traffic.offset(), size: traffic.size())
                #expect(value <= 0xff)
            }
            #expect((0...Serial16550.receiveFIFOCapacity).contains(uart.receiveSpace))
        }
        // Whatever state the registers ended in, they still obey the datasheet's shape.
        let savedLCR = uart.readByte(3)
        uart.writeByte(3, savedLCR & 0x7f)
        let lsr = uart.readByte(5)
        #expect(lsr & 0x9c == 0)        // no parity/framing/break/FIFO errors are ever reported
        #expect(lsr & 0x60 == 0x60)     // the transmitter is always empty
        #expect(uart.readByte(1) & 0xf0 == 0)
        #expect(uart.readByte(4) & 0xe0 == 0)
        #expect(validIIR.contains(uart.readByte(2) & 0x0f))
        #expect(output.bytes.count <= Self.operations)
        // The traffic reached the interesting paths, not just the decoder's default case.
        #expect(output.bytes.count > 100)  // random LCR.DLAB and MCR.LOOP values often divert THR writes
        #expect(line.count > 1000)
    }

    @Test func i8042ResetsOnlyOnTheResetCommand() {
        let resets = ResetCounter()
        let i8042 = I8042(onReset: resets.handler)
        var traffic = RandomAccess(random: SplitMix64(seed: 0x8042), span: 6)
        var expected = 0
        for _ in 0..<Self.operations {
            let offset = traffic.offset()
            let size = traffic.size()
            if traffic.coin(2) {
                let value = traffic.coin(50) ? 0xfe : traffic.value()
                i8042.write(offset: offset, size: size, value: value)
                if offset == 3, size == 1, value & 0xff == 0xfe { expected += 1 }
            } else {
                let value = i8042.read(offset: offset, size: size)
                #expect(value == (offset == 0 && size == 1 ? 0x20 : 0))
            }
        }
        #expect(resets.count == expected)
        #expect(i8042.resetRequests == expected)
    }

    @Test func cmosRAMMatchesAShadowCopy() {
        let clock = FixedWallClock(seconds: leapDayEvening)
        let resets = ResetCounter()
        let rtc = CMOSRTC(memoryBelow4G: 1 << 30, memoryAbove4G: 0, clock: clock, onReset: resets.handler)
        var traffic = RandomAccess(random: SplitMix64(seed: 0xc305), span: 3)
        let live: Set<Int> = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x32]
        var shadow = [UInt8](repeating: 0, count: 128)
        shadow[0x35] = 0x3f
        var index: UInt8 = 0
        var comparisons = 0
        for step in 0..<Self.operations {
            if step % 1000 == 0 {
                clock.set(seconds: Int64(bitPattern: traffic.random.next() >> 30), nanoseconds: UInt32(step))
            }
            let offset = traffic.coin(3) ? 0 : traffic.offset()
            let size = traffic.size()
            if traffic.coin(2) {
                let value = traffic.value()
                rtc.write(offset: offset, size: size, value: value)
                guard size == 1 else { continue }
                let byte = UInt8(truncatingIfNeeded: value)
                if offset == 0 {
                    index = byte
                } else if offset == 1, !(index == 0x8f && byte == 0), !live.contains(Int(index & 0x7f)) {
                    shadow[Int(index & 0x7f)] = byte
                }
            } else {
                let value = rtc.read(offset: offset, size: size)
                #expect(value <= 0xff)
                if size == 1, offset == 1, !live.contains(Int(index & 0x7f)) {
                    #expect(UInt8(value) == shadow[Int(index & 0x7f)])
                    comparisons += 1
                }
            }
        }
        #expect(comparisons > 5000)
        #expect(resets.count == rtc.resetRequests)
        // The clock registers still decode after arbitrary register B values.
        rtc.store(0x02, at: 0x0b)
        #expect(rtc.value(at: 0x0d) == 0x80)
    }

    @Test func debugPortStaysBounded() {
        let log = LogRecorder()
        let clock = ManualMonotonicClock(start: 42)
        let port = DebugPort(clock: clock, eventCapacity: 64, log: log.sink)
        var traffic = RandomAccess(random: SplitMix64(seed: 0x80), span: 2)
        var writes = 0
        for _ in 0..<Self.operations {
            clock.advance(byNanoseconds: traffic.random.next() % 1_000_000)
            if traffic.coin(2) {
                port.write(offset: traffic.offset(), size: traffic.size(), value: traffic.value())
                writes += 1
            } else {
                #expect(port.read(offset: traffic.offset(), size: traffic.size()) == 0)
            }
        }
        #expect(port.events.count == 64)
        #expect(port.events.count + port.droppedEvents == writes)
        #expect(log.lines.count == writes)
        let times = port.events.map(\.elapsedNanoseconds)
        #expect(times == times.sorted())
    }
}
