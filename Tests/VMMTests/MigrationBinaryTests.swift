import Foundation
import HostSystem
import HypervisorTesting
import Testing
@testable import VMM

/// Live migration as a user runs it: a tiny guest counts on its serial port under one
/// `cloud-hypervisor`, `ch-remote receive-migration` waits on another, `ch-remote
/// send-migration` moves the VM over `unix:`, `tcp:` and `local=on`: the count goes on in the
/// destination with no gap and no reset, and the source VMM exits. A destination that dies
/// mid-way leaves the source running.
@Suite("live migration (cloud-hypervisor + ch-remote)", .serialized)
struct MigrationBinaryTests {
    typealias Snapshots = SnapshotBinaryTests

    /// Runs `ch-remote` without waiting.
    static func chRemoteInBackground(_ socket: String, _ arguments: [String], log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: APILifecycleTests.remote)
        process.arguments = ["--api-socket", socket] + arguments
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        return process
    }

    /// An empty directory at `path` (removed first if it exists).
    static func freshDirectory(_ path: String) throws {
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// A hand-driven destination: accepts the sender, answers Start and Config OK, and returns
    /// the connection with the first Memory request read (its payload not yet).
    static func fakeDestinationUntilMemory(_ listener: UnixSocket) throws -> (MigrationChannel, MigrationRequest) {
        let connection = try #require(try listener.accept())
        try connection.descriptor.setNonBlocking(false)
        let peer = MigrationChannel(unix: connection)
        #expect(try peer.receiveRequest().command == .start)
        try peer.send(MigrationResponse(.ok))
        let config = try peer.receiveRequest()
        #expect(config.command == .config)
        _ = try peer.read(Int(config.length))
        try peer.send(MigrationResponse(.ok))
        return (peer, try peer.receiveRequest())
    }

    static func waitForExit(_ process: Process, seconds: Double) -> Bool {
        Snapshots.waitFor({ !process.isRunning }, seconds: seconds)
    }

    /// Migrates a counting guest from one VMM to a new one over `url` (with `local`, shared
    /// memory handed over); checks the count goes on and both VMMs end as Cloud Hypervisor's do.
    /// With `grown`, the source boots 1 of 3 vCPUs and vm.resize adds the other two first: the
    /// destination must run all three. The destination's log must hold each of `destinationLog`.
    func migrate(url: (String) -> String, local: Bool, name: String, grown: Bool = false, destinationLog: [String] = [],
                 extra: (String) throws -> [String] = { _ in [] }) throws {
        let work = NSTemporaryDirectory() + "ch-migration-\(name)-\(getpid())"
        try Self.freshDirectory(work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf"
        try Data(TinyKernel.pvhELF(code: Snapshots.counter)).write(to: URL(fileURLWithPath: kernel))
        let memory = local ? "size=32M,shared=on" : "size=32M"
        let source = try Snapshots.start(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", memory,
                                          "--api-socket", "path=\(work)/src.sock"] + (grown ? ["--cpus", "boot=1,max=3"] : []) + extra(work),
                                         output: work + "/src.out", log: work + "/src.log")
        defer { Snapshots.kill(source) }
        let destination = try Snapshots.start(["-v", "--api-socket", "path=\(work)/dst.sock"], output: work + "/dst.out", log: work + "/dst.log")
        defer { Snapshots.kill(destination) }
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.out").utf8.count >= 8 }, seconds: 60), "the guest counted")

        if grown {
            try APILifecycleTests.chRemote(work + "/src.sock", ["resize", "--cpus", "3"])
            #expect(Snapshots.waitFor({ CPUHotplugBinaryTests.vcpuThreads(source).count == 3 }, seconds: 10))
        }
        let target = url(work)
        let receive = try Self.chRemoteInBackground(work + "/dst.sock", ["receive-migration", "receiver_url=\(target)"], log: work + "/receive.log")
        defer { Snapshots.kill(receive) }
        if target.hasPrefix("unix:") {
            #expect(Snapshots.waitFor({ FileManager.default.fileExists(atPath: String(target.dropFirst(5))) }, seconds: 20), "the receiver listens")
        } else {
            usleep(300_000)
        }
        try APILifecycleTests.chRemote(work + "/src.sock", ["send-migration", "destination_url=\(target)\(local ? ",local=on" : "")"])
        #expect(Self.waitForExit(receive, seconds: 60) && receive.terminationStatus == 0,
                "receive-migration: \(Snapshots.contents(work + "/receive.log")) \(Snapshots.contents(work + "/dst.log"))")
        // The source VMM ends once the destination owns the VM.
        #expect(Self.waitForExit(source, seconds: 30) && source.terminationStatus == 0, "the source exits: \(Snapshots.contents(work + "/src.log"))")
        #expect(try APILifecycleTests.state(work + "/dst.sock") == "Running")
        if grown {
            #expect(CPUHotplugBinaryTests.vcpuThreads(destination).count == 3, "\(CPUHotplugBinaryTests.vcpuThreads(destination))")
            #expect(try CPUHotplugBinaryTests.bootVCPUs(work + "/dst.sock") == 3)
        }
        let before = Snapshots.contents(work + "/dst.out").utf8.count
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/dst.out").utf8.count >= before + 8 }, seconds: 60),
                "the destination counts on: \(Snapshots.contents(work + "/dst.log"))")
        Snapshots.kill(destination)
        for line in destinationLog {
            #expect(Snapshots.contents(work + "/dst.log").contains(line), "the destination lacks \(line): \(Snapshots.contents(work + "/dst.log"))")
        }
        // Source and destination output together: one count, 1, 2, 3..., with no gap or reset
        // (a pause between a count's two letters leaves the second one to the destination).
        let text = Snapshots.contents(work + "/src.out") + Snapshots.contents(work + "/dst.out")
        let counts = try #require(Snapshots.counts(text), "serial output: \(text)")
        #expect(counts == (1...counts.count).map { $0 % 256 }, "counts across the migration (the low byte): \(counts)")
        #expect(Snapshots.contents(work + "/src.log").contains("migration completed"), "\(Snapshots.contents(work + "/src.log"))")
    }

    @Test("A counting guest migrates over unix: and keeps counting", .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func overUnix() throws { try migrate(url: { "unix:\($0)/mig.sock" }, local: false, name: "unix") }

    @Test("A counting guest grown from 1 to 3 vCPUs by vm.resize migrates with all three", .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func grownVCPUs() throws { try migrate(url: { "unix:\($0)/mig.sock" }, local: false, name: "grown", grown: true) }

    @Test("A counting guest migrates over tcp: on loopback and keeps counting", .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func overTCP() throws {
        let port = 20000 + Int(getpid() % 20000)
        try migrate(url: { _ in "tcp:127.0.0.1:\(port)" }, local: false, name: "tcp")
    }

    @Test("A counting guest with a pmem file migrates over unix: (the destination maps the file again) and keeps counting",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func withPmem() throws {
        try migrate(url: { "unix:\($0)/mig.sock" }, local: false, name: "pmem") { work in
            _ = FileManager.default.createFile(atPath: work + "/pmem.img", contents: Data(count: 2 << 20))
            return ["--pmem", "file=\(work)/pmem.img"]
        }
    }

    @Test("A counting guest with a disk and a pmem file on PCI segment 1 migrates with them at the same addresses",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func withSegments() throws {
        try migrate(url: { "unix:\($0)/mig.sock" }, local: false, name: "segments",
                    destinationLog: ["PCI segment 1: ECAM at 0xe8100000", "virtio-block at 0001:00:01.0", "virtio-pmem at 0001:00:02.0"]) { work in
            _ = FileManager.default.createFile(atPath: work + "/disk.img", contents: Data(count: 1 << 20))
            _ = FileManager.default.createFile(atPath: work + "/pmem.img", contents: Data(count: 2 << 20))
            return ["--platform", "num_pci_segments=2", "--disk", "path=\(work)/disk.img,pci_segment=1",
                    "--pmem", "file=\(work)/pmem.img,pci_segment=1"]
        }
    }

    @Test("local=on hands shared memory over SCM_RIGHTS instead of copying it", .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func localHandOver() throws { try migrate(url: { "unix:\($0)/mig.sock" }, local: true, name: "local") }

    @Test("A destination that dies mid-way leaves the source VM running and counting; bad requests are refused with the reason",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func failedMigrationKeepsSource() throws {
        let work = NSTemporaryDirectory() + "ch-migration-fail-\(getpid())"
        try Self.freshDirectory(work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf"
        try Data(TinyKernel.pvhELF(code: Snapshots.counter)).write(to: URL(fileURLWithPath: kernel))
        let source = try Snapshots.start(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=32M",
                                          "--api-socket", "path=\(work)/src.sock"], output: work + "/src.out", log: work + "/src.log")
        defer { Snapshots.kill(source) }
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.out").utf8.count >= 8 }, seconds: 60))

        // A destination that answers Start and Config, takes part of the first memory round and dies.
        let listener = try UnixSocket.listening(at: work + "/mig.sock")
        try APILifecycleTests.chRemote(work + "/src.sock", ["send-migration", "destination_url=unix:\(work)/mig.sock"])
        #expect(try listener.wait(for: .readable, timeoutMilliseconds: 20_000))
        let (peer, memory) = try Self.fakeDestinationUntilMemory(listener)
        #expect(memory.command == .memory)
        _ = try peer.read(Int(memory.length) + 4096)
        peer.close()

        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.log").contains("migration failed") }, seconds: 30),
                "\(Snapshots.contents(work + "/src.log"))")
        #expect(try APILifecycleTests.state(work + "/src.sock") == "Running")
        let before = Snapshots.contents(work + "/src.out").utf8.count
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.out").utf8.count >= before + 8 }, seconds: 30), "the source counts on")
        #expect(source.isRunning)

        // What this VMM lacks is refused by name, and a bad URL with the forms it accepts.
        #expect(try APILifecycleTests.chRemote(work + "/src.sock", ["send-migration", "destination_url=unix:\(work)/x,local=on"], expect: 1)
            .contains("shared"))
        #expect(try APILifecycleTests.chRemote(work + "/src.sock", ["send-migration", "destination_url=unix:\(work)/x,memory_mode=postcopy"], expect: 1)
            .contains("post-copy"))
        #expect(try APILifecycleTests.chRemote(work + "/src.sock", ["send-migration", "destination_url=http://x"], expect: 1)
            .contains("unix:"))
        // A VMM with a VM refuses to receive one.
        #expect(try APILifecycleTests.chRemote(work + "/src.sock", ["receive-migration", "receiver_url=unix:\(work)/r.sock"], expect: 1)
            .contains("already created"))
    }

    /// Rewrites one dword in each 4 KiB page from 2 MiB to 18 MiB, over and over (16 MiB dirty
    /// per pass): mov eax,0; 1: mov edi,0x200000; 2: mov [edi],eax; add edi,0x1000;
    /// cmp edi,0x1200000; jb 2b; inc eax; jmp 1b
    static let churn: [UInt8] = [
        0xB8, 0x00, 0x00, 0x00, 0x00,
        0xBF, 0x00, 0x00, 0x20, 0x00,
        0x89, 0x07, 0x81, 0xC7, 0x00, 0x10, 0x00, 0x00, 0x81, 0xFF, 0x00, 0x00, 0x20, 0x01, 0x72, 0xF0,
        0x40, 0xEB, 0xE8,
    ]

    @Test("timeout_s: a destination too slow for the first round makes Cancel abandon the migration (the VM runs on); Ignore migrates anyway",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func timeoutStrategies() throws {
        let work = NSTemporaryDirectory() + "ch-migration-timeout-\(getpid())"
        try Self.freshDirectory(work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/churn.elf"
        try Data(TinyKernel.pvhELF(code: Self.churn)).write(to: URL(fileURLWithPath: kernel))
        let source = try Snapshots.start(["-v", "--kernel", kernel, "--serial", "off", "--console", "off", "--memory", "size=32M",
                                          "--api-socket", "path=\(work)/src.sock"], log: work + "/src.log")
        defer { Snapshots.kill(source) }
        #expect(Snapshots.waitFor({ FileManager.default.fileExists(atPath: work + "/src.sock") }, seconds: 20))
        usleep(300_000)

        // A destination that reads the first memory round (16 MiB of pages with data) at about
        // 10 MiB/s: the round outlasts timeout_s=1, so Cancel ends the migration after it.
        let listener = try UnixSocket.listening(at: work + "/slow.sock")
        try APILifecycleTests.chRemote(work + "/src.sock", ["send-migration", "destination_url=unix:\(work)/slow.sock,downtime_ms=1,timeout_s=1"])
        #expect(try listener.wait(for: .readable, timeoutMilliseconds: 20_000))
        let (peer, memory) = try Self.fakeDestinationUntilMemory(listener)
        #expect(memory.command == .memory)
        let table = try MigrationRangeCodec.decode(peer.read(Int(memory.length)))
        var left = Int(table.byteCount)
        #expect(left >= 8 << 20, "the first round carries the churned pages: \(left) bytes")
        while left > 0 {
            let chunk = min(left, 1 << 20)
            _ = try peer.read(chunk)
            left -= chunk
            usleep(100_000)
        }
        try peer.send(MigrationResponse(.ok))
        #expect(try peer.receiveRequest().command == .abandon, "the source abandons the migration")
        peer.close()
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.log").contains("did not converge within timeout_s=1") }, seconds: 30),
                "\(Snapshots.contents(work + "/src.log"))")
        #expect(try APILifecycleTests.state(work + "/src.sock") == "Running")

        // With Ignore the same request migrates to a real destination, whatever the rounds do.
        let destination = try Snapshots.start(["-v", "--api-socket", "path=\(work)/dst.sock"], log: work + "/dst.log")
        defer { Snapshots.kill(destination) }
        #expect(Snapshots.waitFor({ FileManager.default.fileExists(atPath: work + "/dst.sock") }, seconds: 20))
        let receive = try Self.chRemoteInBackground(work + "/dst.sock", ["receive-migration", "receiver_url=unix:\(work)/mig.sock"], log: work + "/receive.log")
        defer { Snapshots.kill(receive) }
        #expect(Snapshots.waitFor({ FileManager.default.fileExists(atPath: work + "/mig.sock") }, seconds: 20))
        try APILifecycleTests.chRemote(work + "/src.sock", ["send-migration", "destination_url=unix:\(work)/mig.sock,downtime_ms=1,timeout_s=1,timeout_strategy=ignore"])
        #expect(Self.waitForExit(receive, seconds: 60) && receive.terminationStatus == 0, "\(Snapshots.contents(work + "/receive.log")) \(Snapshots.contents(work + "/dst.log"))")
        #expect(Self.waitForExit(source, seconds: 30) && source.terminationStatus == 0, "\(Snapshots.contents(work + "/src.log"))")
        #expect(try APILifecycleTests.state(work + "/dst.sock") == "Running")
    }

    /// Prints 'R', waits a while and resets through the i8042 (0xFE to port 0x64), at every boot:
    /// mov dx,0x3f8; mov al,'R'; out dx,al; mov ecx,0x00100000; 1: dec ecx; jnz 1b;
    /// mov al,0xFE; out 0x64,al; 2: hlt; jmp 2b
    static let resetter: [UInt8] = [
        0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x52, 0xEE,
        0xB9, 0x00, 0x00, 0x10, 0x00, 0x49, 0x75, 0xFD,
        0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD,
    ]

    @Test("A guest that resets during a migration makes it fail; the VM then reboots in the source (the migration let go of it first)",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func resetDuringMigration() throws {
        let work = NSTemporaryDirectory() + "ch-migration-reset-\(getpid())"
        try Self.freshDirectory(work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/resetter.elf"
        try Data(TinyKernel.pvhELF(code: Self.resetter)).write(to: URL(fileURLWithPath: kernel))
        let disk = work + "/disk.img"
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 1 << 20)))
        let source = try Snapshots.start(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=32M",
                                          "--disk", "path=\(disk)", "--api-socket", "path=\(work)/src.sock"],
                                         output: work + "/src.out", log: work + "/src.log")
        defer { Snapshots.kill(source) }
        // The guest resets and boots again on its own.
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.out").contains("RR") }, seconds: 30),
                "\(Snapshots.contents(work + "/src.out")) \(Snapshots.contents(work + "/src.log"))")

        // A destination that takes the first memory round and holds its answer until the guest reset.
        let listener = try UnixSocket.listening(at: work + "/mig.sock")
        try APILifecycleTests.chRemote(work + "/src.sock", ["send-migration", "destination_url=unix:\(work)/mig.sock"])
        #expect(try listener.wait(for: .readable, timeoutMilliseconds: 20_000))
        let (peer, memory) = try Self.fakeDestinationUntilMemory(listener)
        #expect(memory.command == .memory)
        let table = try MigrationRangeCodec.decode(peer.read(Int(memory.length)))
        _ = try peer.read(Int(table.byteCount))
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.log").contains("the guest reset during a migration") }, seconds: 30),
                "\(Snapshots.contents(work + "/src.log"))")
        let rebootsBefore = Snapshots.contents(work + "/src.log").components(separatedBy: "rebooting the VM").count
        try peer.send(MigrationResponse(.ok))
        #expect(try peer.receiveRequest().command == .abandon, "the source abandons the migration")
        peer.close()

        // The migration names the reset, then the VM reboots (its disk free for the new machine).
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.log").contains("the VM stopped during the migration") }, seconds: 30),
                "\(Snapshots.contents(work + "/src.log"))")
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.log").components(separatedBy: "rebooting the VM").count > rebootsBefore }, seconds: 30),
                "\(Snapshots.contents(work + "/src.log"))")
        let bootsAfter = Snapshots.contents(work + "/src.out").count
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.out").count > bootsAfter }, seconds: 30), "the rebooted guest runs")
        #expect(!Snapshots.contents(work + "/src.log").contains("reboot failed"), "\(Snapshots.contents(work + "/src.log"))")
        #expect(try APILifecycleTests.state(work + "/src.sock") == "Running")
        #expect(source.isRunning)
    }
}
