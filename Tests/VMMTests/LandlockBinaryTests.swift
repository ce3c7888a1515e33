import Foundation
import HostSystem
import HypervisorTesting
import Testing

/// `--landlock` on the real binary: once the VM is created, the VMM reaches only the files its
/// configuration and `--landlock-rules` name. A snapshot (the VMM opens the destination
/// directory's files after start-up) into a directory outside the rules fails with a
/// permission error naming the path; one into a `--landlock-rules` directory succeeds; the
/// named files (the kernel and serial file on reboot, the snapshot directory on restore) still open.
@Suite("cloud-hypervisor --landlock", .serialized)
struct LandlockBinaryTests {
    static let landlockABI = try? Landlock.supportedABI()
    static let usable = BinaryTests.kvmAvailable && landlockABI != nil

    /// mov dx,0x3f8; mov al,'!'; out dx,al; 1: hlt; jmp 1b   (prints, then idles for ever)
    static let printAndIdle: [UInt8] = [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xF4, 0xEB, 0xFD]

    /// A scratch directory with `allowed/` and `outside/` folders and the tiny kernel.
    static func workspace(_ name: String) throws -> String {
        let work = NSTemporaryDirectory() + "ch-landlock-\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        for folder in ["allowed", "outside"] {
            try FileManager.default.createDirectory(atPath: work + "/" + folder, withIntermediateDirectories: true)
        }
        try Data(TinyKernel.pvhELF(code: printAndIdle)).write(to: URL(fileURLWithPath: work + "/kernel.elf"))
        return work
    }

    static func waitForSocket(_ path: String) {
        _ = SnapshotBinaryTests.waitFor({ FileManager.default.fileExists(atPath: path) }, seconds: 10)
    }

    /// Pauses the VM behind `socket`, snapshots it into `outside` (refused: a permission error
    /// naming the path) and into `allowed` (written).
    static func snapshotOutsideAndInside(_ socket: String, work: String) throws {
        try APILifecycleTests.chRemote(socket, ["pause"])
        let refused = try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/outside"], expect: 1)
        #expect(refused.contains("\(work)/outside/") && refused.contains("Permission denied"), "\(refused)")
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: work + "/outside")) ?? []
        #expect(leftovers.isEmpty, "nothing written outside the rules: \(leftovers)")
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/allowed"])
        for file in ["config.json", "state.json", "memory-ranges"] {
            #expect(FileManager.default.fileExists(atPath: "\(work)/allowed/\(file)"), "\(file) written into the --landlock-rules directory")
        }
    }

    /// Each thread's name and its `NoNewPrivs` bit (`/proc/<pid>/task/<tid>/status`). Enforcing a
    /// Landlock ruleset sets the bit on the thread first; with `--seccomp false` nothing else does,
    /// so the bit shows which threads went through Landlock (or started from one that did).
    static func noNewPrivs(_ pid: Int32) -> [String: Int] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var result: [String: Int] = [:]
        for tid in tasks {
            let comm = SnapshotBinaryTests.contents("/proc/\(pid)/task/\(tid)/comm").trimmingCharacters(in: .whitespacesAndNewlines)
            let status = SnapshotBinaryTests.contents("/proc/\(pid)/task/\(tid)/status")
            let line = status.split(separator: "\n").first { $0.hasPrefix("NoNewPrivs:") }
            result[comm] = line.flatMap { Int($0.split(separator: "\t").last ?? "") } ?? -1
        }
        return result
    }

    @Test("--landlock with a VM on the command line: a snapshot outside the rules is refused, one into --landlock-rules works, reboot and restore reopen the named files",
          .enabled(if: usable, "skipped: needs /dev/kvm and a host kernel with Landlock"))
    func commandLineVM() throws {
        let work = try Self.workspace("cli")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let socket = work + "/api.sock", serial = work + "/serial"
        let vmm = try SnapshotBinaryTests.start(
            ["-v", "--landlock", "--landlock-rules", "path=\(work)/allowed,access=rw", "--kernel", work + "/kernel.elf",
             "--serial", "file=\(serial)", "--console", "off", "--memory", "size=32M", "--api-socket", "path=\(socket)"],
            log: work + "/vmm.log")
        defer { SnapshotBinaryTests.kill(vmm) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial) == "!" }, seconds: 60),
                "the guest wrote to its serial file: \(SnapshotBinaryTests.contents(work + "/vmm.log"))")
        #expect(SnapshotBinaryTests.contents(work + "/vmm.log").contains("Landlock ABI \(Self.landlockABI ?? 0)"))
        let info = try APILifecycleTests.chRemote(socket, ["info"])
        #expect(info.contains("\"landlock_enable\":true") || info.contains("\"landlock_enable\": true"), "\(info)")

        // A reboot opens the kernel and the serial file again: both are named, both still open.
        try APILifecycleTests.chRemote(socket, ["reboot"])
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial) == "!!" }, seconds: 60),
                "the rebooted guest wrote again: \(SnapshotBinaryTests.contents(serial))")
        try Self.snapshotOutsideAndInside(socket, work: work)
        SnapshotBinaryTests.kill(vmm)

        // The snapshot's configuration keeps landlock_enable: the restored VMM is sandboxed too,
        // reads its snapshot directory, reopens the serial file, and refuses the outside directory again.
        try? FileManager.default.removeItem(atPath: socket)
        let restoredSnapshot = work + "/allowed"
        let restored = try SnapshotBinaryTests.start(
            ["-v", "--restore", "source_url=file://\(restoredSnapshot)", "--api-socket", "path=\(socket)"], log: work + "/restore.log")
        defer { SnapshotBinaryTests.kill(restored) }
        Self.waitForSocket(socket)
        #expect(SnapshotBinaryTests.waitFor({ (try? APILifecycleTests.state(socket)) == "Paused" }, seconds: 30),
                "restored: \(SnapshotBinaryTests.contents(work + "/restore.log"))")
        let again = try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/outside"], expect: 1)
        #expect(again.contains("Permission denied"), "\(again)")
    }

    @Test("--landlock with vm.create through the API: the API worker is sandboxed at create, a snapshot outside the rules is refused",
          .enabled(if: usable, "skipped: needs /dev/kvm and a host kernel with Landlock"))
    func apiCreatedVM() throws {
        let work = try Self.workspace("api")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let socket = work + "/api.sock", serial = work + "/serial"
        let vmm = try SnapshotBinaryTests.start(["-v", "--seccomp", "false", "--landlock", "--api-socket", "path=\(socket)"], log: work + "/vmm.log")
        defer { SnapshotBinaryTests.kill(vmm) }
        Self.waitForSocket(socket)
        let config = #"{"memory":{"size":33554432},"payload":{"kernel":"\#(work)/kernel.elf"},"serial":{"mode":"File","file":"\#(serial)"},"console":{"mode":"Off"},"landlock_enable":true,"landlock_rules":[{"path":"\#(work)/allowed","access":"rw"}]}"#
        try config.write(toFile: work + "/config.json", atomically: true, encoding: .utf8)
        try APILifecycleTests.chRemote(socket, ["create", work + "/config.json"])
        let info = try APILifecycleTests.chRemote(socket, ["info"])
        #expect(info.contains("\(work)/allowed"), "vm.info echoes landlock_rules: \(info)")
        try APILifecycleTests.chRemote(socket, ["boot"])
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial) == "!" }, seconds: 60),
                "the guest wrote to its serial file: \(SnapshotBinaryTests.contents(work + "/vmm.log"))")
        // Every thread went through Landlock: the worker (vm.create), the main thread (its
        // mailbox), the API event loop and the signal thread (--landlock), and the VM's threads
        // (started by the worker).
        let threads = Self.noNewPrivs(vmm.processIdentifier)
        for name in ["cloud-hyperviso", "ch-signals", "ch-api", "ch-api-worker", "vcpu0", "ch-event-loop", "ch-vm-watch"] {
            #expect(threads[name] == 1, "\(name) in \(threads)")
        }
        try Self.snapshotOutsideAndInside(socket, work: work)
        try APILifecycleTests.chRemote(socket, ["shutdown-vmm"])
        #expect(SnapshotBinaryTests.waitFor({ !vmm.isRunning }, seconds: 30))
        #expect(vmm.terminationStatus == 0, "\(SnapshotBinaryTests.contents(work + "/vmm.log"))")
    }

    @Test("without --landlock (and without seccomp) no thread has NoNewPrivs and the same outside snapshot works: the refusals above are Landlock's",
          .enabled(if: usable, "skipped: needs /dev/kvm and a host kernel with Landlock"))
    func withoutLandlock() throws {
        let work = try Self.workspace("off")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let socket = work + "/api.sock", serial = work + "/serial"
        let vmm = try SnapshotBinaryTests.start(["--seccomp", "false", "--kernel", work + "/kernel.elf", "--serial", "file=\(serial)",
                                                 "--console", "off", "--memory", "size=32M", "--api-socket", "path=\(socket)"],
                                                log: work + "/vmm.log")
        defer { SnapshotBinaryTests.kill(vmm) }
        #expect(SnapshotBinaryTests.waitFor({ SnapshotBinaryTests.contents(serial) == "!" }, seconds: 60))
        let threads = Self.noNewPrivs(vmm.processIdentifier)
        #expect(threads.count >= 6 && threads.values.allSatisfy { $0 == 0 }, "no thread restricted: \(threads)")
        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/outside"])
        #expect(FileManager.default.fileExists(atPath: "\(work)/outside/state.json"))
    }
}
