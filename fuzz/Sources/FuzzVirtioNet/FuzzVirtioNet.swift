// fuzz-virtio-net: VirtioNet over MemoryNetBackends, driven by DeviceHarness: fuzzed options
// (one or two queue pairs, MTU, queue size, offloads), features, queues and chains on the
// receive, transmit and control queues, host packets and backend-readable events interleaved
// with notifications, configuration accesses, scripted backend failures and resets. The host
// side must stay bounded and every packet the backends see must be a whole, sane packet.
import FuzzSupport
import VirtioDevices

@main
enum VirtioNetFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

/// Packet lengths the host offers (header included): empty, short of a header, a bare
/// header, usual frames, jumbo, the largest, one past it.
private let packetLengths = [0, 5, 12, 74, 1526, 9012, VirtioNetABI.maxPacketSize, VirtioNetABI.maxPacketSize + 1]

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let choice = input.byte()
        let pairs = 1 + Int(choice & 1)
        let backends = (0..<pairs).map { _ in MemoryNetBackend(receiveCapacity: 4, sendCapacity: 8) }
        let options = VirtioNet.Options(
            mac: MACAddress(bytes: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])!, mtu: choice & 2 != 0 ? 1500 : nil,
            queueSize: [256, 16, 1, 64][Int(choice >> 2) & 3], offloadChecksum: choice & 0x10 == 0,
            offloadTSO: choice & 0x20 == 0, offloadUFO: choice & 0x40 == 0)
        let device: VirtioNet
        do {
            device = try VirtioNet(backends: backends, options: options)
        } catch {
            fuzzCheck(false, "valid options refused: \(error)")
            return
        }
        var harness = DeviceHarness(device: device, &input)
        harness.run(&input) { action, input in
            let pair = input.int(in: -1...pairs)
            let backend = backends[max(0, min(pair, pairs - 1))]
            switch action & 3 {
            case 0:  // A packet from the host.
                let length = input.bool() ? input.pick(packetLengths) : Int(input.integer(UInt16.self))
                backend.inject([UInt8](repeating: input.byte(), count: length))
            case 1:  // The backend's descriptor is readable.
                let watch = device.backendReadable(pair: pair)
                fuzzCheck(watch == device.wantsBackendEvents(pair: pair), "backendReadable disagrees with wantsBackendEvents")
            case 2:  // The next backend call fails.
                backend.failNext(input.pick([.receive, .send, .setOffloads]), with: .other("scripted failure"))
            default:  // The host drains what the guest sent.
                checkSent(backend.takeSent())
            }
            check(device, backends)
        }
        for backend in backends { checkSent(backend.takeSent()) }
        check(device, backends)
    }
}

/// Every packet a backend took is a header and a frame no larger than the device allows.
private func checkSent(_ packets: [[UInt8]]) {
    for packet in packets {
        fuzzCheck((VirtioNetABI.headerSize...VirtioNetABI.maxPacketSize).contains(packet.count),
                  "the backend was sent a packet of \(packet.count) bytes")
    }
}

/// What holds whatever the guest does.
private func check(_ device: VirtioNet, _ backends: [MemoryNetBackend]) {
    let counters = device.counters
    fuzzCheck(counters.rxBytes <= counters.rxFrames * UInt64(VirtioNetABI.maxFrameSize), "more bytes received than frames allow")
    fuzzCheck(counters.txBytes <= counters.txFrames * UInt64(VirtioNetABI.maxFrameSize), "more bytes sent than frames allow")
    fuzzCheck((1...device.pairCount).contains(device.activeQueuePairs), "\(device.activeQueuePairs) queue pairs in use")
    fuzzCheck(!device.mac.isMulticast, "the driver installed a multicast MAC address")
    for backend in backends {
        fuzzCheck(backend.pendingCount <= backend.receiveCapacity, "the backend holds more than its capacity")
        fuzzCheck(backend.sent.count <= backend.sendCapacity ?? .max, "the backend kept more than its capacity")
    }
}

/// A packet sent, a packet received into one buffer and across mergeable buffers, and a
/// control command, each on a one-pair device with queues of 16.
private func seeds() -> [[UInt8]] {
    typealias Buffer = FuzzInputBuilder.SeedBuffer
    let header = [UInt8](repeating: 0, count: VirtioNetABI.headerSize)
    func start(_ builder: inout FuzzInputBuilder) {
        builder.byte(0)  // one pair, no MTU, queue size 256, every offload
        builder.deviceStart(queues: 3)
    }
    /// A host packet of `length` bytes on pair 0, then the backend-readable event.
    func receive(_ builder: inout FuzzInputBuilder, length: UInt16) {
        builder.append([0xe0, 1, 0])  // inject on pair 0 (int(in: -1...1) maps 1 to 0), explicit length
        builder.integer(length)
        builder.byte(0x5a)
        builder.append([0xe1, 1])     // backendReadable(pair: 0)
    }

    var transmit = FuzzInputBuilder()
    start(&transmit)
    transmit.deviceChain(queue: 1, head: 0, [Buffer(offset: 0, length: 12, writable: false, payload: header),
                                             Buffer(offset: 0x100, length: 60, writable: false, payload: Array(repeating: 0xab, count: 40))])
    transmit.deviceNotify(queue: 1)
    transmit.append([0xe3, 1])  // the host drains what was sent

    var single = FuzzInputBuilder()
    start(&single)
    single.deviceChain(queue: 0, head: 0, [Buffer(offset: 0, length: 1536, writable: true)])
    single.deviceNotify(queue: 0)
    receive(&single, length: 1000)

    var mergeable = FuzzInputBuilder()
    start(&mergeable)
    for head: UInt8 in [0, 1, 2] {
        mergeable.deviceChain(queue: 0, head: head, [Buffer(offset: UInt32(head) * 0x200, length: 256, writable: true)])
    }
    receive(&mergeable, length: 700)

    var control = FuzzInputBuilder()
    start(&control)
    control.deviceChain(queue: 2, head: 0, [Buffer(offset: 0, length: 3, writable: false, payload: [0, 0, 1]),
                                            Buffer(offset: 0x10, length: 1, writable: true)])
    control.deviceNotify(queue: 2)
    control.deviceChain(queue: 2, head: 2, [Buffer(offset: 0x20, length: 8, writable: false, payload: [1, 1, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]),
                                            Buffer(offset: 0x30, length: 1, writable: true)])
    control.deviceNotify(queue: 2)
    return [transmit.bytes, single.bytes, mergeable.bytes, control.bytes]
}
