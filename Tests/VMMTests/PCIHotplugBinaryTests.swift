import Foundation
import HypervisorTesting
import Testing
@testable import VMM

/// PCI hotplug through `ch-remote add-disk` / `remove-device` on a real KVM VM (a tiny counting
/// guest with no ACPI interpreter, so it never ejects anything): the hot-added disk gets Cloud
/// Hypervisor's next id and a slot, the configuration records it, and a snapshot restored in a
/// new VMM brings it back at the same PCI address.
@Suite("PCI hotplug (cloud-hypervisor + ch-remote)", .serialized)
struct PCIHotplugBinaryTests {
    /// vm.info's configuration disks (path, id, pci_device_id) and device tree (id: BDF).
    static func info(_ socket: String) throws -> (disks: [String], tree: [String: String]) {
        let text = try APILifecycleTests.chRemote(socket, ["info"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let config = object["config"] as? [String: Any]
        let disks = (config?["disks"] as? [[String: Any]] ?? []).map { disk in
            "\(URL(fileURLWithPath: disk["path"] as? String ?? "").lastPathComponent) \(disk["id"] as? String ?? "-") \(disk["pci_device_id"].map { "\($0)" } ?? "-")"
        }
        var tree: [String: String] = [:]
        for (id, node) in object["device_tree"] as? [String: Any] ?? [:] {
            if let bdf = (node as? [String: Any])?["pci_bdf"] as? String { tree[id] = bdf }
        }
        return (disks, tree)
    }

    @Test("add-disk hot-adds _disk1 on a running VM; a snapshot restored in a new VMM has it at the same address; an unknown id is refused",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func addSnapshotRestore() throws {
        let work = NSTemporaryDirectory() + "ch-pcihp-test-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock", socket2 = work + "/api2.sock"
        try Data(TinyKernel.pvhELF(code: SnapshotBinaryTests.counter)).write(to: URL(fileURLWithPath: kernel))
        for name in ["boot.raw", "hot.raw"] {
            #expect(FileManager.default.createFile(atPath: "\(work)/\(name)", contents: Data(count: 1 << 20)))
        }

        let first = try SnapshotBinaryTests.start(["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off",
                                                   "--memory", "size=32M", "--disk", "path=\(work)/boot.raw", "--api-socket", "path=\(socket)"],
                                                  log: work + "/first.log")
        defer { SnapshotBinaryTests.kill(first) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 8 }, seconds: 60),
                "the guest counted: \(SnapshotBinaryTests.contents(work + "/first.log"))")
        let added = try APILifecycleTests.chRemote(socket, ["add-disk", "path=\(work)/hot.raw"])
        #expect(added.contains("\"id\":\"_disk1\"") && added.contains("\"bdf\":\"0000:00:03.0\""), "\(added)")
        var info = try Self.info(socket)
        #expect(info.disks == ["boot.raw _disk0 2", "hot.raw _disk1 3"])
        #expect(info.tree["_disk1"] == "0000:00:03.0" && info.tree["_disk0"] == "0000:00:02.0")
        // The image is the VM's now: adding it again is refused.
        _ = try APILifecycleTests.chRemote(socket, ["add-disk", "path=\(work)/hot.raw"], expect: 1)
        #expect(try APILifecycleTests.chRemote(socket, ["remove-device", "_nope"], expect: 1).contains("_nope"))
        // Only segment 0 has the hotplug controller and slots.
        #expect(try APILifecycleTests.chRemote(socket, ["add-disk", "path=\(work)/boot.raw,pci_segment=1"], expect: 1)
            .contains("PCI hotplug on segments other than 0"))

        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"])
        SnapshotBinaryTests.kill(first)
        let before = try #require(SnapshotBinaryTests.counts(SnapshotBinaryTests.contents(serial)))

        let start = SnapshotBinaryTests.contents(serial).utf8.count
        let restored = try SnapshotBinaryTests.start(["-v", "--api-socket", "path=\(socket2)", "--restore", "source_url=file://\(work)/snap,resume=on"],
                                                     log: work + "/restore.log")
        defer { SnapshotBinaryTests.kill(restored) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= start + 8 }, seconds: 60),
                "restore: \(SnapshotBinaryTests.contents(work + "/restore.log"))")
        let after = try #require(SnapshotBinaryTests.counts(String(SnapshotBinaryTests.contents(serial).dropFirst(start))))
        #expect(after.first == before.count + 1, "the count goes on: \(after.prefix(4)) after \(before.count)")
        info = try Self.info(socket2)
        #expect(info.disks == ["boot.raw _disk0 2", "hot.raw _disk1 3"])
        #expect(info.tree["_disk1"] == "0000:00:03.0")

        // A removal leaves the configuration at once; the device stays until the guest ejects it
        // (this guest never does), and its id cannot be removed twice.
        try APILifecycleTests.chRemote(socket2, ["remove-device", "_disk1"])
        info = try Self.info(socket2)
        #expect(info.disks == ["boot.raw _disk0 2"])
        #expect(info.tree["_disk1"] == "0000:00:03.0")
        #expect(try APILifecycleTests.chRemote(socket2, ["remove-device", "_disk1"], expect: 1).contains("_disk1"))
        // Its state would not fit the configuration: a snapshot waits for the ejection.
        try APILifecycleTests.chRemote(socket2, ["pause"])
        #expect(try APILifecycleTests.chRemote(socket2, ["snapshot", "file://\(work)/snap2"], expect: 1).contains("has not ejected it yet"))
    }

    @Test("add-net (a TAP the VMM creates), add-pmem and add-vsock on a running VM answer Cloud Hypervisor's ids and the next slots; remove-device drops them from the configuration",
          .enabled(if: BinaryTests.kvmAvailable && tapUsable, "skipped: needs /dev/kvm and CAP_NET_ADMIN"))
    func netPmemVsock() throws {
        let work = NSTemporaryDirectory() + "ch-pcihp-kinds-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock"
        try Data(TinyKernel.pvhELF(code: SnapshotBinaryTests.counter)).write(to: URL(fileURLWithPath: kernel))
        #expect(FileManager.default.createFile(atPath: work + "/pmem", contents: Data(count: 2 << 20)))
        let vmm = try SnapshotBinaryTests.start(["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off",
                                                 "--memory", "size=32M", "--api-socket", "path=\(socket)"], log: work + "/vmm.log")
        defer { SnapshotBinaryTests.kill(vmm) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 8 }, seconds: 60),
                "the guest counted: \(SnapshotBinaryTests.contents(work + "/vmm.log"))")
        let tap = "chph\(getpid() % 100_000)"
        let net = try APILifecycleTests.chRemote(socket, ["add-net", "tap=\(tap),ip=10.213.11.1,mask=255.255.255.0"])
        #expect(net.contains("\"id\":\"_net0\"") && net.contains("\"bdf\":\"0000:00:02.0\""), "\(net)")
        #expect(FileManager.default.fileExists(atPath: "/sys/class/net/\(tap)"))
        let pmem = try APILifecycleTests.chRemote(socket, ["add-pmem", "file=\(work)/pmem"])
        #expect(pmem.contains("\"id\":\"_pmem0\"") && pmem.contains("\"bdf\":\"0000:00:03.0\""), "\(pmem)")
        let vsock = try APILifecycleTests.chRemote(socket, ["add-vsock", "cid=3,socket=\(work)/vsock"])
        #expect(vsock.contains("\"id\":\"_vsock0\"") && vsock.contains("\"bdf\":\"0000:00:04.0\""), "\(vsock)")
        #expect(FileManager.default.fileExists(atPath: work + "/vsock"))
        _ = try APILifecycleTests.chRemote(socket, ["add-vsock", "cid=4,socket=\(work)/vsock2"], expect: 1)
        let info = try APILifecycleTests.chRemote(socket, ["info"])
        for fragment in ["\"pci_bdf\":\"0000:00:02.0\"", "\"_pmem0\"", "\"_vsock0\"", "\"tap\":\"\(tap)\""] {
            #expect(info.contains(fragment), "vm.info lacks \(fragment): \(info)")
        }
        for id in ["_net0", "_pmem0", "_vsock0"] { try APILifecycleTests.chRemote(socket, ["remove-device", id]) }
        let after = try APILifecycleTests.chRemote(socket, ["info"])
        #expect(!after.contains("\"net\":") && !after.contains("\"pmem\":") && !after.contains("\"vsock\":"), "\(after)")
    }
}
