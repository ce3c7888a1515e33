// fuzz-virtio-console: VirtioConsole driven by DeviceHarness: fuzzed queues and chains on
// its receive and transmit queues, host input and resizes interleaved with notifications,
// configuration accesses (emergency write included) and resets.
import FuzzSupport
import Synchronization
import VirtioDevices

/// Counts what the guest printed, without keeping it.
final class CountingOutput: ConsoleOutput {
    private let count = Mutex(0)
    func write(_ bytes: [UInt8]) { count.withLock { $0 += bytes.count } }
}

@main
enum VirtioConsoleFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let choice = input.byte()
        let capacity = [4096, 16, 1, 0x1_0000][Int(choice & 3)]
        let device = VirtioConsole(output: CountingOutput(), cols: 80, rows: 25,
                                   queueSize: [256, 16, 1, 128][Int(choice >> 2) & 3], inputCapacity: capacity)
        var harness = DeviceHarness(device: device, &input)
        harness.run(&input) { action, input in
            if action & 1 == 0 {
                let bytes = input.run(maxCount: 300)
                let taken = device.enqueueInput(bytes)
                fuzzCheck((0...bytes.count).contains(taken), "took \(taken) of \(bytes.count) input bytes")
            } else {
                device.resize(cols: input.integer(UInt16.self), rows: input.integer(UInt16.self))
            }
            fuzzCheck(device.pendingInputCount <= device.inputCapacity, "more input pending than the buffer holds")
        }
    }
}

/// Output on the transmit queue, input delivered to a posted receive buffer, an emergency write.
private func seeds() -> [[UInt8]] {
    typealias Buffer = FuzzInputBuilder.SeedBuffer
    var transmit = FuzzInputBuilder()
    transmit.byte(0)
    transmit.deviceStart(queues: 2)
    transmit.deviceChain(queue: 1, head: 0, [Buffer(offset: 0, length: 6, writable: false, payload: Array("hello\n".utf8))])
    transmit.deviceNotify(queue: 1)
    var receive = FuzzInputBuilder()
    receive.byte(0)
    receive.deviceStart(queues: 2)
    receive.deviceChain(queue: 0, head: 0, [Buffer(offset: 0x100, length: 64, writable: true)])
    receive.deviceNotify(queue: 0)
    receive.byte(0xe0)
    receive.run(Array("ls -l\r".utf8), maxCount: 300)
    receive.append([0xe1, 132, 0, 43, 0])
    var emergency = FuzzInputBuilder()
    emergency.byte(0)
    emergency.deviceStart(queues: 2)
    emergency.append([6, 8, 2])  // writeConfig at offset 8 (emergency_write), size 4
    emergency.integer(UInt64(0x21))
    return [transmit.bytes, receive.bytes, emergency.bytes]
}
