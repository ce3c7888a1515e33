import Foundation
import HypervisorTesting
import Testing
@testable import VMM

/// Snapshot and restore as a user runs them: a tiny guest counts on its serial port, `ch-remote`
/// pauses it and snapshots it, the VMM is killed, and new VMM processes restore the snapshot
/// (`--restore`, copy and on-demand): the count continues where it stopped, with no gap and no
/// reset. Damaged copies of the snapshot are refused with the reason.
@Suite("snapshot and restore (cloud-hypervisor + ch-remote)", .serialized)
struct SnapshotBinaryTests {
    /// A counter kept in ebx and at 0x50000, printed as two letters per step ('A'+high nibble,
    /// 'a'+low nibble of its low byte), with a delay loop between steps:
    /// mov ebx,[0x50000]; 1: inc ebx; mov [0x50000],ebx; mov dx,0x3f8; mov al,bl; shr al,4; and al,15;
    /// add al,'A'; out dx,al; mov al,bl; and al,15; add al,'a'; out dx,al; mov ecx,0x20000;
    /// 2: dec ecx; jnz 2b; jmp 1b
    static let counter: [UInt8] = [
        0x8B, 0x1D, 0x00, 0x00, 0x05, 0x00,
        0x43, 0x89, 0x1D, 0x00, 0x00, 0x05, 0x00, 0x66, 0xBA, 0xF8, 0x03,
        0x88, 0xD8, 0xC0, 0xE8, 0x04, 0x24, 0x0F, 0x04, 0x41, 0xEE,
        0x88, 0xD8, 0x24, 0x0F, 0x04, 0x61, 0xEE,
        0xB9, 0x00, 0x00, 0x02, 0x00, 0x49, 0x75, 0xFD, 0xEB, 0xDA,
    ]

    /// The counts the serial output holds, or nil where two letters are not a count.
    static func counts(_ text: String) -> [Int]? {
        let bytes = Array(text.utf8)
        guard bytes.count % 2 == 0 else { return nil }
        var result: [Int] = []
        for index in stride(from: 0, to: bytes.count, by: 2) {
            let high = Int(bytes[index]) - 0x41, low = Int(bytes[index + 1]) - 0x61
            guard (0..<16).contains(high), (0..<16).contains(low) else { return nil }
            result.append(high << 4 | low)
        }
        return result
    }

    static func waitFor(_ condition: () -> Bool, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() && Date() < deadline { usleep(20_000) }
        return condition()
    }

    static func contents(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// Starts a VMM with `arguments`; the caller kills it.
    static func start(_ arguments: [String], log: String, launch: Bool = true) throws -> Process {
        let vmm = Process()
        vmm.executableURL = URL(fileURLWithPath: BinaryTests.binary)
        vmm.arguments = arguments
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        vmm.standardError = FileHandle(forWritingAtPath: log)
        vmm.standardOutput = FileHandle.nullDevice
        vmm.standardInput = FileHandle.nullDevice
        if launch { try vmm.run() }
        return vmm
    }

    static func kill(_ vmm: Process) {
        if vmm.isRunning { Foundation.kill(vmm.processIdentifier, SIGKILL) }
        vmm.waitUntilExit()
    }

    @Test("A counting guest snapshotted, killed and restored twice (copy, then on demand) continues its count",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func countContinuesAcrossRestore() throws {
        let work = NSTemporaryDirectory() + "ch-snapshot-test-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock"
        try Data(TinyKernel.pvhELF(code: Self.counter)).write(to: URL(fileURLWithPath: kernel))

        let first = try Self.start(["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "off",
                                    "--memory", "size=32M", "--api-socket", "path=\(socket)"], log: work + "/first.log")
        defer { Self.kill(first) }
        #expect(Self.waitFor({ Self.contents(serial).utf8.count >= 8 }, seconds: 60), "the guest counted: \(Self.contents(work + "/first.log"))")
        // A running VM cannot be snapshotted (Cloud Hypervisor's rule).
        #expect(try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"], expect: 1).contains("Running"))
        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"])
        Self.kill(first)
        let before = try #require(Self.counts(Self.contents(serial)), "serial output: \(Self.contents(serial))")
        #expect(before == Array(1...before.count), "the count before the snapshot: \(before)")
        for file in ["config.json", "state.json", "memory-ranges"] {
            #expect(FileManager.default.fileExists(atPath: "\(work)/snap/\(file)"), "\(file) written")
        }
        // Holes stay holes: 32 MiB of RAM, almost all zero, takes far less on disk.
        var info = stat()
        #expect(stat("\(work)/snap/memory-ranges", &info) == 0 && info.st_size == 32 << 20 && Int(info.st_blocks) * 512 < 8 << 20,
                "memory-ranges: \(info.st_size) bytes, \(info.st_blocks) blocks")

        for (round, mode) in ["copy", "ondemand"].enumerated() {
            let start = Self.contents(serial).utf8.count
            let restored = try Self.start(["-v", "--restore", "source_url=file://\(work)/snap,resume=on,memory_restore_mode=\(mode)"],
                                          log: work + "/restore\(round).log")
            defer { Self.kill(restored) }
            #expect(Self.waitFor({ Self.contents(serial).utf8.count >= start + 8 }, seconds: 60),
                    "restore \(mode): \(Self.contents(work + "/restore\(round).log"))")
            Self.kill(restored)
            let text = Self.contents(serial)
            let after = try #require(Self.counts(String(text.dropFirst(start))), "output after restore: \(text.dropFirst(start))")
            // The count goes on from the snapshot: no gap, no reset (each restore starts at the same point).
            #expect(after == Array((before.count + 1)...(before.count + after.count)), "restore \(mode): \(after) after \(before.count)")
        }
    }

    /// Starts a VMM whose standard output (the serial port with `--serial tty`) goes to `output`.
    static func start(_ arguments: [String], output: String, log: String) throws -> Process {
        let vmm = try start([], log: log, launch: false)
        vmm.arguments = arguments
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        vmm.standardOutput = FileHandle(forWritingAtPath: output)
        try vmm.run()
        return vmm
    }

    @Test("Two restores of one snapshot run side by side (a fork), each counting on from the snapshot",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func forksRunSideBySide() throws {
        let work = NSTemporaryDirectory() + "ch-snapshot-fork-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", socket = work + "/api.sock"
        try Data(TinyKernel.pvhELF(code: Self.counter)).write(to: URL(fileURLWithPath: kernel))
        let parent = try Self.start(["--kernel", kernel, "--serial", "tty", "--console", "off", "--memory", "size=16M",
                                     "--api-socket", "path=\(socket)"], output: work + "/parent.out", log: work + "/parent.log")
        defer { Self.kill(parent) }
        #expect(Self.waitFor({ Self.contents(work + "/parent.out").utf8.count >= 6 }, seconds: 60))
        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"])
        Self.kill(parent)
        let before = try #require(Self.counts(Self.contents(work + "/parent.out")))
        let forks = try ["copy", "ondemand"].map { mode in
            try Self.start(["--restore", "source_url=file://\(work)/snap,resume=on,memory_restore_mode=\(mode)"],
                           output: work + "/\(mode).out", log: work + "/\(mode).log")
        }
        defer { forks.forEach(Self.kill) }
        for mode in ["copy", "ondemand"] {
            #expect(Self.waitFor({ Self.contents(work + "/\(mode).out").utf8.count >= 8 }, seconds: 60),
                    "\(mode): \(Self.contents(work + "/\(mode).log"))")
        }
        let bothRun = forks.allSatisfy { $0.isRunning }
        #expect(bothRun, "both forks run at once")
        forks.forEach(Self.kill)
        for mode in ["copy", "ondemand"] {
            let after = try #require(Self.counts(Self.contents(work + "/\(mode).out")))
            #expect(after == Array((before.count + 1)...(before.count + after.count)), "\(mode): \(after) after \(before.count)")
        }
    }

    @Test("A VMM killed at random points of a snapshot leaves a complete snapshot or one that restore refuses with the reason",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func killedDuringSnapshot() throws {
        let work = NSTemporaryDirectory() + "ch-snapshot-kill-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf"
        try Data(TinyKernel.pvhELF(code: Self.counter)).write(to: URL(fileURLWithPath: kernel))
        var complete = 0, refused = 0
        for (round, delay) in [0, 2_000, 5_000, 10_000, 20_000, 40_000].enumerated() {
            let socket = work + "/api\(round).sock", serial = work + "/serial\(round)", snap = work + "/snap\(round)"
            try FileManager.default.createDirectory(atPath: snap, withIntermediateDirectories: true)
            let vmm = try Self.start(["--kernel", kernel, "--serial", "file=\(serial)", "--console", "off", "--memory", "size=256M",
                                      "--api-socket", "path=\(socket)"], log: work + "/vmm\(round).log")
            defer { Self.kill(vmm) }
            #expect(Self.waitFor({ Self.contents(serial).utf8.count >= 2 }, seconds: 60))
            try APILifecycleTests.chRemote(socket, ["pause"])
            let remote = Process()
            remote.executableURL = URL(fileURLWithPath: APILifecycleTests.remote)
            remote.arguments = ["--api-socket", socket, "snapshot", "file://\(snap)"]
            remote.standardOutput = FileHandle.nullDevice
            remote.standardError = FileHandle.nullDevice
            try remote.run()
            usleep(useconds_t(delay))
            Self.kill(vmm)
            remote.waitUntilExit()
            do {
                let config = try SnapshotCheck.check(url: "file://\(snap)")
                #expect(config.memory.size == 256 << 20)
                complete += 1
            } catch {
                // Refused: the reason names what is missing or wrong.
                #expect(error.description.contains("missing") || error.description.contains("damaged"), "\(error)")
                refused += 1
            }
        }
        #expect(complete + refused == 6, "\(complete) complete, \(refused) refused")
    }

    @Test("A damaged snapshot is refused with the reason, and the refusal names what is wrong",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func damagedSnapshotsAreRefused() throws {
        let work = NSTemporaryDirectory() + "ch-snapshot-damage-\(getpid())"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work + "/snap", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf", serial = work + "/serial", socket = work + "/api.sock"
        try Data(TinyKernel.pvhELF(code: Self.counter)).write(to: URL(fileURLWithPath: kernel))
        let vmm = try Self.start(["--kernel", kernel, "--serial", "file=\(serial)", "--console", "off", "--memory", "size=16M",
                                  "--api-socket", "path=\(socket)"], log: work + "/vmm.log")
        defer { Self.kill(vmm) }
        #expect(Self.waitFor({ Self.contents(serial).utf8.count >= 2 }, seconds: 60))
        try APILifecycleTests.chRemote(socket, ["pause"])
        try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"])
        // The same directory again: the files exist, the snapshot is refused and the VM stays paused.
        #expect(try APILifecycleTests.chRemote(socket, ["snapshot", "file://\(work)/snap"], expect: 1).contains("exists already"))
        #expect(try APILifecycleTests.state(socket) == "Paused")
        #expect(try APILifecycleTests.chRemote(socket, ["snapshot", "file:///nonexistent/dir"], expect: 1).contains("does not exist"))
        Self.kill(vmm)

        func damaged(_ name: String, _ change: (String) throws -> Void) throws -> String {
            let copy = "\(work)/\(name)"
            try FileManager.default.copyItem(atPath: "\(work)/snap", toPath: copy)
            try change(copy)
            do {
                _ = try VMSnapshotter.load(from: try SnapshotDirectory(url: "file://\(copy)"))
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(try damaged("intact") { _ in } == "accepted")
        #expect((try? SnapshotCheck.check(url: "file://\(work)/intact"))?.memory.size == 16 << 20, "every section of the intact copy decodes")
        #expect(try damaged("no-state") { try FileManager.default.removeItem(atPath: $0 + "/state.json") }.contains("state.json is missing"))
        #expect(try damaged("no-memory") { try FileManager.default.removeItem(atPath: $0 + "/memory-ranges") }.contains("memory-ranges is missing"))
        #expect(try damaged("short-memory") { path in
            let handle = try #require(FileHandle(forWritingAtPath: path + "/memory-ranges"))
            try handle.truncate(atOffset: 4096)
            try handle.close()
        }.contains("memory-ranges is 4096 bytes"))
        #expect(try damaged("version") { path in
            let text = try String(contentsOfFile: path + "/state.json", encoding: .utf8)
            try text.replacingOccurrences(of: #"\"version\":2"#, with: #"\"version\":7"#)
                .write(toFile: path + "/state.json", atomically: true, encoding: .utf8)
        }.contains("format version 7"))
        // A snapshot of the first format (its memory manager held the ranges alone) is refused with what it lacks.
        #expect(try damaged("version1") { path in
            let text = try String(contentsOfFile: path + "/state.json", encoding: .utf8)
            try text.replacingOccurrences(of: #"\"version\":2"#, with: #"\"version\":1"#)
                .write(toFile: path + "/state.json", atomically: true, encoding: .utf8)
        }.contains("format version 1, this VMM reads version 2 only: its memory-manager section holds the memory ranges alone"))
        // An edited config.json loads (Cloud Hypervisor allows it: a clone names its own disk;
        // the RAM is built from the memory manager's boot_ram, as Cloud Hypervisor's restore does),
        // but a memory manager that builds other guest memory is refused when the restore compares the ranges.
        #expect(try damaged("config") { path in
            let text = try String(contentsOfFile: path + "/config.json", encoding: .utf8)
            try text.replacingOccurrences(of: "16777216", with: "33554432").write(toFile: path + "/config.json", atomically: true, encoding: .utf8)
        } == "accepted")
        #expect(try damaged("boot-ram") { path in
            let text = try String(contentsOfFile: path + "/state.json", encoding: .utf8)
            try text.replacingOccurrences(of: #"\"boot_ram\":16777216"#, with: #"\"boot_ram\":33554432"#)
                .write(toFile: path + "/state.json", atomically: true, encoding: .utf8)
        } == "accepted")
        let bigger = try BinaryTests.run(["--restore", "source_url=file://\(work)/boot-ram"])
        #expect(bigger.status == 1 && bigger.stderr.contains("range 0 of the snapshot is"), "\(bigger.stderr)")
        #expect(try damaged("garbage") { path in
            try "{\"snapshots\": 5".write(toFile: path + "/state.json", atomically: true, encoding: .utf8)
        }.contains("is not a state tree"))

        // The binary refuses a damaged snapshot with exit status 1 and the reason.
        let run = try BinaryTests.run(["--restore", "source_url=file://\(work)/no-state"])
        #expect(run.status == 1 && run.stderr.contains("state.json is missing"), "\(run.stderr)")
        let bad = try BinaryTests.run(["--restore", "source_url=\(work)/snap"])
        #expect(bad.status != 0 && bad.stderr.contains("file:///"), "\(bad.stderr)")
    }
}
