// net-bench: packets per second through virtio-net's transmit path (a driver loop in this
// process, guest memory in an anonymous mapping, the VMM's TAP backend on a real TAP), against
// a plain writev loop on the same TAP queue sending the same packets: the floor.
//
//   net-bench [--seconds S] [--tap NAME] [--packets N] [--layout one|indirect]
//   (needs CAP_NET_ADMIN: it creates the TAP)
//
// --packets N sends N packets per run instead of running for a time: a fixed amount of work
// to count instructions with callgrind (`valgrind --tool=callgrind`, on a `strip -g` copy).
//
// Each round publishes a batch of 64 chains, runs the device's transmit queue once, and reaps
// the used ring. A chain is one descriptor (virtio_net_hdr_v1 and the Ethernet frame
// together), or an indirect one whose table holds the header and the frame apart (as Linux
// sends a packet with several pieces). The floor writes the same 64 packets from 64 buffers
// of its own with writev (one piece, or two). The frames go to a MAC address that is not the
// TAP's, so the host's stack drops them on arrival for both.
import BenchmarkSupport
import Glibc
import GuestMemory
import HostSystem
import VirtioDevices
import VirtioQueue
import VMM

func fail(_ message: String) -> Never { fail(tool: "net-bench", message) }

struct NoInterrupt: VirtioInterrupt {
    func signalQueue(_ queue: Int) {}
    func signalConfig() {}
}

var seconds = 3.0
var tapName = "chnetbench0"
var fixedPackets: Int?
var layouts = [false, true]
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--seconds": seconds = Double(arguments.popFirst() ?? "") ?? seconds
    case "--tap": tapName = arguments.popFirst() ?? tapName
    case "--packets": fixedPackets = Int(arguments.popFirst() ?? "")
    case "--layout":
        switch arguments.popFirst() {
        case "one": layouts = [false]
        case "indirect": layouts = [true]
        case let other: fail("--layout takes one or indirect, not \(other ?? "nothing")")
        }
    default: fail("unknown argument \(argument) (usage: net-bench [--seconds S] [--tap NAME] [--packets N] [--layout one|indirect])")
    }
}

let batch = 64
let packetLimit = fixedPackets
let headerSize = 12
let tap: TapInterface
do {
    tap = try TapInterface.open(name: tapName)
    try tap.setUp()
} catch { fail("cannot create the TAP \(tapName) (root or CAP_NET_ADMIN needed): \(error)") }
defer { tap.close() }
let queueFD = tap.queues[0].rawValue

/// virtio_net_hdr_v1 (all zero: no offload) and an Ethernet/IPv4/UDP frame of `frameSize`
/// bytes to 02:00:00:00:00:99, which no host interface has.
func packet(frameSize: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: headerSize + frameSize)
    let frame: [UInt8] = [0x02, 0, 0, 0, 0, 0x99, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x00,
                          0x45, 0, UInt8((frameSize - 14) >> 8), UInt8((frameSize - 14) & 0xFF), 0, 0, 0x40, 0, 64, 17, 0, 0,
                          192, 168, 254, 2, 192, 168, 254, 1]
    for (index, byte) in frame.enumerated() { bytes[headerSize + index] = byte }
    return bytes
}

// MARK: - Through the device

let memory: GuestMemory
do {
    memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 64 << 20)])
} catch { fail("setup: \(error)") }
let device: VirtioNet
do {
    device = try VirtioNet(backends: [TapNetBackend(interface: tap.name, queue: tap.queues[0])], options: .init(queueSize: 256))
} catch { fail("setup: \(error)") }
let descriptors = GuestAddress(0x10000), available = GuestAddress(0x20000), used = GuestAddress(0x30000)
let rxDescriptors = GuestAddress(0x40000), rxAvailable = GuestAddress(0x50000), rxUsed = GuestAddress(0x60000)
let buffers: UInt64 = 0x100000, slotSize: UInt64 = 0x10000

let indirectTables: UInt64 = 0x80000

func deviceRun(packet bytes: [UInt8], indirect: Bool, deadline: Double) -> (packets: Int, seconds: Double) {
    do {
        func queue(_ table: GuestAddress, _ availableRing: GuestAddress, _ usedRing: GuestAddress) throws -> SplitQueue {
            var queue = try SplitQueue(maxSize: 256)
            queue.descriptorTable = table
            queue.availableRing = availableRing
            queue.usedRing = usedRing
            try queue.activate(in: memory)
            return queue
        }
        device.reset()
        device.acknowledgeFeatures(VirtioFeature.version1)
        // The receive queue exists but gets no buffers (this measures transmission alone); the
        // control queue is never enabled.
        try device.activate(memory: memory, queues: [try queue(rxDescriptors, rxAvailable, rxUsed), try queue(descriptors, available, used),
                                                     try SplitQueue(maxSize: 256)],
                            interrupt: NoInterrupt())
        for slot in 0..<batch {
            let address = buffers + UInt64(slot) * slotSize
            try memory.write(bytes: bytes, at: GuestAddress(address))
            func put(_ at: GuestAddress, _ address: UInt64, _ length: Int, _ flags: UInt16, _ next: UInt16) throws {
                try memory.write(address, at: at)
                try memory.write(UInt32(length), at: GuestAddress(at.rawValue + 8))
                try memory.write(flags, at: GuestAddress(at.rawValue + 12))
                try memory.write(next, at: GuestAddress(at.rawValue + 14))
            }
            let at = GuestAddress(descriptors.rawValue + 16 * UInt64(slot))
            if indirect {
                let table = indirectTables + 32 * UInt64(slot)
                try put(GuestAddress(table), address, headerSize, 1, 1)
                try put(GuestAddress(table + 16), address + UInt64(headerSize), bytes.count - headerSize, 0, 0)
                try put(at, table, 32, 4, 0)
            } else {
                try put(at, address, bytes.count, 0, 0)
            }
        }
        var availableIndex: UInt16 = 0
        var packets = 0
        let start = now()
        var end = start
        while packetLimit.map({ packets < $0 }) ?? (end < deadline) {
            for slot in 0..<batch {
                try memory.write(UInt16(slot), at: GuestAddress(available.rawValue + 4 + 2 * UInt64(availableIndex % 256)))
                availableIndex &+= 1
            }
            try memory.storeRelease(availableIndex, at: GuestAddress(available.rawValue + 2))
            try device.processQueue(1)
            let done = try memory.loadAcquire(UInt16.self, at: GuestAddress(used.rawValue + 2))
            guard done == availableIndex else { fail("the device returned \(done) of \(availableIndex) chains") }
            packets += batch
            end = now()
        }
        return (packets, end - start)
    } catch {
        fail("device run: \(error)")
    }
}

// MARK: - The floor

func floorRun(packet bytes: [UInt8], pieces: Int, deadline: Double) -> (packets: Int, seconds: Double) {
    // One buffer per slot, as the guest's chains have: the same memory footprint.
    let room = Int(slotSize)
    let slots = UnsafeMutableRawPointer.allocate(byteCount: room * batch, alignment: 4096)
    defer { slots.deallocate() }
    for slot in 0..<batch { bytes.withUnsafeBytes { (slots + slot * room).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
    var packets = 0
    let start = now()
    var end = start
    while packetLimit.map({ packets < $0 }) ?? (end < deadline) {
        for slot in 0..<batch {
            let base = slots + slot * room
            var vectors = (iovec(iov_base: base, iov_len: pieces == 1 ? bytes.count : headerSize),
                           iovec(iov_base: base + headerSize, iov_len: bytes.count - headerSize))
            let result = withUnsafePointer(to: &vectors) {
                $0.withMemoryRebound(to: iovec.self, capacity: 2) { writev(queueFD, $0, Int32(pieces)) }
            }
            guard result == bytes.count else { fail("writev returned \(result) (errno \(errno))") }
        }
        packets += batch
        end = now()
    }
    return (packets, end - start)
}

print("net-bench: transmit through the TAP \(tap.name), batches of \(batch), \(seconds) s in all")
for indirect in layouts {
    for frameSize in [60, 1514] {
        let bytes = packet(frameSize: frameSize)
        // Interleave device and floor runs so that drift on a shared machine affects both.
        var deviceTotal = (packets: 0, seconds: 0.0), floorTotal = (packets: 0, seconds: 0.0)
        for _ in 0..<3 {
            let d = deviceRun(packet: bytes, indirect: indirect, deadline: now() + seconds / 12)
            let f = floorRun(packet: bytes, pieces: indirect ? 2 : 1, deadline: now() + seconds / 12)
            deviceTotal = (deviceTotal.packets + d.packets, deviceTotal.seconds + d.seconds)
            floorTotal = (floorTotal.packets + f.packets, floorTotal.seconds + f.seconds)
        }
        let deviceRate = Double(deviceTotal.packets) / deviceTotal.seconds
        let floorRate = Double(floorTotal.packets) / floorTotal.seconds
        let layout = indirect ? "indirect (header and frame apart)" : "one descriptor"
        print("net-bench: \(frameSize)-byte frames, \(layout): virtio-net \(Int(deviceRate)) packets/s, writev floor \(Int(floorRate)) packets/s, ratio \(Int((deviceRate / floorRate * 100).rounded())) % of the floor")
    }
}
