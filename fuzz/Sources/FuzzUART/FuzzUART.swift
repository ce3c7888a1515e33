// fuzz-uart: the 16550 UART as the guest and the host see it: register reads and writes
// of random sizes and offsets (divisor latch, loopback, FIFO control, scratch...), host
// input of random lengths, and an interrupt line that sometimes fails.
import DeviceModel
import Devices
import FuzzSupport
import Synchronization

/// An interrupt line that counts triggers and fails every `failEvery`-th one (never when 0).
final class FlakyLine: InterruptLine {
    private let count = Mutex(0)
    private let failEvery: Int
    init(failEvery: Int) { self.failEvery = failEvery }

    struct Failure: Error {}

    func trigger() throws {
        let call = count.withLock { count in
            count += 1
            return count
        }
        if failEvery > 0, call % failEvery == 0 { throw Failure() }
    }
}

/// Counts transmitted bytes.
final class CountingSerialOutput: SerialOutput {
    private let count = Mutex(0)
    func write(_ byte: UInt8) { count.withLock { $0 += 1 } }
}

@main
enum UARTFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let uart = Serial16550(interrupt: FlakyLine(failEvery: Int(input.byte() % 4)), output: CountingSerialOutput())
        while !input.isExhausted {
            switch input.byte() % 4 {
            case 0, 1:
                uart.write(offset: UInt64(input.byte() % 9), size: input.pick([1, 1, 1, 2, 4]), value: UInt64(input.byte()))
            case 2:
                _ = uart.read(offset: UInt64(input.byte() % 9), size: input.pick([1, 1, 1, 2, 4]))
            default:
                let bytes = input.run(maxCount: 100)
                let space = uart.receiveSpace
                let accepted = uart.enqueueInput(bytes)
                fuzzCheck((0...bytes.count).contains(accepted), "accepted \(accepted) of \(bytes.count) bytes")
                fuzzCheck(accepted <= max(space, 0) || space == 0, "accepted \(accepted) bytes with room for \(space)")
            }
            let space = uart.receiveSpace
            fuzzCheck((0...Serial16550.receiveFIFOCapacity).contains(space), "receive space \(space) outside the FIFO")
        }
    }
}

/// Linux's probe (scratch, loopback), a 115200 8N1 set-up, a transmitted line, and input.
private func seeds() -> [[UInt8]] {
    [
        [0, 0, 7, 0, 0x55, 2, 7, 0, 0, 4, 0, 0x10, 2, 6, 0, 0, 4, 0, 0],
        [1, 0, 3, 0, 0x80, 0, 0, 0, 1, 0, 1, 0, 0, 0, 3, 0, 0x03, 0, 2, 0, 0xc7, 0, 1, 0, 0x0f]
            + Array("hi\n".utf8).flatMap { [0, 0, 0, $0] },
        [2, 0, 1, 0, 0x01, 3, 5] + Array("hello".utf8) + [2, 0, 0, 2, 0, 0, 2, 5, 0],
    ]
}
