import BlockStorage
import Glibc
import GuestMemory
import HostSystem
import Synchronization
import Testing
import VhostUser
import VirtioDevices
import VirtioQueue

@testable import VhostUserBackend

/// A front-end in the test: this package's vhost-user front-end library on one end of a socket
/// pair, the back-end serving a virtio-blk device on the other, and guest memory in a memfd
/// both sides map.
final class Harness: @unchecked Sendable {
    static let memorySize = 1 << 20
    /// Where the test's guest memory pretends to live in the front-end's address space.
    static let userBase: UInt64 = 0x7f00_0000_0000
    let memoryFile: OwnedFileDescriptor
    let memory: GuestMemory
    let frontend: VhostUserFrontend
    let backend: VhostUserDeviceBackend
    let disk: MemoryBlockBackend
    let kick: EventFD
    let call: EventFD
    let outcome = Ended()
    private var thread: HostThread?

    init() throws {
        memoryFile = try OwnedFileDescriptor.memoryFile(name: "vu-test", size: Int64(Self.memorySize))
        let mapping = try MemoryMapping(file: memoryFile, size: Self.memorySize, options: [.shared])
        memory = try GuestMemory(regions: [GuestMemoryRegion(start: GuestAddress(0), mapping: mapping)])
        disk = MemoryBlockBackend(contents: (0..<8192).map { UInt8(truncatingIfNeeded: $0 / 512 &+ $0) })
        backend = try VhostUserDeviceBackend(device: VirtioBlock(backend: disk, options: VirtioBlock.Options(queueSize: 16)))
        let (ours, theirs) = try UnixSocket.pair()
        frontend = VhostUserFrontend(channel: UnixVhostUserChannel(socket: ours, timeoutMilliseconds: 5000))
        kick = try EventFD()
        call = try EventFD()
        let backend = backend, outcome = outcome
        thread = try HostThread(name: "vu-test-backend") {
            let reason = backend.serve(theirs)
            outcome.value.withLock { $0 = .some(reason) }
        }
    }

    /// Negotiation, the memory table and ring 0 at the layout below, as QEMU and
    /// cloud-hypervisor send them.
    func start() throws {
        let offered = try frontend.getFeatures()
        // Without event index: this driver does not publish used_event, so every used buffer interrupts.
        let features = offered & (VirtioFeature.version1 | vhostUserProtocolFeaturesBit
            | VirtioBlockABI.Feature.flush | VirtioBlockABI.Feature.blockSize)
        _ = try frontend.negotiate(features: features, protocolFeatures: [.replyAck, .config])
        try frontend.setFeatures(features)
        try frontend.setMemTable([VhostUserMemoryRegion(guestPhysicalAddress: 0, size: UInt64(Self.memorySize),
                                                        userAddress: Self.userBase, mmapOffset: 0)],
                                 descriptors: [memoryFile.rawValue])
        try frontend.setVringNum(index: 0, size: 16)
        try frontend.setVringAddr(VhostUserVringAddress(index: 0, descriptorTable: Self.userBase + 0x1000,
                                                        usedRing: Self.userBase + 0x3000, availableRing: Self.userBase + 0x2000))
        try frontend.setVringBase(index: 0, base: 0)
        try frontend.setVringCall(index: 0, descriptor: call.rawValue)
        try frontend.setVringKick(index: 0, descriptor: kick.rawValue)
        try frontend.setVringEnable(index: 0, enabled: true)
    }

    /// Publishes a three-descriptor request (header, data, status) as available entry
    /// `slot`, kicks, and waits for the call; returns the status byte.
    func request(type: UInt32, sector: UInt64, slot: UInt16, data: UInt64 = 0x10000, length: UInt32 = 512, writable: Bool, timeout: Int32 = 5000) throws -> UInt8 {
        let header: UInt64 = 0x8000, status: UInt64 = 0x9000
        try memory.write(type, at: GuestAddress(header))
        try memory.write(UInt32(0), at: GuestAddress(header + 4))
        try memory.write(sector, at: GuestAddress(header + 8))
        try memory.write(UInt8(0xff), at: GuestAddress(status))
        func put(_ index: UInt16, _ address: UInt64, _ length: UInt32, _ flags: UInt16, _ next: UInt16) throws {
            let base = GuestAddress(0x1000 + 16 * UInt64(index))
            try memory.write(address, at: base)
            try memory.write(length, at: GuestAddress(base.rawValue + 8))
            try memory.write(flags, at: GuestAddress(base.rawValue + 12))
            try memory.write(next, at: GuestAddress(base.rawValue + 14))
        }
        try put(0, header, 16, 1, 1)
        try put(1, data, length, writable ? 3 : 1, 2)
        try put(2, status, 1, 2, 0)
        try memory.write(UInt16(0), at: GuestAddress(0x2000 + 4 + 2 * UInt64(slot % 16)))
        try memory.write(slot &+ 1, at: GuestAddress(0x2002))
        try kick.signal()
        var pollDescriptor = pollfd(fd: call.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&pollDescriptor, 1, timeout) == 1 else { throw TestFailure("no call within \(timeout) ms") }
        _ = try call.read()
        return try memory.read(UInt8.self, at: GuestAddress(status))
    }

    func finish() {
        thread?.join()
    }
}

/// How serving ended: `nil` while it runs, `.some(nil)` for a closed connection, the reason otherwise.
final class Ended: Sendable {
    let value = Mutex<String??>(nil)
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite("vhost-user back-end serving virtio-blk")
struct VhostUserDeviceBackendTests {
    @Test("a front-end negotiates, reads the configuration, reads and writes sectors, stops the ring and starts it again")
    func servesBlockRequests() throws {
        let h = try Harness()
        let offered = try h.frontend.getFeatures()
        #expect(offered & VirtioFeature.version1 != 0)
        #expect(offered & vhostUserProtocolFeaturesBit != 0)
        #expect(offered & VirtioBlockABI.Feature.flush != 0)
        try h.start()
        let config = try h.frontend.getConfig(offset: 0, size: 8)
        #expect(config == [16, 0, 0, 0, 0, 0, 0, 0], "capacity: 8192 bytes are 16 sectors")

        #expect(try h.request(type: 0, sector: 3, slot: 0, writable: true) == 0)
        let read = try h.memory.readBytes(count: 512, at: GuestAddress(0x10000))
        #expect(read == (1536..<2048).map { UInt8(truncatingIfNeeded: $0 / 512 &+ $0) })
        #expect(try h.memory.read(UInt16.self, at: GuestAddress(0x3002)) == 1, "one used entry")

        try h.memory.write(bytes: [UInt8](repeating: 0xab, count: 512), at: GuestAddress(0x10000))
        #expect(try h.request(type: 1, sector: 5, slot: 1, writable: false) == 0)
        var written = [UInt8](repeating: 0, count: 512)
        try written.withUnsafeMutableBytes { try h.disk.read(into: [$0], at: 5 * 512) }
        #expect(written == [UInt8](repeating: 0xab, count: 512))

        // QEMU's stop: GET_VRING_BASE answers the next available index; a new start resumes there.
        #expect(try h.frontend.getVringBase(index: 0) == 2)
        try h.frontend.setVringBase(index: 0, base: 2)
        try h.frontend.setVringKick(index: 0, descriptor: h.kick.rawValue)
        try h.frontend.setVringEnable(index: 0, enabled: true)
        #expect(try h.request(type: 0, sector: 0, slot: 2, writable: true) == 0)
        #expect(try h.memory.read(UInt16.self, at: GuestAddress(0x3002)) == 3)

        // A request past the disk's end fails that request only.
        #expect(try h.request(type: 0, sector: 100, slot: 3, writable: true) != 0)
        #expect(h.outcome.value.withLock { $0 } == nil, "the connection is still up")
    }

    @Test("a closed connection ends serving without a reason; a malformed message ends it with one")
    func endsOnCloseAndOnMalformedMessages() throws {
        let h = try Harness()
        try h.frontend.setOwner()
        // A reply flag on a request is refused.
        try (h.frontend.channel as! UnixVhostUserChannel).send(
            VhostUserHeader(request: .setOwner, flags: VhostUserFlags.version | VhostUserFlags.reply, size: 0).bytes,
            descriptors: [], request: .setOwner)
        h.finish()
        let reason = h.outcome.value.withLock { $0 }
        #expect(reason != nil)
        #expect(reason??.contains("not version 1 or a reply") == true)

        let quiet = try Harness()
        try quiet.frontend.setOwner()
        try (quiet.frontend.channel as! UnixVhostUserChannel).socket.shutdown(.both)
        quiet.finish()
        #expect(quiet.outcome.value.withLock { $0 } == .some(nil))
    }

    @Test("rings pointing outside the shared memory, a memory table without descriptors and unknown rings are refused with the reason")
    func refusesBadSetups() throws {
        #expect(throws: BackendMessageError.descriptorMismatch(request: .setMemTable, passed: 0, expected: 1)) {
            try BackendMessage.decode(.setMemTable, payload: VhostUserPayload.memoryTable(
                [VhostUserMemoryRegion(guestPhysicalAddress: 0, size: 4096, userAddress: 0, mmapOffset: 0)]), descriptors: 0)
        }
        #expect(throws: BackendMessageError.badRegionCount(declared: 9, carried: 0)) {
            try BackendMessage.decode(.setMemTable, payload: [9, 0, 0, 0, 0, 0, 0, 0], descriptors: 0)
        }
        #expect(throws: BackendMessageError.badPayloadSize(request: .setVringNum, size: 4, expected: "8 bytes")) {
            try BackendMessage.decode(.setVringNum, payload: [0, 0, 0, 0], descriptors: 0)
        }
        #expect(try BackendMessage.decode(VhostUserRequest(rawValue: 99), payload: [], descriptors: 0) == .unsupported(VhostUserRequest(rawValue: 99)))

        let h = try Harness()
        try h.start()
        // Ring 5 does not exist: with REPLY_ACK negotiated the front-end sees the failure.
        #expect(throws: (any Error).self) { try h.frontend.setVringNum(index: 5, size: 16) }
        // A descriptor table outside the memory table: the kick cannot start the device, no call comes.
        try h.frontend.setVringAddr(VhostUserVringAddress(index: 0, descriptorTable: 0x1000, usedRing: Harness.userBase + 0x3000,
                                                          availableRing: Harness.userBase + 0x2000))
        try h.frontend.setVringEnable(index: 0, enabled: true)
        #expect(throws: TestFailure.self) { try h.request(type: 0, sector: 0, slot: 0, writable: true, timeout: 300) }
        #expect(h.outcome.value.withLock { $0 } == nil, "the connection stays up")
    }
}

@Suite("vhost-user back-end memory table")
struct MemoryTableTests {
    @Test("a region past the end of its file is refused (its pages would raise SIGBUS), one inside it is mapped")
    func regionsMustFitTheirFile() throws {
        let file = try OwnedFileDescriptor.memoryFile(name: "vu-table", size: 65536)
        let inside = VhostUserMemoryRegion(guestPhysicalAddress: 0, size: 65536, userAddress: 0x1000_0000, mmapOffset: 0)
        let table = try MemoryTable(regions: [inside], descriptors: [file])
        #expect(try table.guestAddress(of: 0x1000_0010, ring: 0) == GuestAddress(0x10))
        let past = VhostUserMemoryRegion(guestPhysicalAddress: 0, size: 65536, userAddress: 0, mmapOffset: 4096)
        #expect(throws: MemoryTableError.self) { try MemoryTable(regions: [past], descriptors: [file]) }
        do {
            _ = try MemoryTable(regions: [past], descriptors: [file])
        } catch {
            #expect("\(error)" == "the memory region at 0x0 ends at byte 69632 of a file of 65536 bytes")
        }
    }
}
