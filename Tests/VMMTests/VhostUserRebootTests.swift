import BlockStorage
import Foundation
import GuestMemory
import HostSystem
import HypervisorTesting
import Logging
import Synchronization
import Testing
import VhostUser
import VhostUserBackend
import VirtioDevices
import VirtioQueue
@testable import VMM

/// The virtio-net shape a back-end serves here: one receive and one transmit ring (no packets
/// behind them: nothing here drives the rings).
private final class NetShape: VirtioDevice, Sendable {
    let deviceType = VirtioDeviceType.net
    let features: UInt64 = 0
    let queueMaxSizes: [UInt16] = [256, 256]
    func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {}
    func reset() {}
    func processQueue(_ index: Int) throws(VirtioDeviceError) {}
}

/// This package's back-end serving ``NetShape`` as a client of a VMM listening at `path`
/// (`vhost_mode=server` on the VMM's side), for one connection, on a thread of its own.
private final class ConnectingNetBackend: Sendable {
    /// What the serving thread saw.
    private final class Outcome: Sendable {
        let state = Mutex<(ended: Bool, reason: String?)>((false, nil))
    }
    private let outcome = Outcome()

    init(path: String) throws {
        let backend = try VhostUserDeviceBackend(device: NetShape(), protocolFeatures: [.replyAck])
        let outcome = outcome
        _ = try HostThread(name: "vu-net-client") {
            let reason = backend.run(socketPath: path, client: true)
            outcome.state.withLock { $0 = (true, reason) }
        }
    }

    /// Whether its one connection ended, and why when badly.
    var ended: (Bool, String?) { outcome.state.withLock { ($0.ended, $0.reason) } }

    /// Waits up to `seconds` for the connection to end.
    func waitForEnd(seconds: Double) -> Bool {
        SnapshotBinaryTests.waitFor({ ended.0 }, seconds: seconds)
    }
}

@Suite("vhost-user across a reboot: the machine built in place of a reset one keeps the back-end connections")
struct VhostUserRebootTests {
    static func directory(_ name: String) throws -> String {
        let directory = NSTemporaryDirectory() + "\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    /// One activated vhost-user-blk device of a "machine": its memory, eventfds and event loop.
    struct Machine {
        let memory: GuestMemory
        let kick: EventFD
        let call: EventFD
        let events: EventManager

        init(_ device: VhostUserBlockDevice) throws {
            kick = try EventFD()
            call = try EventFD()
            let (kick, call) = (kick, call)
            device.setNotifiers(VhostUserNotifiers(kick: { _ in kick }, call: { _ in call.rawValue }))
            events = try EventManager()
            try events.start(name: "vu-reboot-events")
            try device.common.watch(events: events)
            let file = try OwnedFileDescriptor.memoryFile(name: "vu-reboot", size: 1 << 20)
            memory = try GuestMemory(regions: [GuestMemoryRegion(start: GuestAddress(0), mapping: MemoryMapping(file: file, size: 1 << 20, options: [.shared]))])
            device.acknowledgeFeatures(VirtioFeature.version1)
            try device.activate(memory: memory, queues: [try VhostUserReconnectTests.readyQueue(in: memory)], interrupt: SilentInterrupt())
        }

        func read(sector: UInt64, slot: UInt16) throws -> (status: UInt8, data: [UInt8]) {
            let status = try VhostUserReconnectTests.read(sector: sector, slot: slot, memory: memory, kick: kick, call: call)
            return (status, try memory.readBytes(count: 4, at: GuestAddress(0x10000)))
        }
    }

    @Test("a device built over the stopped machine's connection serves requests from new memory on the back-end's one connection; closing it ends that connection")
    func keptConnectionServesTheNewMachine() throws {
        let directory = try Self.directory("vu-reboot")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/blk.sock"
        let disk = MemoryBlockBackend(contents: (0..<8192).map { UInt8(truncatingIfNeeded: $0 / 512 &+ 7) })
        // This back-end accepts one connection and no other: a device that connected again would fail.
        let backend = try ListeningBackend(path: path, disk: disk)
        defer { backend.hangUp() }
        let config = try DiskConfig.parse("vhost_user=on,socket=\(path),queue_size=16")

        let old = try VhostUserBlockDevice(config: config, logger: Logger(label: "test"), connectTimeoutMilliseconds: 5000)
        let first = try Machine(old)
        #expect(try first.read(sector: 3, slot: 0) == (0, [10, 10, 10, 10]))

        // The reboot: the old machine stops and hands its connection over, once.
        let kept = try #require(old.common.detach())
        #expect(kept.frontend != nil && kept.listener == nil)
        #expect(old.common.detach() == nil)
        first.events.stop()

        let new = try VhostUserBlockDevice(config: config, logger: Logger(label: "test"), connectTimeoutMilliseconds: 500, kept: kept)
        let second = try Machine(new)
        defer { second.events.stop() }
        // The new guest's driver starts its ring from 0 in memory the back-end has not seen before.
        #expect(try second.read(sector: 5, slot: 0) == (0, [12, 12, 12, 12]))
        // The stopped machine's devices closing now touches nothing of the new machine's.
        old.common.close()
        #expect(try second.read(sector: 1, slot: 1) == (0, [8, 8, 8, 8]))
        #expect(backend.progress.withLock { $0.accepted } == 1 && !backend.progress.withLock { $0.ended })

        new.common.close()
        #expect(SnapshotBinaryTests.waitFor({ backend.progress.withLock { $0.ended } }, seconds: 10), "the back-end read the hang-up")
    }

    @Test("a client-mode connection whose back-end went away is not handed over: the rebuilt device connects afresh")
    func awayBackEndIsNotKept() throws {
        let directory = try Self.directory("vu-reboot-away")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/blk.sock"
        let backend = try ListeningBackend(path: path, disk: MemoryBlockBackend(contents: [UInt8](repeating: 1, count: 8192)))
        let device = try VhostUserBlockDevice(config: try DiskConfig.parse("vhost_user=on,socket=\(path),queue_size=16"),
                                              logger: Logger(label: "test"), connectTimeoutMilliseconds: 5000)
        let machine = try Machine(device)
        defer { machine.events.stop() }
        backend.hangUp()
        #expect(SnapshotBinaryTests.waitFor({ !device.common.isConnected }, seconds: 5), "the hang-up is noticed")
        #expect(device.common.detach() == nil)
    }

    @Test("with vhost_mode=server the listener goes with the connection; when the VM stops for good the back-end is hung up on and the socket file removed")
    func serverModeListenerIsKeptThenClosed() throws {
        let directory = try Self.directory("vu-reboot-server")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/net.sock"
        let backend = try ConnectingNetBackend(path: path)
        let config = try NetConfig.parse("vhost_user=on,socket=\(path),vhost_mode=server")
        let old = try VhostUserNetDevice(config: config, logger: Logger(label: "test"))
        let kept = try #require(old.common.detach())
        #expect(kept.frontend != nil && kept.listener != nil)
        old.common.close()
        #expect(FileManager.default.fileExists(atPath: path), "the stopped machine leaves the socket the new one listens on")
        #expect(UnixSocket.hasListener(at: path))

        let new = try VhostUserNetDevice(config: config, logger: Logger(label: "test"), kept: kept)
        #expect(new.common.isConnected && new.common.frontend === kept.frontend)
        #expect(!backend.ended.0)
        new.common.close()
        #expect(backend.waitForEnd(seconds: 10), "the back-end read the hang-up")
        #expect(backend.ended.1 == nil, "\(backend.ended.1 ?? "")")
        #expect(!FileManager.default.fileExists(atPath: path), "the socket file is removed")
    }

    @Test("connections no device took are closed")
    func leftOverConnectionsClose() throws {
        let directory = try Self.directory("vu-reboot-rest")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/net.sock"
        let backend = try ConnectingNetBackend(path: path)
        let device = try VhostUserNetDevice(config: try NetConfig.parse("vhost_user=on,socket=\(path),vhost_mode=server"), logger: Logger(label: "test"))
        let kept = KeptVhostUserBackends()
        kept.keep(try #require(device.common.detach()), socket: path)
        #expect(kept.sockets == [path])
        kept.closeRest()
        #expect(kept.sockets.isEmpty && kept.take(socket: path) == nil)
        #expect(backend.waitForEnd(seconds: 10), "the back-end read the hang-up")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a guest that resets again and again keeps its virtio-fs (VMM as client) and vhost-user-net (vhost_mode=server) back-ends: one connection each, open until the VMM ends",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func resettingGuestKeepsItsBackEnds() throws {
        let work = try Self.directory("ch-vu-reboot")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/resetter.elf"
        try Data(TinyKernel.pvhELF(code: MigrationBinaryTests.resetter)).write(to: URL(fileURLWithPath: kernel))
        let fs = try ListeningFsBackend(path: work + "/fs.sock")
        let net = try ConnectingNetBackend(path: work + "/net.sock")
        let vmm = try SnapshotBinaryTests.start(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=32M,shared=on",
                                                 "--fs", "tag=shared,socket=\(work)/fs.sock",
                                                 "--net", "vhost_user=on,socket=\(work)/net.sock,vhost_mode=server,mac=52:54:00:00:00:42",
                                                 "--api-socket", "path=\(work)/api.sock"],
                                                output: work + "/out", log: work + "/log")
        defer { SnapshotBinaryTests.kill(vmm) }
        // Each boot prints R and resets: three boots are two reboots. Without them the VMM may
        // be stuck in a reboot (waiting on a back-end) and would not answer the API: stop here.
        try #require(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(work + "/out").contains("RRR") }, seconds: 30),
                     "\(SnapshotBinaryTests.contents(work + "/out")) \(SnapshotBinaryTests.contents(work + "/log"))")
        let log = SnapshotBinaryTests.contents(work + "/log")
        try #require(!log.contains("reboot failed") && vmm.isRunning, "\(log)")
        #expect(log.contains("keeping the vhost-user back-end connection(s) at \(work)/fs.sock, \(work)/net.sock"), "\(log)")
        #expect(fs.accepted && !fs.ended, "the virtio-fs back-end serves its one connection")
        #expect(!net.ended.0, "the vhost-user-net back-end serves its one connection: \(net.ended.1 ?? "")")
        #expect(try APILifecycleTests.state(work + "/api.sock") == "Running")

        SnapshotBinaryTests.kill(vmm)
        #expect(fs.waitForEnd(seconds: 10) && net.waitForEnd(seconds: 10), "both back-ends read the hang-up once the VMM is gone")
    }
}
