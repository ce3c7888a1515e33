import DeviceModel
import Foundation
import GuestMemory
import HostSystem
import Interrupts
import Logging
import Synchronization
import Testing
import VhostUser
import VirtioDevices
import VirtioQueue
@testable import VMM

private typealias F = VirtioNetABI.Feature

/// A back-end reply: header (version 1 + reply flag) and payload.
private func reply(_ request: VhostUserRequest, _ payload: [UInt8]) -> [UInt8] {
    VhostUserHeader(request: request, flags: VhostUserFlags.version | VhostUserFlags.reply, size: UInt32(payload.count)).bytes + payload
}

/// What this package's vhost_user_net (a ``VirtioNet`` with one pair) offers: MAC, status,
/// control queue, guest-offload control, mergeable buffers, the offloads, EVENT_IDX,
/// INDIRECT, VERSION_1 and the protocol-features bit; `extra` adds more.
private func backendFeatures(controlQueue: Bool = true, extra: UInt64 = 0) -> UInt64 {
    var bits = F.mac | F.status | F.controlGuestOffloads | F.mergeableReceiveBuffers | F.checksum | F.guestChecksum
        | F.hostTSO4 | F.hostTSO6 | F.hostECN | F.guestTSO4 | F.guestTSO6 | F.guestECN | F.hostUFO | F.guestUFO
        | 1 << 28 | 1 << 29 | 1 << 32 | 1 << 30 | extra
    if controlQueue { bits |= F.controlQueue }
    return bits
}

/// The connection-time answers: features, protocol features MQ | REPLY_ACK, `queues` rings.
private func connection(features: UInt64 = backendFeatures(), queues: UInt64 = 2) -> [UInt8] {
    reply(.getFeatures, VhostUserPayload.u64(features)) + reply(.getProtocolFeatures, VhostUserPayload.u64(1 << 0 | 1 << 3))
        + reply(.getQueueNum, VhostUserPayload.u64(queues))
}

private func net(_ text: String = "vhost_user=on,socket=/n,mac=52:54:00:aa:bb:cc") throws -> NetConfig { try NetConfig.parse(text) }

private func makeDevice(_ channel: ReplayVhostUserChannel, _ text: String = "vhost_user=on,socket=/n,mac=52:54:00:aa:bb:cc") throws -> VhostUserNetDevice {
    try VhostUserNetDevice(config: try net(text), frontend: VhostUserFrontend(channel: channel), logger: Logger(label: "test"))
}

@Suite("--net vhost_user=on: validation, negotiation, the VMM's configuration space and control queue, activation and the snapshot refusal")
struct VhostUserNetTests {
    func config(_ nets: [String], shared: Bool = true) throws -> VMConfig {
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        config.memory.shared = shared
        config.net = try nets.map(NetConfig.parse)
        return config
    }

    @Test("a vhost-user NIC is no absent feature; it needs shared memory and a socket, and takes no rate limit (Cloud Hypervisor's errors)")
    func validation() throws {
        let good = try config(["vhost_user=on,socket=/tmp/n.sock,vhost_mode=server,num_queues=2,queue_size=512,id=vn,mac=52:54:00:01:02:03,mtu=1400"])
        #expect(good.absentFeatures.isEmpty)
        try good.validate()
        let parsed = try #require(good.net?.first)
        #expect(good.netIDs == ["vn"] && parsed.vhostSocket == "/tmp/n.sock" && parsed.vhostMode == .server && parsed.queueSize == 512 && parsed.mtu == 1400)

        func message(_ config: VMConfig) -> String {
            let error = #expect(throws: ConfigError.self) { try config.validate() }
            #expect(error?.option == "--net")
            return error?.message ?? ""
        }
        #expect(message(try config(["vhost_user=on,socket=/tmp/n.sock"], shared: false)).contains("Using vhost-user requires using shared memory or huge pages"))
        #expect(message(try config(["vhost_user=on"])).contains("No socket provided when using vhost-user"))
        #expect(message(try config(["vhost_user=on,socket=/tmp/n.sock,bw_size=1000,bw_refill_time=100"])).contains("Rate limiting is not supported with vhost-user"))
        #expect(message(try config(["vhost_user=on,socket=/tmp/n.sock,num_queues=3"])).contains("num_queues=3"))
        #expect(throws: ConfigError.self) { _ = try NetConfig.parse("vhost_user=on,socket=/s,vhost_mode=both") }

        // The REST body spells the socket vhost_socket and the mode Client / Server.
        let json = try JSONEncoder().encode(try net("vhost_user=on,socket=/s,vhost_mode=server"))
        let text = String(decoding: json, as: UTF8.self)
        #expect(text.contains(#""vhost_user":true"#) && text.contains(#""vhost_socket":"\/s""#) && text.contains(#""vhost_mode":"Server""#), "\(text)")
        let decoded = try JSONDecoder().decode(NetConfig.self, from: json)
        #expect(decoded.vhostSocket == "/s" && decoded.vhostMode == .server)
    }

    @Test("negotiation asks for Cloud Hypervisor's features; the guest sees the back-end's answer plus MAC and, with a control queue, link status")
    func negotiationAndConfigSpace() throws {
        let channel = ReplayVhostUserChannel(replies: connection())
        let device = try makeDevice(channel, "vhost_user=on,socket=/n,mac=52:54:00:aa:bb:cc,mtu=1400")
        // SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM.
        #expect(channel.sent.map { $0.bytes[0] } == [3, 1, 15, 16, 17])
        #expect(Array(channel.sent[3].bytes[12...]) == VhostUserPayload.u64(1 << 0 | 1 << 3))
        // Not the back-end's CTRL_GUEST_OFFLOADS (Cloud Hypervisor does not ask for it), nor
        // the protocol-features bit; MTU asked but not offered by this back-end.
        let expected = F.mac | F.status | F.controlQueue | F.mergeableReceiveBuffers | F.checksum | F.guestChecksum
            | F.hostTSO4 | F.hostTSO6 | F.hostECN | F.guestTSO4 | F.guestTSO6 | F.guestECN | F.hostUFO | F.guestUFO
            | 1 << 28 | 1 << 29 | 1 << 32
        #expect(device.features == expected, "0x\(String(device.features, radix: 16))")
        #expect(VhostUserNetDevice.offeredFeatures(try net("vhost_user=on,socket=/n,mtu=1400")) & (F.mtu | F.multiQueue | F.controlQueue) == F.mtu | F.multiQueue | F.controlQueue)
        #expect(VhostUserNetDevice.offeredFeatures(try net("vhost_user=on,socket=/n,offload_csum=off,offload_tso=off,offload_ufo=off")) & (F.checksum | F.hostTSO4 | F.guestUFO) == 0)
        #expect(device.deviceType == .net && device.queueMaxSizes == [256, 256, 256] && device.controlQueueIndex == 2)
        // mac, status (0 until the driver accepts STATUS), max_virtqueue_pairs 1, mtu 1400.
        #expect((0..<6).map { UInt8(device.readConfig(offset: UInt64($0), size: 1)) } == [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])
        #expect(device.readConfig(offset: 6, size: 2) == 0)
        #expect(device.readConfig(offset: 8, size: 2) == 1 && device.readConfig(offset: 10, size: 2) == 1400)
        device.acknowledgeFeatures(1 << 32 | F.status)
        #expect(device.readConfig(offset: 6, size: 2) == UInt64(VirtioNetABI.statusLinkUp))

        // A back-end without CTRL_VQ: two rings, no control queue, no link status.
        let bare = try makeDevice(ReplayVhostUserChannel(replies: connection(features: backendFeatures(controlQueue: false))))
        #expect(bare.queueMaxSizes.count == 2 && bare.controlQueueIndex == nil && bare.features & F.status == 0 && bare.features & F.mac != 0)
    }

    @Test("too few rings, several pairs without VIRTIO_NET_F_MQ, or no VERSION_1 are refused naming --net and the socket")
    func refusals() throws {
        func refusal(_ replies: [UInt8], _ text: String) -> String {
            let error = #expect(throws: ConfigError.self) { _ = try makeDevice(ReplayVhostUserChannel(replies: replies), text) }
            #expect(error?.option == "--net")
            return error?.message ?? ""
        }
        let few = refusal(connection(queues: 2), "vhost_user=on,socket=/n,num_queues=4")
        #expect(few.contains("socket=/n") && few.contains("needs 4 queue(s) but the back-end serves 2"), "\(few)")
        #expect(refusal(connection(queues: 4), "vhost_user=on,socket=/n,num_queues=4").contains("does not offer VIRTIO_NET_F_MQ"))
        #expect(refusal(connection(features: backendFeatures() & ~(1 << 32)), "vhost_user=on,socket=/n").contains("VIRTIO_F_VERSION_1"))
        // Two pairs with MQ: the control queue is queue 4, and max_virtqueue_pairs says 2.
        let two = try makeDevice(ReplayVhostUserChannel(replies: connection(features: backendFeatures(extra: F.multiQueue), queues: 4)),
                             "vhost_user=on,socket=/n,num_queues=4")
        #expect(two.queueMaxSizes.count == 5 && two.controlQueueIndex == 4 && two.readConfig(offset: 8, size: 2) == 2 && two.features & F.multiQueue != 0)
    }

    @Test("activation hands the two data rings to the back-end without MAC and STATUS; the VMM serves the control queue; reset stops the rings")
    func activationControlQueueAndReset() throws {
        let file = try OwnedFileDescriptor.memoryFile(name: "vhost-net-test", size: 1 << 20)
        let memory = try GuestMemory(regions: [GuestMemoryRegion(start: GuestAddress(0), mapping: MemoryMapping(file: file, size: 1 << 20))])
        var queues: [SplitQueue] = []
        for index in 0..<3 {
            var queue = try SplitQueue(maxSize: 256)
            queue.size = 16
            queue.descriptorTable = GuestAddress(0x10000 + 0x3000 * UInt64(index))
            queue.availableRing = GuestAddress(0x11000 + 0x3000 * UInt64(index))
            queue.usedRing = GuestAddress(0x12000 + 0x3000 * UInt64(index))
            try queue.activate(in: memory)
            queues.append(queue)
        }
        var replies = connection() + reply(.setFeatures, VhostUserPayload.u64(0)) + reply(.setMemTable, VhostUserPayload.u64(0))
        for _ in 0..<2 {
            for request in [VhostUserRequest.setVringNum, .setVringAddr, .setVringBase, .setVringCall, .setVringKick] {
                replies += reply(request, VhostUserPayload.u64(0))
            }
        }
        replies += reply(.setVringEnable, VhostUserPayload.u64(0)) + reply(.setVringEnable, VhostUserPayload.u64(0))
        for index in UInt32(0)..<2 {
            replies += reply(.setVringEnable, VhostUserPayload.u64(0)) + reply(.getVringBase, VhostUserPayload.vringState(index: index, value: 0))
        }
        let channel = ReplayVhostUserChannel(replies: replies)
        let device = try makeDevice(channel)
        let (kick, call) = (try EventFD(), try EventFD())
        device.setNotifiers(VhostUserNotifiers(kick: { _ in kick }, call: { _ in call.rawValue }))
        let driver = 1 << 32 | F.mac | F.status | F.controlQueue | F.mergeableReceiveBuffers
        device.acknowledgeFeatures(driver)
        let interrupt = CountingInterrupt()
        try device.activate(memory: memory, queues: queues, interrupt: interrupt)
        // SET_FEATURES, SET_MEM_TABLE, five messages per data ring, two enables: no third ring.
        #expect(channel.sent.dropFirst(5).map { $0.bytes[0] } == [2, 5, 8, 9, 10, 13, 12, 8, 9, 10, 13, 12, 18, 18])
        #expect(Array(channel.sent[5].bytes[12...]) == VhostUserPayload.u64(driver & ~(F.mac | F.status) | 1 << 30))
        let sentBefore = channel.sent.count

        // MAC_ADDR_SET on the control queue (queue 2): header, six bytes, the ack byte.
        let control = (table: UInt64(0x16000), available: UInt64(0x17000), used: UInt64(0x18000))
        func post(_ head: UInt16, _ pieces: [(address: UInt64, bytes: [UInt8])], ackAt: UInt64) throws {
            var index = head
            for piece in pieces {
                try memory.write(bytes: piece.bytes, at: GuestAddress(piece.address))
                try writeDescriptor(memory, control.table, index, address: piece.address, length: UInt32(piece.bytes.count), flags: 1, next: index + 1)
                index += 1
            }
            try writeDescriptor(memory, control.table, index, address: ackAt, length: 1, flags: 2, next: 0)
            let slot = try memory.read(UInt16.self, at: GuestAddress(control.available + 2))
            try memory.write(head, at: GuestAddress(control.available + 4 + 2 * UInt64(slot % 16)))
            try memory.write(slot &+ 1, at: GuestAddress(control.available + 2))
        }
        try memory.write(UInt8(0xff), at: GuestAddress(0x20100))
        try post(0, [(0x20000, [1, 1]), (0x20010, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55])], ackAt: 0x20100)
        try device.processQueue(2)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x20100)) == 0, "VIRTIO_NET_OK")
        #expect(try memory.read(UInt16.self, at: GuestAddress(control.used + 2)) == 1)
        #expect(device.mac.bytes == [0x02, 0x11, 0x22, 0x33, 0x44, 0x55] && device.readConfig(offset: 1, size: 1) == 0x11)
        #expect(interrupt.queues.withLock { $0 } == [2])
        // VQ_PAIRS_SET without multiqueue negotiated: VIRTIO_NET_ERR.
        try post(4, [(0x20020, [4, 0]), (0x20030, [1, 0])], ackAt: 0x20101)
        try device.processQueue(2)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x20101)) == 1, "VIRTIO_NET_ERR")
        // A data ring's notification never reaches the VMM's queues, and nothing went to the back-end.
        try device.processQueue(0)
        #expect(channel.sent.count == sentBefore)

        device.reset()
        #expect(channel.sent.suffix(4).map { $0.bytes[0] } == [18, 11, 18, 11])
        #expect(device.mac.bytes == [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])
        #expect(throws: VirtioDeviceError.self) { try device.processQueue(2) }
    }

    @Test("a snapshot of a VM with a vhost-user-net NIC is refused naming it; vm.add-net vhost_user=on before boot goes into the configuration")
    func snapshotRefusalAndAddBeforeBoot() throws {
        let channel = ReplayVhostUserChannel(replies: connection())
        let device = try makeDevice(channel)
        let memory = try GuestMemory(regions: [GuestMemoryRegion(start: GuestAddress(0), mapping: MemoryMapping(anonymous: 1 << 20))])
        let vm = InertVM()
        let routing = try KVMMSIXRouting(router: try GSIRouter(vm: vm), count: 4)
        let transport = try VirtioPCIDevice(device: device, memory: memory, msixRouting: routing, barAddress: 0xc000_0000)
        let attachment = VirtioPCIAttachment(transport: transport, routing: routing, backend: nil, slot: 1, servedElsewhere: true, servedHere: [2])
        #expect(attachment.watches(queue: 2) && !attachment.watches(queue: 0) && !attachment.watches(queue: 1))
        let mover = BARMover(mmio: Bus(name: "MMIO bus"), vm: vm, events: try EventManager(), logger: Logger(label: "test"))
        let entry = DeviceRegistration.vhostUserNet(AttachedVhostUserNet(id: "_net0", device: device, attachment: attachment, address: "0000:00:01.0"),
                                                    socket: "/n", mover: mover)
        #expect(entry.kind == "vhost-user-net")
        let refusal = #expect(throws: VMMError.self) { _ = try entry.saveState?() }
        #expect("\(refusal.map { "\($0)" } ?? "")".contains("_net0 is a vhost-user-net device served by the back-end at /n"), "\(String(describing: refusal))")

        let controller = try VMMController(logger: .init(label: "test"))
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        try controller.create(config)
        let refused = #expect(throws: ControlError.self) { _ = try controller.addNet(try net("vhost_user=on,socket=/tmp/n.sock"), descriptors: []) }
        #expect("\(refused.map { "\($0)" } ?? "")".contains("shared memory"))
        try controller.delete()
        config.memory.shared = true
        try controller.create(config)
        #expect(try controller.addNet(try net("vhost_user=on,socket=/tmp/n.sock,vhost_mode=server"), descriptors: []) == nil)
        #expect(try controller.info().config.net?.first?.vhostMode == .server)
    }
}

/// Writes descriptor `index` of the table at `table`.
private func writeDescriptor(_ memory: GuestMemory, _ table: UInt64, _ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) throws {
    let base = table + 16 * UInt64(index)
    try memory.write(address, at: GuestAddress(base))
    try memory.write(length, at: GuestAddress(base + 8))
    try memory.write(flags, at: GuestAddress(base + 12))
    try memory.write(next, at: GuestAddress(base + 14))
}

/// Records the queues the device signalled.
private final class CountingInterrupt: VirtioInterrupt {
    let queues = Mutex<[Int]>([])
    func signalQueue(_ queue: Int) { queues.withLock { $0.append(queue) } }
    func signalConfig() {}
}
