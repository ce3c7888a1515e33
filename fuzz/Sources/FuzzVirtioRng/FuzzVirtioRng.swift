// fuzz-virtio-rng: VirtioRng driven by DeviceHarness, with a deterministic entropy source
// (so a crash replays exactly) that sometimes fails, as a broken /dev/urandom read would.
import FuzzSupport
import Synchronization
import VirtioDevices

/// Counting bytes, failing once every `failEvery` calls (never when 0).
final class ScriptedEntropy: EntropySource {
    private let calls = Mutex(0)
    private let failEvery: Int
    init(failEvery: Int) { self.failEvery = failEvery }

    func randomBytes(count: Int) throws(VirtioDeviceError) -> [UInt8] {
        let call = calls.withLock { calls in
            calls += 1
            return calls
        }
        if failEvery > 0, call % failEvery == 0 { throw .backend("scripted entropy failure") }
        fuzzCheck((0...VirtioRng.maxBytesPerChain).contains(count), "asked for \(count) bytes of entropy")
        return (0..<count).map { UInt8(truncatingIfNeeded: $0 &+ call) }
    }
}

@main
enum VirtioRngFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let choice = input.byte()
        let device = VirtioRng(source: ScriptedEntropy(failEvery: Int(choice & 7)),
                               queueSize: [256, 16, 1, 32768][Int(choice >> 3) & 3])
        var harness = DeviceHarness(device: device, &input)
        harness.run(&input)
    }
}

/// One and then two writable buffers, filled after a notification.
private func seeds() -> [[UInt8]] {
    typealias Buffer = FuzzInputBuilder.SeedBuffer
    var one = FuzzInputBuilder()
    one.byte(0)
    one.deviceStart(queues: 1)
    one.deviceChain(queue: 0, head: 0, [Buffer(offset: 0, length: 64, writable: true)])
    one.deviceNotify(queue: 0)
    var two = FuzzInputBuilder()
    two.byte(0)
    two.deviceStart(queues: 1, eventIndex: true)
    two.deviceChain(queue: 0, head: 5, [Buffer(offset: 0x7ff0, length: 32, writable: true),
                                       Buffer(offset: 0x200, length: 4000, writable: true)])
    two.deviceNotify(queue: 0)
    two.deviceNotify(queue: 0)
    return [one.bytes, two.bytes]
}
