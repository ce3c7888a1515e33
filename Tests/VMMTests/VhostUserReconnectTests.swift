import BlockStorage
import Foundation
import GuestMemory
import HostSystem
import Logging
import Synchronization
import Testing
import VhostUser
import VhostUserBackend
import VirtioDevices
import VirtioQueue
@testable import VMM

/// A vhost-user-blk back-end of this package (``VhostUserDeviceBackend`` serving a virtio-blk
/// device over an in-memory disk) listening at a path, one connection at a time.
final class ListeningBackend: @unchecked Sendable {
    let listener: UnixSocket
    let connection = Mutex<UnixSocket?>(nil)
    /// How many connections were accepted (one at most) and whether serving it ended.
    let progress = Mutex<(accepted: Int, ended: Bool)>((0, false))
    private var thread: HostThread?

    init(path: String, disk: MemoryBlockBackend, protocolFeatures: VhostUserProtocolFeatures = [.multiQueue, .replyAck, .config]) throws {
        unlink(path)
        listener = try UnixSocket.listening(at: path, backlog: 1)
        let backend = try VhostUserDeviceBackend(device: VirtioBlock(backend: disk, options: VirtioBlock.Options(queueSize: 16)),
                                                 protocolFeatures: protocolFeatures)
        thread = try HostThread(name: "vu-reconnect-backend") { [self] in
            guard (try? listener.wait(for: .readable, timeoutMilliseconds: 10_000)) == true,
                  let socket = try? listener.accept() else { return }
            connection.withLock { $0 = socket }
            progress.withLock { $0.accepted += 1 }
            _ = backend.serve(socket)
            progress.withLock { $0.ended = true }
        }
    }

    /// Ends the connection and stops listening, as a crashed back-end would (its socket file
    /// stays, refusing connections).
    func hangUp() {
        Glibc.shutdown(listener.rawValue, Int32(SHUT_RDWR))
        connection.withLock { socket in if let socket { Glibc.shutdown(socket.rawValue, Int32(SHUT_RDWR)) } }
        thread?.join()
        thread = nil
    }
}

@Suite("vhost-user reconnection: a back-end that restarts gets the device's features, memory table and queues again")
struct VhostUserReconnectTests {
    /// Publishes a read of sector `sector` as available entry `slot` (header, data, status
    /// descriptors at fixed places), kicks, and waits for the call; returns the status byte.
    static func read(sector: UInt64, slot: UInt16, memory: GuestMemory, kick: EventFD, call: EventFD, data: UInt64 = 0x10000) throws -> UInt8 {
        let header: UInt64 = 0x8000, status: UInt64 = 0x9000
        try memory.write(UInt32(0), at: GuestAddress(header))
        try memory.write(UInt32(0), at: GuestAddress(header + 4))
        try memory.write(sector, at: GuestAddress(header + 8))
        try memory.write(UInt8(0xff), at: GuestAddress(status))
        func put(_ index: UInt16, _ address: UInt64, _ length: UInt32, _ flags: UInt16, _ next: UInt16) throws {
            let base = 0x1000 + 16 * UInt64(index)
            try memory.write(address, at: GuestAddress(base))
            try memory.write(length, at: GuestAddress(base + 8))
            try memory.write(flags, at: GuestAddress(base + 12))
            try memory.write(next, at: GuestAddress(base + 14))
        }
        try put(0, header, 16, 1, 1)
        try put(1, data, 512, 3, 2)
        try put(2, status, 1, 2, 0)
        try memory.write(UInt16(0), at: GuestAddress(0x2000 + 4 + 2 * UInt64(slot % 16)))
        try memory.write(slot &+ 1, at: GuestAddress(0x2002))
        try kick.signal()
        var entry = pollfd(fd: call.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, 10_000) == 1 else { return 0xff }
        _ = try call.read()
        return try memory.read(UInt8.self, at: GuestAddress(status))
    }

    /// Queue 0 of 16 entries with its rings at 0x1000 (descriptors), 0x2000 (available) and
    /// 0x3000 (used), enabled.
    static func readyQueue(in memory: GuestMemory) throws -> SplitQueue {
        var queue = try SplitQueue(maxSize: 16)
        queue.size = 16
        queue.descriptorTable = GuestAddress(0x1000)
        queue.availableRing = GuestAddress(0x2000)
        queue.usedRing = GuestAddress(0x3000)
        try queue.activate(in: memory)
        return queue
    }

    @Test("the VMM connects again, negotiates the same features and hands the queue over from where the driver was; a request made while the back-end was away is served")
    func restartedBackEndServesAgain() throws {
        let directory = NSTemporaryDirectory() + "vu-reconnect-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/blk.sock"
        let disk = MemoryBlockBackend(contents: (0..<8192).map { UInt8(truncatingIfNeeded: $0 / 512 &+ 7) })

        let first = try ListeningBackend(path: path, disk: disk)
        let device = try VhostUserBlockDevice(config: try DiskConfig.parse("vhost_user=on,socket=\(path),queue_size=16"), logger: Logger(label: "test"))
        let (kick, call) = (try EventFD(), try EventFD())
        device.setNotifiers(VhostUserNotifiers(kick: { _ in kick }, call: { _ in call.rawValue }))
        let events = try EventManager()
        try events.start(name: "vu-reconnect-events")
        defer { device.common.stopWatching(); events.stop() }
        try device.common.watch(events: events)

        let file = try OwnedFileDescriptor.memoryFile(name: "vu-reconnect", size: 1 << 20)
        let memory = try GuestMemory(regions: [GuestMemoryRegion(start: GuestAddress(0), mapping: MemoryMapping(file: file, size: 1 << 20, options: [.shared]))])
        let queue = try Self.readyQueue(in: memory)
        // Without event index: this driver publishes no used_event, so every request interrupts.
        device.acknowledgeFeatures(VirtioFeature.version1)
        try device.activate(memory: memory, queues: [queue], interrupt: SilentInterrupt())
        #expect(try Self.read(sector: 3, slot: 0, memory: memory, kick: kick, call: call) == 0)
        #expect(try memory.readBytes(count: 4, at: GuestAddress(0x10000)) == [10, 10, 10, 10])

        // The back-end crashes; the guest queues a request while it is away.
        first.hangUp()
        #expect(SnapshotBinaryTests.waitFor({ !device.common.isConnected }, seconds: 5), "the hang-up is noticed")
        try memory.write(bytes: [0, 0, 0, 0], at: GuestAddress(0x10000))
        let pending = try HostThread(name: "vu-reconnect-guest") {
            _ = try? Self.read(sector: 5, slot: 1, memory: memory, kick: kick, call: call)
        }
        usleep(300_000)
        let second = try ListeningBackend(path: path, disk: disk)
        defer { second.hangUp() }
        pending.join()
        #expect(device.common.isConnected, "the VMM connected to the restarted back-end")
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x9000)) == 0, "the request made while the back-end was away was served")
        #expect(try memory.readBytes(count: 4, at: GuestAddress(0x10000)) == [12, 12, 12, 12])
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x3002)) == 2, "two used entries: nothing repeated, nothing lost")
        #expect(try Self.read(sector: 1, slot: 2, memory: memory, kick: kick, call: call) == 0)
        #expect(try memory.readBytes(count: 4, at: GuestAddress(0x10000)) == [8, 8, 8, 8])
    }
}

@Suite("vhost-user and memory hotplug: a back-end maps hot-added memory before the guest uses it")
struct VhostUserMemoryHotplugTests {
    @Test("with CONFIGURE_MEM_SLOTS one ADD_MEM_REG, without it the whole table again: either way the back-end serves a request whose buffer lies in the new region",
          arguments: [true, false])
    func hotAddedRegionIsServed(memorySlots: Bool) throws {
        let directory = NSTemporaryDirectory() + "vu-memslots-\(getpid())-\(memorySlots)"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/blk.sock"
        let disk = MemoryBlockBackend(contents: (0..<8192).map { UInt8(truncatingIfNeeded: $0 / 512 &+ 7) })
        let offered: VhostUserProtocolFeatures = memorySlots ? [.multiQueue, .replyAck, .config, .configureMemorySlots] : [.multiQueue, .replyAck, .config]
        let backend = try ListeningBackend(path: path, disk: disk, protocolFeatures: offered)
        defer { backend.hangUp() }
        let device = try VhostUserBlockDevice(config: try DiskConfig.parse("vhost_user=on,socket=\(path),queue_size=16"), logger: Logger(label: "test"))
        #expect(device.common.protocolFeatures.contains(.configureMemorySlots) == memorySlots)
        let (kick, call) = (try EventFD(), try EventFD())
        device.setNotifiers(VhostUserNotifiers(kick: { _ in kick }, call: { _ in call.rawValue }))

        let file = try OwnedFileDescriptor.memoryFile(name: "vu-memslots", size: 1 << 20)
        let memory = try GuestMemory(regions: [GuestMemoryRegion(start: GuestAddress(0), mapping: MemoryMapping(file: file, size: 1 << 20, options: [.shared]))],
                                     spareRegions: 1)
        let queue = try VhostUserReconnectTests.readyQueue(in: memory)
        device.acknowledgeFeatures(VirtioFeature.version1)
        try device.activate(memory: memory, queues: [queue], interrupt: SilentInterrupt())
        #expect(try VhostUserReconnectTests.read(sector: 3, slot: 0, memory: memory, kick: kick, call: call) == 0)

        let added = try OwnedFileDescriptor.memoryFile(name: "vu-memslots-added", size: 1 << 20)
        let region = try GuestMemoryRegion(start: GuestAddress(1 << 20), mapping: MemoryMapping(file: added, size: 1 << 20, options: [.shared]))
        try memory.append(region)
        try device.common.memoryAdded(region)
        let buffer: UInt64 = (1 << 20) + 0x4000
        #expect(try VhostUserReconnectTests.read(sector: 6, slot: 1, memory: memory, kick: kick, call: call, data: buffer) == 0)
        #expect(try memory.readBytes(count: 4, at: GuestAddress(buffer)) == [13, 13, 13, 13], "the back-end wrote into the hot-added region")
    }
}

/// The back-end interrupts the guest through the call eventfd; the device itself never does.
struct SilentInterrupt: VirtioInterrupt {
    func signalQueue(_ queue: Int) {}
    func signalConfig() {}
}
