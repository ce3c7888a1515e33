// blk-bench: requests per second through virtio-blk's queue handling (a driver loop in this
// process, guest memory in an anonymous mapping, a raw image on tmpfs), against a plain
// pread/pwrite loop on the same file doing the same I/O: the floor.
//
//   blk-bench [--seconds S] [--file PATH] [--size MiB]
//
// Each round publishes a batch of 64 requests (header, one data buffer, status; 4 KiB at
// random sector-aligned offsets), runs the device's queue handling once, and reaps the used
// ring. The floor issues the same 64 reads/writes with pread/pwrite, into 64 buffers of its own.
import BenchmarkSupport
import BlockStorage
import Glibc
import GuestMemory
import VirtioDevices
import VirtioQueue

func fail(_ message: String) -> Never { fail(tool: "blk-bench", message) }

struct NoInterrupt: VirtioInterrupt {
    func signalQueue(_ queue: Int) {}
    func signalConfig() {}
}

var seconds = 2.0
var path = "/dev/shm/blk-bench-\(getpid()).img"
var sizeMiB = 256
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--seconds": seconds = Double(arguments.popFirst() ?? "") ?? seconds
    case "--file": path = arguments.popFirst() ?? path
    case "--size": sizeMiB = Int(arguments.popFirst() ?? "") ?? sizeMiB
    default: fail("unknown argument \(argument) (usage: blk-bench [--seconds S] [--file PATH] [--size MiB])")
    }
}

let requestSize = 4096
let batch = 64
let diskSize = UInt64(sizeMiB) << 20
let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
guard fd >= 0 else { fail("cannot create \(path)") }
guard ftruncate(fd, off_t(diskSize)) == 0 else { fail("cannot size \(path)") }
do {
    // Fill the image so that reads touch real pages.
    var chunk = [UInt8](repeating: 0xA5, count: 1 << 20)
    for offset in stride(from: 0, to: Int(diskSize), by: chunk.count) {
        _ = chunk.withUnsafeMutableBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
    }
}
defer { unlink(path) }

nonisolated(unsafe) var state: UInt64 = 0x9E37_79B9_7F4A_7C15  // one thread
func nextOffset() -> UInt64 {
    state = state &* 6364136223846793005 &+ 1442695040888963407
    return ((state >> 20) % (diskSize / UInt64(requestSize))) * UInt64(requestSize)
}

// MARK: - Through the device

let memory: GuestMemory
let backend: RawFileBackend
do {
    memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 64 << 20)])
    backend = try RawFileBackend(path: path, options: .init(lock: .none))
} catch { fail("setup: \(error)") }
let device = VirtioBlock(backend: backend, options: .init(queueSize: 256))
let descriptors = GuestAddress(0x10000), available = GuestAddress(0x20000), used = GuestAddress(0x30000)
let headers: UInt64 = 0x40000, statuses: UInt64 = 0x50000, data: UInt64 = 0x100000

func deviceRun(writing: Bool, deadline: Double) -> (requests: Int, seconds: Double) {
    do {
        var queue = try SplitQueue(maxSize: 256)
        queue.descriptorTable = descriptors
        queue.availableRing = available
        queue.usedRing = used
        try queue.activate(in: memory)
        device.reset()
        device.acknowledgeFeatures(VirtioFeature.version1 | VirtioBlockABI.Feature.flush)
        try device.activate(memory: memory, queues: [queue], interrupt: NoInterrupt())
        // The chains never change: header, data, status for each of the 64 slots.
        for slot in 0..<batch {
            let base = UInt64(slot * 3)
            func put(_ index: UInt64, _ address: UInt64, _ length: UInt32, _ flags: UInt16) throws {
                let at = GuestAddress(descriptors.rawValue + 16 * index)
                try memory.write(address, at: at)
                try memory.write(length, at: GuestAddress(at.rawValue + 8))
                try memory.write(flags, at: GuestAddress(at.rawValue + 12))
                try memory.write(UInt16(index + 1), at: GuestAddress(at.rawValue + 14))
            }
            try put(base, headers + 16 * UInt64(slot), 16, 1)
            try put(base + 1, data + UInt64(slot * requestSize), UInt32(requestSize), writing ? 1 : 3)
            try put(base + 2, statuses + UInt64(slot), 1, 2)
            try memory.write(UInt32(writing ? 1 : 0), at: GuestAddress(headers + 16 * UInt64(slot)))
        }
        var availableIndex: UInt16 = 0
        var requests = 0
        let start = now()
        var end = start
        while end < deadline {
            for slot in 0..<batch {
                try memory.write(nextOffset() / 512, at: GuestAddress(headers + 16 * UInt64(slot) + 8))
                try memory.write(UInt16(slot * 3), at: GuestAddress(available.rawValue + 4 + 2 * UInt64(availableIndex % 256)))
                availableIndex &+= 1
            }
            try memory.storeRelease(availableIndex, at: GuestAddress(available.rawValue + 2))
            try device.processQueue(0)
            let done = try memory.loadAcquire(UInt16.self, at: GuestAddress(used.rawValue + 2))
            guard done == availableIndex else { fail("the device completed \(done) of \(availableIndex) requests") }
            requests += batch
            end = now()
        }
        return (requests, end - start)
    } catch {
        fail("device run: \(error)")
    }
}

// MARK: - The floor

func floorRun(writing: Bool, deadline: Double) -> (requests: Int, seconds: Double) {
    // One 4 KiB buffer per slot, as the guest's requests have: the same memory footprint.
    let buffers = UnsafeMutableRawPointer.allocate(byteCount: requestSize * batch, alignment: 4096)
    defer { buffers.deallocate() }
    memset(buffers, 0x5A, requestSize * batch)
    var requests = 0
    let start = now()
    var end = start
    while end < deadline {
        for slot in 0..<batch {
            let offset = off_t(nextOffset())
            let buffer = buffers + slot * requestSize
            let result = writing ? pwrite(fd, buffer, requestSize, offset) : pread(fd, buffer, requestSize, offset)
            guard result == requestSize else { fail("pread/pwrite returned \(result)") }
        }
        requests += batch
        end = now()
    }
    return (requests, end - start)
}

print("blk-bench: \(requestSize / 1024) KiB random requests, batches of \(batch), \(sizeMiB) MiB raw image at \(path), \(seconds) s per run")
for writing in [false, true] {
    let kind = writing ? "write" : "read"
    // Interleave device and floor runs so that drift on a shared machine affects both.
    var deviceTotal = (requests: 0, seconds: 0.0), floorTotal = (requests: 0, seconds: 0.0)
    for _ in 0..<3 {
        let d = deviceRun(writing: writing, deadline: now() + seconds / 3)
        let f = floorRun(writing: writing, deadline: now() + seconds / 3)
        deviceTotal = (deviceTotal.requests + d.requests, deviceTotal.seconds + d.seconds)
        floorTotal = (floorTotal.requests + f.requests, floorTotal.seconds + f.seconds)
    }
    let deviceRate = Double(deviceTotal.requests) / deviceTotal.seconds
    let floorRate = Double(floorTotal.requests) / floorTotal.seconds
    let ratio = deviceRate / floorRate
    print("blk-bench: \(kind): virtio-blk \(Int(deviceRate)) req/s, pread/pwrite floor \(Int(floorRate)) req/s, ratio \(String(Int(ratio * 100))) % of the floor (target 80 % or more)")
}
