import Devices
import Foundation
import GuestMemory
import HostSystem
import Hypervisor
import HypervisorTesting
import Logging
import Synchronization
import Testing
import VhostUser
import VhostUserBackend
import VirtioDevices
import VirtioQueue
@testable import VMM

/// The virtio-fs shape a back-end serves here: the hiprio queue and one request queue (no
/// file system behind them: these tests stop before a driver would use the queues).
private final class FsShape: VirtioDevice, Sendable {
    let deviceType = VirtioDeviceType.fs
    let features: UInt64 = 0
    let queueMaxSizes: [UInt16] = [1024, 1024]
    func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {}
    func reset() {}
    func processQueue(_ index: Int) throws(VirtioDeviceError) {}
}

/// This package's vhost-user back-end serving ``FsShape`` at a path, for one connection, on a
/// thread of its own (left to finish by itself: it ends when the front-end hangs up).
final class ListeningFsBackend: Sendable {
    /// What the serving thread saw.
    private final class Progress: Sendable {
        let state = Mutex<(accepted: Bool, ended: Bool)>((false, false))
    }

    let path: String
    private let listener: UnixSocket
    private let progress = Progress()
    private let thread: HostThread

    init(path: String) throws {
        self.path = path
        unlink(path)
        let listener = try UnixSocket.listening(at: path, backlog: 1)
        self.listener = listener
        let backend = try VhostUserDeviceBackend(device: FsShape(), protocolFeatures: [.multiQueue, .replyAck])
        let progress = progress
        /// Serves one connection; its descriptor closes on return.
        @Sendable func serveOne() -> Bool {
            guard (try? listener.wait(for: .readable, timeoutMilliseconds: 30_000)) == true,
                  let socket = try? listener.accept() else { return false }
            progress.state.withLock { $0.accepted = true }
            _ = backend.serve(socket)
            return true
        }
        thread = try HostThread(name: "vu-fs-backend") {
            if serveOne() { progress.state.withLock { $0.ended = true } }
        }
    }

    /// Whether a front-end connected.
    var accepted: Bool { progress.state.withLock { $0.accepted } }
    /// Whether the front-end's connection ended (the back-end read its hang-up and closed its end).
    var ended: Bool { progress.state.withLock { $0.ended } }

    /// Waits up to `seconds` for the connection to end.
    func waitForEnd(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !ended, Date() < deadline { usleep(10_000) }
        return ended
    }

    deinit {
        // Wakes a thread still waiting for a front-end.
        Glibc.shutdown(listener.rawValue, Int32(SHUT_RDWR))
        unlink(path)
    }
}

/// What this process's descriptor `fd` is (`socket:[inode]` for a socket).
private func link(_ fd: Int32) -> String? { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") }

/// Whether any descriptor of this process is `name` (tests run alongside, so a socket is
/// followed by its inode, not by a count).
private func isOpen(_ name: String) -> Bool {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.contains { Int32($0).flatMap(link) == name }
}

/// virtio-fs hotplug on a machine built on /dev/kvm (not run: the guest's ejection is played
/// by writing the hotplug registers as its `_EJ0` would), against this package's back-end.
@Suite("virtio-fs PCI hotplug on a built machine", .enabled(if: BinaryTests.kvmAvailable, "needs /dev/kvm"))
struct FsHotplugTests {
    @Test("a hot-added virtio-fs device connects to its back-end and gets a slot and BAR; the guest's B0EJ write gives them back and closes the connection")
    func addEjectAndAddAgain() throws {
        let directory = NSTemporaryDirectory() + "fshp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let events = try EventManager()
        defer { events.stop() }
        let built = try PCIHotplugTests.machine(events: events) { $0.memory.shared = true }
        let support = try #require(built.pciHotplug)
        let registers = try #require(built.deviceManager.device(id: "pci-hotplug")?.resources.mmio.first?.base)
        #expect(built.deviceManager.pciSlots == ["_rng": 1])

        let backend = try ListeningFsBackend(path: directory + "/fs0.sock")
        let placed = try built.hotAddFs(FsConfig(tag: "hotfs", socket: backend.path), id: "_fs0")
        #expect(placed.slot == 2 && placed.bdf == "0000:00:02.0")
        #expect(backend.accepted)
        // The VMM's end of the connection, found through the function on the bus.
        let connection = try #require({ () -> String? in
            let transport = built.pciSegment.bus.device(at: 2) as? VirtioPCIDevice
            let channel = (transport?.device as? VhostUserFsDevice)?.common.frontend.channel as? UnixVhostUserChannel
            return channel.flatMap { link($0.socket.rawValue) }
        }())
        #expect(connection.hasPrefix("socket:"))
        // (The entry's closures hold the device: this test lets go of it before the ejection.)
        let bar: UInt64 = try {
            let device = try #require(built.deviceManager.device(id: "_fs0"))
            #expect(device.kind == "virtio-fs" && device.unplug != nil)
            // Its state cannot be saved (the back-end holds it): snapshot and migration are refused.
            #expect(throws: VMMError.self) { _ = try device.saveState?() }
            return try #require(device.resources.mmio.first?.base)
        }()
        #expect(built.deviceManager.deviceTree["_fs0"]?.pciBDF == "0000:00:02.0")
        #expect(built.pciSegment.bus.device(at: 2) != nil)
        #expect(support.controller.pending(segment: 0).up == 1 << 2)
        #expect(support.ged.pendingEvents.contains(.pciHotplug))
        #expect(built.mmio.resolve(bar) != nil)

        try built.requestRemoval(id: "_fs0")
        #expect(support.controller.pending(segment: 0).down == 1 << 2)
        #expect(!backend.ended, "the connection stays until the guest ejects the device")
        // The guest's PCEJ: PSEG = 0, then B0EJ = 1 << slot.
        #expect(built.mmio.write(address: registers + 12, size: 4, value: 0))
        #expect(built.mmio.write(address: registers + 8, size: 4, value: 1 << 2))
        #expect(built.deviceManager.device(id: "_fs0") == nil)
        #expect(built.pciSegment.bus.device(at: 2) == nil)
        #expect(built.mmio.resolve(bar) == nil)
        #expect(backend.waitForEnd(seconds: 10), "the back-end read the hang-up")
        #expect(!isOpen(connection), "the VMM's end of the connection is closed")

        // The slot and the BAR are reused by the next one, on a new back-end.
        let second = try ListeningFsBackend(path: directory + "/fs1.sock")
        let again = try built.hotAddFs(FsConfig(tag: "hotfs", socket: second.path), id: "_fs0")
        #expect(again.slot == 2)
        #expect(built.deviceManager.device(id: "_fs0")?.resources.mmio.first?.base == bar)
        #expect(second.accepted)
    }

    @Test("the configuration pins virtio-fs ids and PCI slots with the others, and pci_device_id places --fs")
    func pinning() throws {
        var config = VMConfig()
        config.memory.shared = true
        config.fs = [FsConfig(tag: "a", socket: "/a"), FsConfig(tag: "b", socket: "/b")]
        config.pinDevices(slots: ["_fs0": 3, "_fs1": 4])
        #expect(config.fs?.map(\.pci.id) == ["_fs0", "_fs1"])
        #expect(config.fs?.map(\.pci.pciDeviceID) == [3, 4])
        config.fs?.remove(at: 0)
        #expect(config.fsIDs == ["_fs1"])
        #expect(config.absentFeatures.isEmpty, "pci_device_id is honoured for --fs")
        #expect(config.pciSegment(ofDevice: "_fs1") == 0 && config.pciSegment(ofDevice: "_fs0") == nil)
        #expect(config.pciDeviceIDs == ["_fs1"])
    }
}

/// `ch-remote add-fs` / `remove-device` on a real KVM VM (the tiny counting guest, which has no
/// ACPI interpreter and never ejects anything), against this package's back-end.
@Suite("virtio-fs hotplug (cloud-hypervisor + ch-remote)", .serialized)
struct FsHotplugBinaryTests {
    @Test("add-fs on a running VM answers _fs0 and its BDF, vm.info has it, a snapshot is refused naming it, remove-device drops it; without shared=on it is refused with Cloud Hypervisor's reason",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func addRemoveAndRefusals() throws {
        let work = NSTemporaryDirectory() + "ch-fshp-test-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock"
        try Data(TinyKernel.pvhELF(code: SnapshotBinaryTests.counter)).write(to: URL(fileURLWithPath: kernel))

        // Private guest memory: the back-end could not map it.
        let plain = try SnapshotBinaryTests.start(["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off",
                                                   "--memory", "size=32M", "--api-socket", "path=\(socket)"], log: work + "/plain.log")
        defer { SnapshotBinaryTests.kill(plain) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 8 }, seconds: 60),
                "the guest counted: \(SnapshotBinaryTests.contents(work + "/plain.log"))")
        let refused = try APILifecycleTests.chRemote(socket, ["add-fs", "tag=hotfs,socket=\(work)/none.sock"], expect: 1)
        #expect(refused.contains("Using vhost-user requires using shared memory or huge pages"), "\(refused)")
        SnapshotBinaryTests.kill(plain)

        let shared = try SnapshotBinaryTests.start(["-v", "--kernel", kernel, "--serial", "file=\(serial)2", "--console", "off",
                                                    "--memory", "size=32M,shared=on", "--api-socket", "path=\(socket)"], log: work + "/shared.log")
        defer { SnapshotBinaryTests.kill(shared) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial + "2").utf8.count >= 8 }, seconds: 60),
                "the guest counted: \(SnapshotBinaryTests.contents(work + "/shared.log"))")
        let backend = try ListeningFsBackend(path: work + "/fs.sock")
        let added = try APILifecycleTests.chRemote(socket, ["add-fs", "tag=hotfs,socket=\(backend.path)"])
        #expect(added.contains("\"id\":\"_fs0\"") && added.contains("\"bdf\":\"0000:00:02.0\""), "\(added)")
        #expect(backend.accepted)
        let info = try APILifecycleTests.chRemote(socket, ["info"])
        for fragment in ["\"tag\":\"hotfs\"", "\"id\":\"_fs0\"", "\"pci_device_id\":2", "\"pci_bdf\":\"0000:00:02.0\""] {
            #expect(info.contains(fragment), "vm.info lacks \(fragment): \(info)")
        }
        try APILifecycleTests.chRemote(socket, ["pause"])
        let snapshot = try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)"], expect: 1)
        #expect(snapshot.contains("_fs0 is a virtio-fs device"), "\(snapshot)")
        try APILifecycleTests.chRemote(socket, ["resume"])
        // The removal leaves the configuration at once; the device waits for the guest's ejection.
        try APILifecycleTests.chRemote(socket, ["remove-device", "_fs0"])
        let after = try APILifecycleTests.chRemote(socket, ["info"])
        #expect(!after.contains("\"fs\":") && after.contains("\"_fs0\""), "\(after)")
        #expect(try APILifecycleTests.chRemote(socket, ["remove-device", "_fs0"], expect: 1).contains("_fs0"))
    }
}
