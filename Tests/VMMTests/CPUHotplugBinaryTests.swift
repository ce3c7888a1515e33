import Foundation
import HypervisorTesting
import Testing
@testable import VMM

/// vCPU hotplug through `ch-remote resize --cpus` on a real KVM VM (a tiny counting guest that
/// never starts its application processors): the VMM starts a thread per added vCPU, vm.info's
/// `boot_vcpus` follows, a snapshot holds every present vCPU and a restore brings them all
/// back; a removal the guest never ejects blocks the next resize and a snapshot with the reason.
@Suite("vCPU hotplug (cloud-hypervisor + ch-remote)", .serialized)
struct CPUHotplugBinaryTests {
    /// The names of the VMM's vCPU threads (`vcpuN`).
    static func vcpuThreads(_ vmm: Process) -> [String] {
        let tasks = "/proc/\(vmm.processIdentifier)/task"
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []
        return ids.compactMap { id in
            let name = SnapshotBinaryTests.contents("\(tasks)/\(id)/comm").trimmingCharacters(in: .whitespacesAndNewlines)
            return name.hasPrefix("vcpu") ? name : nil
        }.sorted()
    }

    static func bootVCPUs(_ socket: String) throws -> Int? {
        let info = try APILifecycleTests.chRemote(socket, ["info"])
        guard let object = try? JSONSerialization.jsonObject(with: Data(info.utf8)) as? [String: Any],
              let config = object["config"] as? [String: Any], let cpus = config["cpus"] as? [String: Any] else { return nil }
        return cpus["boot_vcpus"] as? Int
    }

    @Test("resize --cpus grows a running VM; the snapshot and the restore hold every present vCPU; an unejected removal blocks",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func growSnapshotRestoreAndPendingRemoval() throws {
        let work = NSTemporaryDirectory() + "ch-cpuhp-test-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock", socket2 = work + "/api2.sock"
        try Data(TinyKernel.pvhELF(code: SnapshotBinaryTests.counter)).write(to: URL(fileURLWithPath: kernel))

        let first = try SnapshotBinaryTests.start(["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off",
                                                   "--cpus", "boot=1,max=3", "--memory", "size=32M", "--api-socket", "path=\(socket)"],
                                                  log: work + "/first.log")
        defer { SnapshotBinaryTests.kill(first) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= 8 }, seconds: 60),
                "the guest counted: \(SnapshotBinaryTests.contents(work + "/first.log"))")
        #expect(Self.vcpuThreads(first) == ["vcpu0"])
        #expect(try APILifecycleTests.chRemote(socket, ["resize", "--cpus", "4"], expect: 1).contains("above max_vcpus"))
        try APILifecycleTests.chRemote(socket, ["resize", "--cpus", "3"])
        #expect(SnapshotBinaryTests.waitFor({ Self.vcpuThreads(first).count == 3 }, seconds: 10), "\(Self.vcpuThreads(first))")
        #expect(try Self.bootVCPUs(socket) == 3)
        try APILifecycleTests.chRemote(socket, ["resize", "--cpus", "3"])  // the current count: nothing changes
        #expect(Self.vcpuThreads(first).count == 3)

        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"])
        SnapshotBinaryTests.kill(first)
        let before = try #require(SnapshotBinaryTests.counts(SnapshotBinaryTests.contents(serial)))
        let config = SnapshotBinaryTests.contents("\(work)/snap/config.json")
        #expect(config.contains("\"boot_vcpus\":3"), "\(config)")
        let state = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(work)/snap/state.json"))) as? [String: Any])
        let sections = state["snapshots"] as? [String: Any]
        let cpus = (sections?.values.compactMap { ($0 as? [String: Any])?["snapshots"] as? [String: Any] }
            .first { $0.keys.contains("0") })?.keys.sorted()
        #expect(cpus == ["0", "1", "2"], "the vCPU states in state.json: \(String(describing: cpus))")

        let start = SnapshotBinaryTests.contents(serial).utf8.count
        let restored = try SnapshotBinaryTests.start(["-v", "--api-socket", "path=\(socket2)", "--restore", "source_url=file://\(work)/snap,resume=on"],
                                                     log: work + "/restore.log")
        defer { SnapshotBinaryTests.kill(restored) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial).utf8.count >= start + 8 }, seconds: 60),
                "restore: \(SnapshotBinaryTests.contents(work + "/restore.log"))")
        let after = try #require(SnapshotBinaryTests.counts(String(SnapshotBinaryTests.contents(serial).dropFirst(start))))
        #expect(after.first == before.count + 1, "the count goes on: \(after.prefix(4)) after \(before.count)")
        #expect(Self.vcpuThreads(restored).count == 3, "\(Self.vcpuThreads(restored))")
        #expect(try Self.bootVCPUs(socket2) == 3)

        // The tiny guest has no ACPI interpreter: vCPU 2 is marked for removal and never ejected.
        try APILifecycleTests.chRemote(socket2, ["resize", "--cpus", "2"])
        #expect(try Self.bootVCPUs(socket2) == 2)
        #expect(Self.vcpuThreads(restored).count == 3, "the thread runs until the guest ejects the vCPU")
        #expect(try APILifecycleTests.chRemote(socket2, ["resize", "--cpus", "1"], expect: 1).contains("still being removed"))
        try APILifecycleTests.chRemote(socket2, ["pause"])
        #expect(try APILifecycleTests.chRemote(socket2, ["snapshot", "file://\(work)/snap2"], expect: 1).contains("has not ejected it yet"))
    }
}
