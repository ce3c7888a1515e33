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

/// A back-end's answers to the connection-time negotiation: VERSION_1, EVENT_IDX and the
/// protocol-features bit; MQ and REPLY_ACK; `queues` queues.
private func negotiation(queues: UInt64 = 2) -> [UInt8] {
    reply(.getFeatures, VhostUserPayload.u64(1 << 32 | 1 << 30 | 1 << 29 | 1 << 40))
        + reply(.getProtocolFeatures, VhostUserPayload.u64(1 << 0 | 1 << 3 | 1 << 9))
        + reply(.getQueueNum, VhostUserPayload.u64(queues))
}

@Suite("--fs: validation, ids, vm.add-fs, and the vhost-user front-end of virtio-fs")
struct FsTests {
    func config(_ fs: [String], shared: Bool = true, vcpus: UInt32 = 1) throws -> VMConfig {
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        config.memory.shared = shared
        config.cpus.bootVCPUs = vcpus
        config.cpus.maxVCPUs = vcpus
        config.fs = try fs.map(FsConfig.parse)
        return config
    }

    @Test("ids default to _fs<N>; without shared memory, with more request queues than vCPUs, a bad queue size or an id in use it is refused")
    func validation() throws {
        let two = try config(["tag=a,socket=/tmp/a.sock", "tag=b,socket=/tmp/b.sock,id=mine"])
        try two.validate()
        #expect(two.fsIDs == ["_fs0", "mine"])
        #expect(two.absentFeatures.isEmpty)
        #expect(two.fs?[0].numQueues == 1 && two.fs?[0].queueSize == 1024)

        let private_ = #expect(throws: ConfigError.self) { try config(["tag=a,socket=/tmp/a.sock"], shared: false).validate() }
        #expect(private_?.option == "--fs" && private_?.message.contains("Using vhost-user requires using shared memory or huge pages") == true,
                "\(private_?.description ?? "")")
        var huge = try config(["tag=a,socket=/tmp/a.sock"], shared: false)
        huge.memory.hugepages = true
        #expect(huge.backedBySharedMemory)

        let queues = #expect(throws: ConfigError.self) { try config(["tag=a,socket=/tmp/a.sock,num_queues=2"]).validate() }
        #expect(queues?.message.contains("Queue count (2) must not exceed boot vCPUs (1)") == true, "\(queues?.description ?? "")")
        try config(["tag=a,socket=/tmp/a.sock,num_queues=2"], vcpus: 2).validate()
        #expect(throws: ConfigError.self) { try config(["tag=a,socket=/tmp/a.sock,queue_size=1000"]).validate() }
        #expect(throws: ConfigError.self) { _ = try FsConfig.parse("socket=/tmp/a.sock") }
        #expect(throws: ConfigError.self) { _ = try FsConfig.parse("tag=\(String(repeating: "t", count: 37)),socket=/tmp/a.sock") }

        var clash = try config(["tag=a,socket=/tmp/a.sock,id=d"])
        clash.disks = [try DiskConfig.parse("path=/tmp/x,id=d")]
        #expect(throws: ConfigError.self) { try clash.validate() }
        #expect(try config(["tag=a,socket=/tmp/a.sock,pci_segment=1"]).absentFeatures.isEmpty, "PCI segments exist")
    }

    @Test("vm.add-fs before boot goes into the configuration (refused without shared memory) and vm.remove-device takes it out")
    func addBeforeBoot() throws {
        let controller = try VMMController(logger: .init(label: "test"))
        var config = VMConfig()
        config.payload = PayloadConfig()
        config.payload?.kernel = "/k"
        try controller.create(config)
        let refused = #expect(throws: ControlError.self) { _ = try controller.addFs(try FsConfig.parse("tag=myfs,socket=/tmp/fs.sock")) }
        #expect("\(refused.map { "\($0)" } ?? "")".contains("shared memory"))
        try controller.delete()
        config.memory.shared = true
        try controller.create(config)
        #expect(try controller.addFs(try FsConfig.parse("tag=myfs,socket=/tmp/fs.sock")) == nil)
        #expect(try controller.info().config.fs?.first?.tag == "myfs")
        try controller.removeDevice(id: "_fs0")
        #expect(try controller.info().config.fs == nil)
    }

    @Test("connecting negotiates as Cloud Hypervisor: the guest sees the common features without bit 30, the tag and the request queue count")
    func negotiationAndConfigSpace() throws {
        let channel = ReplayVhostUserChannel(replies: negotiation())
        let device = try VhostUserFsDevice(config: try FsConfig.parse("tag=myfs,socket=/s"),
                                           frontend: VhostUserFrontend(channel: channel), logger: Logger(label: "test"))
        #expect(device.features == 1 << 32 | 1 << 29)
        #expect(device.queueMaxSizes == [1024, 1024])
        #expect(device.deviceType.rawValue == 26)
        #expect(device.readConfig(offset: 0, size: 4) == UInt64(0x7366_796d))  // "myfs"
        #expect(device.readConfig(offset: 4, size: 4) == 0)
        #expect(device.readConfig(offset: 36, size: 4) == 1)
        #expect(channel.sent.map { $0.bytes[0] } == [3, 1, 15, 16, 17])
        // MQ | REPLY_ACK asked; CONFIG, which the back-end has too, is not.
        #expect(Array(channel.sent[3].bytes[12...]) == VhostUserPayload.u64(1 << 0 | 1 << 3))

        // A back-end with one queue cannot serve hiprio and a request queue.
        let short = #expect(throws: ConfigError.self) {
            _ = try VhostUserFsDevice(config: try FsConfig.parse("tag=myfs,socket=/s"),
                                      frontend: VhostUserFrontend(channel: ReplayVhostUserChannel(replies: negotiation(queues: 1))),
                                      logger: Logger(label: "test"))
        }
        #expect(short?.message.contains("needs 2 queue(s) but the back-end serves 1") == true, "\(short?.description ?? "")")
    }

    /// A memfd-backed guest memory of 1 MiB and the two queues the driver set up.
    func guest() throws -> (GuestMemory, [SplitQueue]) {
        let file = try OwnedFileDescriptor.memoryFile(name: "fs-test", size: 1 << 20)
        let memory = try GuestMemory(regions: [GuestMemoryRegion(start: GuestAddress(0), mapping: MemoryMapping(file: file, size: 1 << 20))])
        var queues: [SplitQueue] = []
        for index in 0..<2 {
            var queue = try SplitQueue(maxSize: 1024)
            queue.size = 256
            queue.descriptorTable = GuestAddress(UInt64(0x10000 + index * 0x8000))
            queue.availableRing = GuestAddress(UInt64(0x14000 + index * 0x8000))
            queue.usedRing = GuestAddress(UInt64(0x15000 + index * 0x8000))
            try queue.activate(in: memory)
            queues.append(queue)
        }
        try memory.write(UInt16(7), at: GuestAddress(0x14002))  // queue 0's avail idx
        return (memory, queues)
    }

    @Test("activation hands the memory table, each queue's rings, base, call and kick eventfds to the back-end and enables the queues; reset stops them with GET_VRING_BASE")
    func activationAndReset() throws {
        let (memory, queues) = try guest()
        // Each SET_ after REPLY_ACK is acknowledged with status 0: features, mem table, then 5 per
        // queue, 2 enables; then reset: 2 × (enable off, GET_VRING_BASE).
        let ack = reply(.setFeatures, VhostUserPayload.u64(0))
        var replies = negotiation() + ack + reply(.setMemTable, VhostUserPayload.u64(0))
        for _ in 0..<2 {
            for request in [VhostUserRequest.setVringNum, .setVringAddr, .setVringBase, .setVringCall, .setVringKick] {
                replies += reply(request, VhostUserPayload.u64(0))
            }
        }
        replies += reply(.setVringEnable, VhostUserPayload.u64(0)) + reply(.setVringEnable, VhostUserPayload.u64(0))
        for index in 0..<2 {
            replies += reply(.setVringEnable, VhostUserPayload.u64(0)) + reply(.getVringBase, VhostUserPayload.vringState(index: UInt32(index), value: 9))
        }
        let channel = ReplayVhostUserChannel(replies: replies)
        let device = try VhostUserFsDevice(config: try FsConfig.parse("tag=myfs,socket=/s"),
                                           frontend: VhostUserFrontend(channel: channel), logger: Logger(label: "test"))
        let kicks = [try EventFD(), try EventFD()]
        let calls = [try EventFD(), try EventFD()]
        device.setNotifiers(VhostUserNotifiers(kick: { kicks[$0] }, call: { calls[$0].rawValue }))
        device.acknowledgeFeatures(1 << 32 | 1 << 29)
        try device.activate(memory: memory, queues: queues, interrupt: NoInterrupt())
        let sent = Array(channel.sent.dropFirst(5))
        #expect(sent.map { $0.bytes[0] } == [2, 5, 8, 9, 10, 13, 12, 8, 9, 10, 13, 12, 18, 18])
        // SET_FEATURES: the driver's features and bit 30; NEED_REPLY set.
        #expect(Array(sent[0].bytes[12...]) == VhostUserPayload.u64(1 << 32 | 1 << 30 | 1 << 29))
        #expect(sent[0].bytes[4] == 0x9)
        // SET_MEM_TABLE: one region with the memory file's descriptor and the VMM's address.
        #expect(sent[1].descriptors == [memory.regions[0].mapping.file!.rawValue])
        let host = UInt64(UInt(bitPattern: memory.regions[0].hostAddress))
        #expect(Array(sent[1].bytes[12...]) == VhostUserPayload.memoryTable([VhostUserMemoryRegion(guestPhysicalAddress: 0, size: 1 << 20, userAddress: host, mmapOffset: 0)]))
        // Queue 0: size 256, rings as VMM addresses, base = the avail idx (7), call then kick with their descriptors.
        #expect(Array(sent[2].bytes[12...]) == VhostUserPayload.vringState(index: 0, value: 256))
        #expect(Array(sent[3].bytes[12...]) == VhostUserPayload.vringAddress(VhostUserVringAddress(
            index: 0, descriptorTable: host + 0x10000, usedRing: host + 0x15000, availableRing: host + 0x14000)))
        #expect(Array(sent[4].bytes[12...]) == VhostUserPayload.vringState(index: 0, value: 7))
        #expect(sent[5].descriptors == [calls[0].rawValue] && sent[6].descriptors == [kicks[0].rawValue])
        #expect(Array(sent[12].bytes[12...]) == VhostUserPayload.vringState(index: 0, value: 1))

        device.reset()
        #expect(channel.sent.suffix(4).map { $0.bytes[0] } == [18, 11, 18, 11])
    }

    @Test("a back-end that refuses or garbles a reply during activation breaks the device with a reason (the VMM goes on)")
    func hostileBackendDuringActivation() throws {
        let (memory, queues) = try guest()
        for bad in [reply(.setMemTable, VhostUserPayload.u64(1)), reply(.setMemTable, [1, 2]), [0xff, 0xff, 0xff]] {
            let channel = ReplayVhostUserChannel(replies: negotiation() + reply(.setFeatures, VhostUserPayload.u64(0)) + bad)
            let device = try VhostUserFsDevice(config: try FsConfig.parse("tag=myfs,socket=/s"),
                                               frontend: VhostUserFrontend(channel: channel), logger: Logger(label: "test"))
            let event = try EventFD()
            device.setNotifiers(VhostUserNotifiers(kick: { _ in event }, call: { _ in event.rawValue }))
            let error = #expect(throws: VirtioDeviceError.self) { try device.activate(memory: memory, queues: queues, interrupt: NoInterrupt()) }
            guard case let .backend(message) = error else { Issue.record("not a back-end error: \(String(describing: error))"); continue }
            #expect(message.contains("SET_MEM_TABLE"), "\(message)")
        }
    }

    @Test("guest memory that is not in a memory file cannot be handed to a back-end")
    func anonymousMemoryIsRefused() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 1 << 20)])
        let error = #expect(throws: VirtioDeviceError.self) { _ = try VhostUserCommon.memoryTable(memory) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("shared=on"))
    }
}

extension FsTests {
    @Test("on PCI the kick eventfds outlive a BAR move (the back-end keeps its descriptors), and a snapshot of the device is refused naming it")
    func attachmentAndSnapshotRefusal() throws {
        let device = try VhostUserFsDevice(config: try FsConfig.parse("tag=myfs,socket=/s"),
                                           frontend: VhostUserFrontend(channel: ReplayVhostUserChannel(replies: negotiation())),
                                           logger: Logger(label: "test"))
        let (memory, _) = try guest()
        let vm = InertVM()
        let routing = try KVMMSIXRouting(router: try GSIRouter(vm: vm), count: 3)
        let transport = try VirtioPCIDevice(device: device, memory: memory, msixRouting: routing, barAddress: 0xc000_0000)
        let attachment = VirtioPCIAttachment(transport: transport, routing: routing, backend: nil, slot: 1, servedElsewhere: true)
        let events = try EventManager()
        try attachment.registerNotifiers(vm: vm, events: events)
        let before = try (0..<2).map { try attachment.kickEvent(queue: $0).rawValue }
        attachment.reregisterNotifiers(vm: vm, events: events)
        #expect(try (0..<2).map { try attachment.kickEvent(queue: $0).rawValue } == before)

        let mover = BARMover(mmio: Bus(name: "MMIO bus"), vm: vm, events: events, logger: Logger(label: "test"))
        let entry = DeviceRegistration.fs(AttachedFs(id: "_fs0", device: device, attachment: attachment, address: "0000:00:02.0"),
                                          socket: "/s", mover: mover)
        #expect(entry.kind == "virtio-fs")
        let refusal = #expect(throws: VMMError.self) { _ = try entry.saveState?() }
        #expect("\(refusal.map { "\($0)" } ?? "")".contains("_fs0 is a virtio-fs device"), "\(String(describing: refusal))")
    }
}

/// An interrupt sink (a vhost-user device never signals through the VMM).
private struct NoInterrupt: VirtioInterrupt {
    func signalQueue(_ queue: Int) {}
    func signalConfig() {}
}
