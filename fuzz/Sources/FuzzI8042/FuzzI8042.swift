// fuzz-i8042: the i8042 reset port. Random reads and writes of any size and offset; the
// device must ask for exactly one reset per byte write of 0xFE to the command port.
import DeviceModel
import Devices
import FuzzSupport
import Synchronization

/// Counts reset requests from the device's handler.
final class ResetCounter: Sendable {
    let count = Mutex(0)
}

@main
enum I8042Fuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let counter = ResetCounter()
        let device = I8042 { counter.count.withLock { $0 += 1 } }
        var expected = 0
        while !input.isExhausted {
            let offset = input.bool() ? UInt64(input.byte() % 5) : input.integer(UInt64.self)
            let size = input.pick([1, 1, 2, 4, 8, 0])
            if input.bool() {
                let value = input.bool() ? 0xfe : input.integer(UInt64.self)
                device.write(offset: offset, size: size, value: value)
                if offset == 3, size == 1, value & 0xff == 0xfe { expected += 1 }
            } else {
                _ = device.read(offset: offset, size: size)
            }
        }
        fuzzCheck(device.resetRequests == expected && counter.count.withLock { $0 } == expected,
                  "\(device.resetRequests) resets for \(expected) reset commands")
    }
}

/// A port B read, then the reset command.
private func seeds() -> [[UInt8]] {
    [[1, 0, 0, 0, 1, 3, 0, 1, 1]]
}
