// fuzz-cmos: the CMOS RTC over a fuzzed wall clock (any 64-bit time, any nanoseconds):
// index and data port accesses of random sizes, NMI bit, register A/B modes, NVRAM, the
// reset index. Every time field read in binary mode must be a valid calendar value.
import DeviceModel
import Devices
import FuzzSupport
import Synchronization

/// A wall clock the input sets.
final class FuzzClock: WallClock {
    let time = Mutex(WallClockTime(seconds: 0))
    func now() -> WallClockTime { time.withLock { $0 } }
}

@main
enum CMOSFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

/// The binary values each time register may hold, by register index.
private let limits: [Int: (ClosedRange<Int>)] = [0x00: 0...59, 0x02: 0...59, 0x04: 0...23, 0x06: 1...7, 0x07: 1...31, 0x08: 1...12, 0x09: 0...99, 0x32: 0...99]

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size, run)
}

/// One input: the RTC's memory sizes and reset handler, then port accesses and clock changes.
private func run(_ input: inout FuzzInput) {
    let clock = FuzzClock()
    let below = input.integer(UInt64.self), above = input.integer(UInt64.self)
    let ignoreReset: ResetHandler = {}
    let onReset = input.bool() ? ignoreReset : nil
    let rtc = CMOSRTC(memoryBelow4G: below, memoryAbove4G: above, clock: clock, onReset: onReset)
    var registerB: UInt8 = 0x02
    while !input.isExhausted {
        switch input.byte() % 5 {
        case 0:
            let seconds = input.bool() ? Int64(input.integer(UInt32.self)) + 946_684_800 : input.integer(Int64.self)
            let time = WallClockTime(seconds: seconds, nanoseconds: input.integer(UInt32.self) % 1_000_000_000)
            clock.time.withLock { $0 = time }
        case 1:
            rtc.write(offset: 0, size: input.pick([1, 1, 2]), value: UInt64(input.byte()))
        case 2:
            let size = input.pick([1, 1, 2])
            let value = input.byte()
            if size == 1, rtc.read(offset: 0, size: 1) & 0x7f == 0x0b { registerB = value }
            rtc.write(offset: 1, size: size, value: UInt64(value))
        case 3:
            _ = rtc.read(offset: UInt64(input.byte() % 3), size: input.pick([1, 1, 4]))
        default:  // Read a time field in binary mode and check it.
            let index = input.pick(Array(limits.keys).sorted())
            rtc.write(offset: 0, size: 1, value: 0x0b)
            rtc.write(offset: 1, size: 1, value: UInt64(registerB | 0x06))
            rtc.write(offset: 0, size: 1, value: UInt64(index))
            let value = Int(rtc.read(offset: 1, size: 1))
            fuzzCheck(limits[index]!.contains(value), "time register \(index) reads \(value) at \(clock.now())")
        }
    }
}

/// Linux reading the time in BCD, setting binary mode, and writing NVRAM.
private func seeds() -> [[UInt8]] {
    var builder = FuzzInputBuilder()
    builder.integer(UInt64(1) << 31)
    builder.integer(UInt64(4) << 30)
    builder.byte(1)
    builder.append([0, 1, 0x10, 0, 0, 0, 0, 0, 0])
    for index: UInt8 in [0x0a, 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32] { builder.append([1, 0, index, 3, 1, 0]) }
    builder.append([1, 0, 0x0b, 2, 0, 0x06, 1, 0, 0x40, 2, 0, 0x5a, 4, 3, 4, 7])
    return [builder.bytes]
}
