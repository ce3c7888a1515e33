import DeviceModel
import Foundation
import GuestMemory
import HostSystem
import Interrupts
import Logging
import Testing
import VhostUser
import VirtioDevices
import VirtioQueue
@testable import VMM

/// A back-end reply: header (version 1 + reply flag) and payload.
private func reply(_ request: VhostUserRequest, _ payload: [UInt8]) -> [UInt8] {
    VhostUserHeader(request: request, flags: VhostUserFlags.version | VhostUserFlags.reply, size: UInt32(payload.count)).bytes + payload
}

/// A `struct virtio_blk_config` of 60 bytes: `capacity` sectors, blk_size 4096, `queues` queues.
private func blockConfig(capacity: UInt64, queues: UInt16) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 60)
    for shift in 0..<8 { bytes[shift] = UInt8(truncatingIfNeeded: capacity >> UInt64(8 * shift)) }
    bytes[20] = 0x00
    bytes[21] = 0x10
    bytes[34] = UInt8(truncatingIfNeeded: queues)
    return bytes
}

/// The features a qemu-storage-daemon-like back-end offers: SIZE_MAX, SEG_MAX, BLK_SIZE,
/// FLUSH, TOPOLOGY, CONFIG_WCE, MQ, DISCARD, WRITE_ZEROES (not RO); EVENT_IDX, INDIRECT,
/// VERSION_1, the protocol-features bit, and bits this front-end never offers (27, 40).
private let backendFeatures: UInt64 = {
    let block: UInt64 = 1 << 1 | 1 << 2 | 1 << 6 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 14
    let transport: UInt64 = 1 << 27 | 1 << 28 | 1 << 29 | 1 << 30 | 1 << 32 | 1 << 40
    return block | transport
}()

/// The connection-time answers: features, protocol features (`protocolBits`), `queues` queues
/// (with MQ) and the configuration space.
private func connection(protocolBits: UInt64 = 1 << 0 | 1 << 3 | 1 << 9, queues: UInt64 = 1, capacity: UInt64 = 65536) -> [UInt8] {
    var replies = reply(.getFeatures, VhostUserPayload.u64(backendFeatures)) + reply(.getProtocolFeatures, VhostUserPayload.u64(protocolBits))
    if protocolBits & 1 != 0 { replies += reply(.getQueueNum, VhostUserPayload.u64(queues)) }
    var config = VhostUserPayload.config(offset: 0, size: 60, flags: VhostUserConfigFlags.writable)
    config.replaceSubrange(12..., with: blockConfig(capacity: capacity, queues: 7))
    return replies + reply(.getConfig, config)
}

private func disk(_ text: String = "vhost_user=on,socket=/s") throws -> DiskConfig { try DiskConfig.parse(text) }

@Suite("--disk vhost_user=on: validation, negotiation, the back-end's configuration space, activation and the snapshot refusal")
struct VhostUserBlockTests {
    func config(_ disks: [String], shared: Bool = true) throws -> VMConfig {
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        config.memory.shared = shared
        config.disks = try disks.map(DiskConfig.parse)
        return config
    }

    @Test("a vhost-user disk is no absent feature; it needs shared memory and a socket, and takes no path and no rate limit (Cloud Hypervisor's errors)")
    func validation() throws {
        let good = try config(["vhost_user=on,socket=/tmp/b.sock,num_queues=1,queue_size=256,id=vb"])
        #expect(good.absentFeatures.isEmpty)
        try good.validate()
        #expect(good.diskIDs == ["vb"] && good.disks?[0].vhostSocket == "/tmp/b.sock" && good.disks?[0].queueSize == 256)

        func message(_ config: VMConfig) -> String {
            let error = #expect(throws: ConfigError.self) { try config.validate() }
            #expect(error?.option == "--disk")
            return error?.message ?? ""
        }
        #expect(message(try config(["vhost_user=on,socket=/tmp/b.sock"], shared: false)).contains("Using vhost-user requires using shared memory or huge pages"))
        #expect(message(try config(["vhost_user=on"])).contains("No socket provided when using vhost-user"))
        #expect(message(try config(["path=/tmp/d,vhost_user=on,socket=/tmp/b.sock"])).contains("Disk path and vhost socket both provided"))
        #expect(message(try config(["vhost_user=on,socket=/tmp/b.sock,bw_size=1000,bw_refill_time=100"])).contains("Rate limiting is not supported with vhost-user"))
        #expect(message(try config(["socket=/tmp/b.sock"])).contains("path= is required"), "a socket without vhost_user=on is no disk")

        // The REST body spells the socket vhost_socket.
        let json = try JSONEncoder().encode(try disk())
        let text = String(decoding: json, as: UTF8.self)
        #expect(text.contains(#""vhost_user":true"#) && text.contains(#""vhost_socket":"\/s""#), "\(text)")
        #expect(try JSONDecoder().decode(DiskConfig.self, from: json).vhostSocket == "/s")
    }

    @Test("connecting negotiates the VIRTIO_BLK_F_* bits Cloud Hypervisor accepts and reads the configuration space with GET_CONFIG")
    func negotiationAndConfigSpace() throws {
        let channel = ReplayVhostUserChannel(replies: connection())
        let device = try VhostUserBlockDevice(config: try disk(), frontend: VhostUserFrontend(channel: channel), logger: Logger(label: "test"))
        // The common bits without MQ (one queue), bit 27, 40 or the protocol-features bit.
        let block: UInt64 = 1 << 1 | 1 << 2 | 1 << 6 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 13 | 1 << 14
        let transport: UInt64 = 1 << 28 | 1 << 29 | 1 << 32
        #expect(device.features == block | transport)
        #expect(device.deviceType == .block && device.queueMaxSizes == [128])
        #expect(device.capacity == 65536)
        #expect(device.readConfig(offset: 20, size: 4) == 4096)
        // num_queues is the configured count, not the back-end's 7.
        #expect(device.readConfig(offset: 34, size: 2) == 1)
        #expect(channel.sent.map { $0.bytes[0] } == [3, 1, 15, 16, 17, 24])
        // CONFIG | MQ | REPLY_ACK asked, the only ones this front-end implements.
        #expect(Array(channel.sent[3].bytes[12...]) == VhostUserPayload.u64(1 << 9 | 1 << 0 | 1 << 3))
        // GET_CONFIG: offset 0, 60 bytes, the WRITABLE flag as Cloud Hypervisor sends it.
        #expect(Array(channel.sent[5].bytes[12...]) == VhostUserPayload.config(offset: 0, size: 60, flags: 1))

        // Two queues: MQ is offered and the guest sees it.
        let two = try VhostUserBlockDevice(config: try disk("vhost_user=on,socket=/s,num_queues=2"),
                                           frontend: VhostUserFrontend(channel: ReplayVhostUserChannel(replies: connection(queues: 2))),
                                           logger: Logger(label: "test"))
        #expect(two.features & 1 << 12 != 0 && two.queueMaxSizes.count == 2 && two.readConfig(offset: 34, size: 2) == 2)
    }

    @Test("a back-end without CONFIG, with too few queues, or with a garbled configuration reply is refused naming the socket")
    func refusals() throws {
        func refusal(_ replies: [UInt8], _ text: String = "vhost_user=on,socket=/s") -> String {
            let error = #expect(throws: ConfigError.self) {
                _ = try VhostUserBlockDevice(config: try disk(text), frontend: VhostUserFrontend(channel: ReplayVhostUserChannel(replies: replies)),
                                             logger: Logger(label: "test"))
            }
            #expect(error?.option == "--disk")
            return error?.message ?? ""
        }
        #expect(refusal(connection(protocolBits: 1 << 0 | 1 << 3)).contains("does not offer the CONFIG protocol feature"))
        #expect(refusal(connection(queues: 1), "vhost_user=on,socket=/s,num_queues=2").contains("needs 2 queue(s) but the back-end serves 1"))
        let short = reply(.getFeatures, VhostUserPayload.u64(backendFeatures)) + reply(.getProtocolFeatures, VhostUserPayload.u64(1 << 9))
            + reply(.getConfig, VhostUserPayload.config(offset: 0, size: 8))
        let garbled = refusal(short)
        #expect(garbled.contains("socket=/s did not give its configuration space"), "\(garbled)")
    }

    @Test("the driver's write of writeback goes to the back-end with SET_CONFIG; writes elsewhere are dropped")
    func writeback() throws {
        let channel = ReplayVhostUserChannel(replies: connection() + reply(.setConfig, VhostUserPayload.u64(0)))
        let device = try VhostUserBlockDevice(config: try disk(), frontend: VhostUserFrontend(channel: channel), logger: Logger(label: "test"))
        device.writeConfig(offset: 0, size: 8, value: 1)
        #expect(device.capacity == 65536 && channel.sent.count == 6)
        device.writeConfig(offset: 32, size: 1, value: 1)
        #expect(device.readConfig(offset: 32, size: 1) == 1)
        let sent = try #require(channel.sent.last)
        #expect(sent.bytes[0] == 25 && sent.bytes[4] == 0x9, "SET_CONFIG, acknowledged")
        #expect(Array(sent.bytes[12...]) == VhostUserPayload.setConfig(offset: 32, flags: 1, bytes: [1]))
    }

    @Test("activation hands the queue to the back-end and enables it; reset stops it; a snapshot of the disk and vm.resize-disk are refused naming it")
    func activationResetAndSnapshotRefusal() throws {
        let file = try OwnedFileDescriptor.memoryFile(name: "vhost-blk-test", size: 1 << 20)
        let memory = try GuestMemory(regions: [GuestMemoryRegion(start: GuestAddress(0), mapping: MemoryMapping(file: file, size: 1 << 20))])
        var queue = try SplitQueue(maxSize: 128)
        queue.size = 128
        queue.descriptorTable = GuestAddress(0x10000)
        queue.availableRing = GuestAddress(0x11000)
        queue.usedRing = GuestAddress(0x12000)
        try queue.activate(in: memory)
        var replies = connection() + reply(.setFeatures, VhostUserPayload.u64(0)) + reply(.setMemTable, VhostUserPayload.u64(0))
        for request in [VhostUserRequest.setVringNum, .setVringAddr, .setVringBase, .setVringCall, .setVringKick, .setVringEnable] {
            replies += reply(request, VhostUserPayload.u64(0))
        }
        replies += reply(.setVringEnable, VhostUserPayload.u64(0)) + reply(.getVringBase, VhostUserPayload.vringState(index: 0, value: 3))
        let channel = ReplayVhostUserChannel(replies: replies)
        let device = try VhostUserBlockDevice(config: try disk(), frontend: VhostUserFrontend(channel: channel), logger: Logger(label: "test"))
        let (kick, call) = (try EventFD(), try EventFD())
        device.setNotifiers(VhostUserNotifiers(kick: { _ in kick }, call: { _ in call.rawValue }))
        device.acknowledgeFeatures(1 << 32 | 1 << 9)
        try device.activate(memory: memory, queues: [queue], interrupt: NoInterrupt())
        #expect(channel.sent.dropFirst(6).map { $0.bytes[0] } == [2, 5, 8, 9, 10, 13, 12, 18])
        #expect(Array(channel.sent[6].bytes[12...]) == VhostUserPayload.u64(1 << 32 | 1 << 30 | 1 << 9))
        device.reset()
        #expect(channel.sent.suffix(2).map { $0.bytes[0] } == [18, 11])
        device.reset()
        #expect(channel.sent.count == 16, "a second reset sends nothing")

        let vm = InertVM()
        let routing = try KVMMSIXRouting(router: try GSIRouter(vm: vm), count: 2)
        let transport = try VirtioPCIDevice(device: device, memory: memory, msixRouting: routing, barAddress: 0xc000_0000)
        let attachment = VirtioPCIAttachment(transport: transport, routing: routing, backend: nil, slot: 1, servedElsewhere: true)
        let mover = BARMover(mmio: Bus(name: "MMIO bus"), vm: vm, events: try EventManager(), logger: Logger(label: "test"))
        let entry = DeviceRegistration.vhostUserBlock(AttachedVhostUserBlock(id: "_disk0", device: device, attachment: attachment, address: "0000:00:01.0"),
                                                      socket: "/s", mover: mover)
        #expect(entry.kind == "vhost-user-blk")
        let refusal = #expect(throws: VMMError.self) { _ = try entry.saveState?() }
        #expect("\(refusal.map { "\($0)" } ?? "")".contains("_disk0 is a vhost-user-blk disk served by the back-end at /s"), "\(String(describing: refusal))")
        let resize = #expect(throws: VMMError.self) { try entry.resize?(1 << 20) }
        #expect("\(resize.map { "\($0)" } ?? "")".contains("owns the image"), "\(String(describing: resize))")
    }

    @Test("vm.add-disk vhost_user=on before boot goes into the configuration, and is refused without shared memory")
    func addBeforeBoot() throws {
        let controller = try VMMController(logger: .init(label: "test"))
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        try controller.create(config)
        let refused = #expect(throws: ControlError.self) { _ = try controller.addDisk(try disk("vhost_user=on,socket=/tmp/b.sock")) }
        #expect("\(refused.map { "\($0)" } ?? "")".contains("shared memory"))
        try controller.delete()
        config.memory.shared = true
        try controller.create(config)
        #expect(try controller.addDisk(try disk("vhost_user=on,socket=/tmp/b.sock")) == nil)
        #expect(try controller.info().config.disks?.first?.vhostSocket == "/tmp/b.sock")
    }
}

/// An interrupt sink (a vhost-user device never signals through the VMM).
private struct NoInterrupt: VirtioInterrupt {
    func signalQueue(_ queue: Int) {}
    func signalConfig() {}
}
