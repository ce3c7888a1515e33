// fuzz-virtio-blk: VirtioBlock over a MemoryBlockBackend, driven without a transport by
// DeviceHarness: fuzzed options and features, queues in fuzzed guest memory, request
// chains (read, write, flush, get-id, discard, write-zeroes, and garbage), notifications,
// configuration accesses and resets. The disk must keep its size whatever the guest sends.
import BlockStorage
import FuzzSupport
import VirtioDevices

@main
enum VirtioBlockFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let choice = input.byte()
        let diskSize = [0x1_0000, 0, 4096, 0x10_0000][Int(choice >> 3) & 3]
        let disk = MemoryBlockBackend(size: diskSize, readOnly: choice & 2 != 0)
        let options = VirtioBlock.Options(
            serial: input.run(maxCount: 24), queueCount: 1 + Int(choice & 1),
            queueSize: [128, 16, 256, 1][Int(choice >> 5) & 3], logicalBlockSize: choice & 4 == 0 ? 512 : 4096)
        let device = VirtioBlock(backend: disk, options: options)
        var harness = DeviceHarness(device: device, &input)
        harness.run(&input)
        fuzzCheck(disk.size == UInt64(diskSize) && disk.contents.count == diskSize, "the disk changed size")
    }
}

/// One valid request of each kind on a 64 KiB disk, queue of 16, then a notification.
private func seeds() -> [[UInt8]] {
    typealias Buffer = FuzzInputBuilder.SeedBuffer
    /// A request header: type, reserved, sector.
    func header(_ type: UInt32, sector: UInt64) -> [UInt8] {
        var builder = FuzzInputBuilder()
        builder.integer(type)
        builder.integer(UInt32(0))
        builder.integer(sector)
        return builder.bytes
    }
    func request(_ buffers: [Buffer]) -> [UInt8] {
        var builder = FuzzInputBuilder()
        builder.byte(0)
        builder.run(Array("fuzz-disk".utf8), maxCount: 24)
        builder.deviceStart(queues: 1)
        builder.deviceChain(queue: 0, head: 0, buffers)
        builder.deviceNotify(queue: 0)
        return builder.bytes
    }
    let status = Buffer(offset: 0x3000, length: 1, writable: true)
    let segment: [UInt8] = [4, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]  // sector 4, 8 sectors, no flags
    return [
        request([Buffer(offset: 0, length: 16, writable: false, payload: header(0, sector: 1)),
                 Buffer(offset: 0x1000, length: 1024, writable: true), status]),
        request([Buffer(offset: 0, length: 16, writable: false, payload: header(1, sector: 2)),
                 Buffer(offset: 0x1000, length: 512, writable: false, payload: Array(repeating: 0x5a, count: 40)), status]),
        request([Buffer(offset: 0, length: 8, writable: false, payload: Array(header(1, sector: 3)[0..<8])),
                 Buffer(offset: 0x7ffc, length: 520, writable: false, payload: Array(header(1, sector: 3)[8..<16])), status]),
        request([Buffer(offset: 0, length: 16, writable: false, payload: header(4, sector: 0)), status]),
        request([Buffer(offset: 0, length: 16, writable: false, payload: header(8, sector: 0)),
                 Buffer(offset: 0x1000, length: 20, writable: true), status]),
        request([Buffer(offset: 0, length: 32, writable: false, payload: header(11, sector: 0) + segment), status]),
        request([Buffer(offset: 0, length: 32, writable: false, payload: header(13, sector: 0) + segment), status]),
    ]
}
