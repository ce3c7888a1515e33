import Foundation
import HypervisorTesting
import Testing
@testable import VMM

/// Hot-added memory across snapshot, restore and live migration, as a user runs them: a tiny
/// guest counts on its serial port and keeps its count in the RAM `ch-remote resize --memory`
/// hot-adds at 4 GiB (it polls until a write there sticks), checking at every step that the
/// count it stored there is still there; snapshots and migrations must bring the region back
/// with its bytes, at its address, in a VM whose `vm.info` says the grown size.
@Suite("hot-added memory across snapshot, restore and migration (cloud-hypervisor + ch-remote)", .serialized)
struct MemoryHotplugStateBinaryTests {
    typealias Snapshots = SnapshotBinaryTests

    /// Entered in long mode (the Linux 64-bit boot protocol), it builds its own 4-level page
    /// tables at 0x60000 (the first 32 MiB identity-mapped, and the 2 MiB at the physical 4 GiB
    /// where hot-added RAM goes), then counts in ebx (kept at 0x50000 too). Each step: when
    /// the region was seen live (flag at 0x50004), the dword at 4 GiB must hold the previous
    /// count, or it prints '!'; then it stores the new count there and sets the flag if the
    /// write stuck (before the hot-add the address is unbacked MMIO: writes vanish, reads give
    /// all ones); then it prints the count's low byte as two letters: 'A'+high nibble,
    /// 'a'+low nibble before the region is live, 'a'+high, 'A'+low once it is. Assembled
    /// with GNU as (`.code64`, Intel syntax) from:
    ///
    ///     mov edi,0x60000; xor eax,eax; mov ecx,0x1000; rep stosd
    ///     mov dword [0x60000],0x61003; mov dword [0x61000],0x62003; mov dword [0x61020],0x63003
    ///     mov edi,0x62000; mov eax,0x83; mov ecx,16; 1: mov [rdi],eax; add eax,0x200000; add edi,8; loop 1b
    ///     mov dword [0x63000],0x83; mov dword [0x63004],1; mov eax,0x60000; mov cr3,rax
    ///     movabs rsi,0x100000000; mov ebx,[0x50000]
    ///     step: cmp dword [0x50004],0; je 3f; cmp [rsi],ebx; je 3f; mov dx,0x3f8; mov al,'!'; out dx,al
    ///     3: inc ebx; mov [0x50000],ebx; mov [rsi],ebx; cmp [rsi],ebx; jne 4f; mov dword [0x50004],1
    ///     4: mov dx,0x3f8; mov al,bl; shr al,4; and al,15; mov cl,'A'; cmp dword [0x50004],0; je 5f; mov cl,'a'
    ///     5: add al,cl; out dx,al; mov al,bl; and al,15; xor cl,0x20; add al,cl; out dx,al
    ///     mov ecx,0x20000; 6: dec ecx; jnz 6b; jmp step
    static let writer: [UInt8] = [
        0xbf, 0x00, 0x00, 0x06, 0x00, 0x31, 0xc0, 0xb9, 0x00, 0x10, 0x00, 0x00,
        0xf3, 0xab, 0xc7, 0x04, 0x25, 0x00, 0x00, 0x06, 0x00, 0x03, 0x10, 0x06,
        0x00, 0xc7, 0x04, 0x25, 0x00, 0x10, 0x06, 0x00, 0x03, 0x20, 0x06, 0x00,
        0xc7, 0x04, 0x25, 0x20, 0x10, 0x06, 0x00, 0x03, 0x30, 0x06, 0x00, 0xbf,
        0x00, 0x20, 0x06, 0x00, 0xb8, 0x83, 0x00, 0x00, 0x00, 0xb9, 0x10, 0x00,
        0x00, 0x00, 0x89, 0x07, 0x05, 0x00, 0x00, 0x20, 0x00, 0x83, 0xc7, 0x08,
        0xe2, 0xf4, 0xc7, 0x04, 0x25, 0x00, 0x30, 0x06, 0x00, 0x83, 0x00, 0x00,
        0x00, 0xc7, 0x04, 0x25, 0x04, 0x30, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00,
        0xb8, 0x00, 0x00, 0x06, 0x00, 0x0f, 0x22, 0xd8, 0x48, 0xbe, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x8b, 0x1c, 0x25, 0x00, 0x00, 0x05,
        0x00, 0x83, 0x3c, 0x25, 0x04, 0x00, 0x05, 0x00, 0x00, 0x74, 0x0b, 0x39,
        0x1e, 0x74, 0x07, 0x66, 0xba, 0xf8, 0x03, 0xb0, 0x21, 0xee, 0xff, 0xc3,
        0x89, 0x1c, 0x25, 0x00, 0x00, 0x05, 0x00, 0x89, 0x1e, 0x39, 0x1e, 0x75,
        0x0b, 0xc7, 0x04, 0x25, 0x04, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x66, 0xba, 0xf8, 0x03, 0x88, 0xd8, 0xc0, 0xe8, 0x04, 0x24, 0x0f, 0xb1,
        0x41, 0x83, 0x3c, 0x25, 0x04, 0x00, 0x05, 0x00, 0x00, 0x74, 0x02, 0xb1,
        0x61, 0x00, 0xc8, 0xee, 0x88, 0xd8, 0x24, 0x0f, 0x80, 0xf1, 0x20, 0x00,
        0xc8, 0xee, 0xb9, 0x00, 0x00, 0x02, 0x00, 0xff, 0xc9, 0x75, 0xfc, 0xeb,
        0xa0,
    ]

    /// A minimal bzImage (boot protocol 2.12, 64-bit entry) whose protected-mode kernel holds
    /// `code` at its 64-bit entry (load address + 0x200). The PVH entry of ``TinyKernel`` is
    /// 32-bit with paging off, and this host's KVM (PVM) does not take the PAE paging a 32-bit
    /// guest would need to reach 4 GiB; long mode it does.
    static func bzImage(code: [UInt8]) -> [UInt8] {
        var kernel = [UInt8](repeating: 0, count: 0x200) + code
        kernel += [UInt8](repeating: 0, count: (16 - kernel.count % 16) % 16)
        var setup = [UInt8](repeating: 0, count: 1024)
        func put(_ value: UInt64, at offset: Int, bytes: Int) {
            for index in 0..<bytes { setup[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
        }
        put(1, at: 0x1F1, bytes: 1)                           // setup_sects
        put(UInt64(kernel.count / 16), at: 0x1F4, bytes: 4)   // syssize
        put(0xAA55, at: 0x1FE, bytes: 2)                      // boot_flag
        put(0x5372_6448, at: 0x202, bytes: 4)                 // "HdrS"
        put(0x020C, at: 0x206, bytes: 2)                      // version 2.12
        put(1, at: 0x211, bytes: 1)                           // loadflags: LOADED_HIGH
        put(0x10_0000, at: 0x214, bytes: 4)                   // code32_start
        put(1, at: 0x236, bytes: 2)                           // xloadflags: XLF_KERNEL_64
        put(0x1_0000, at: 0x260, bytes: 4)                    // init_size
        return setup + kernel
    }

    /// The steps the serial output holds (count's low byte, whether the region was live), or
    /// nil where the output is not two letters per step (a '!' the guest printed on a lost count).
    static func steps(_ text: String) -> [(count: Int, live: Bool)]? {
        let bytes = Array(text.utf8)
        guard bytes.count % 2 == 0 else { return nil }
        var result: [(Int, Bool)] = []
        for index in stride(from: 0, to: bytes.count, by: 2) {
            let (first, second) = (Int(bytes[index]), Int(bytes[index + 1]))
            if (0x41..<0x51).contains(first), (0x61..<0x71).contains(second) {
                result.append(((first - 0x41) << 4 | (second - 0x61), false))
            } else if (0x61..<0x71).contains(first), (0x41..<0x51).contains(second) {
                result.append(((first - 0x61) << 4 | (second - 0x41), true))
            } else {
                return nil
            }
        }
        return result
    }

    /// `memory.size` of the VM's configuration in `vm.info`.
    static func memorySize(_ socket: String) throws -> Int? {
        let info = try APILifecycleTests.chRemote(socket, ["info"])
        guard let object = try? JSONSerialization.jsonObject(with: Data(info.utf8)) as? [String: Any],
              let config = object["config"] as? [String: Any], let memory = config["memory"] as? [String: Any] else { return nil }
        return memory["size"] as? Int
    }

    /// Boots the writer with 32 MiB and 256 MiB of hotplug room (`extra` memory options), waits
    /// for it to count, grows it to 160 MiB and waits until the hot-added region is live.
    static func bootAndGrow(_ work: String, memory extra: String = "", output: String) throws -> Process {
        let kernel = work + "/writer.bzImage"
        try Data(Self.bzImage(code: Self.writer)).write(to: URL(fileURLWithPath: kernel))
        let vmm = try Snapshots.start(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off",
                                       "--memory", "size=32M,hotplug_size=256M\(extra)", "--api-socket", "path=\(work)/src.sock"],
                                      output: output, log: work + "/src.log")
        #expect(Snapshots.waitFor({ Snapshots.contents(output).utf8.count >= 8 }, seconds: 60), "the guest counted: \(Snapshots.contents(work + "/src.log"))")
        #expect(Self.steps(Snapshots.contents(output))?.allSatisfy { !$0.live } == true, "no live region before the resize")
        try APILifecycleTests.chRemote(work + "/src.sock", ["resize", "--memory", "160M"])
        #expect(try Self.memorySize(work + "/src.sock") == 160 << 20)
        #expect(Snapshots.waitFor({ (Self.steps(Snapshots.contents(output))?.filter(\.live).count ?? 0) >= 3 }, seconds: 60),
                "the guest's writes at 4 GiB stick after the resize: \(Snapshots.contents(output))")
        return vmm
    }

    /// One count from 1 without a gap, plain before the hot-add and live from some step on.
    static func checkCount(_ text: String, _ what: String) throws -> [(count: Int, live: Bool)] {
        let steps = try #require(Self.steps(text), "\(what): the serial output is not a clean count (a '!' means a lost value): \(text)")
        #expect(steps.map(\.count) == (1...steps.count).map { $0 % 256 }, "\(what): \(steps.map(\.count))")
        let firstLive = steps.firstIndex { $0.live } ?? steps.count
        #expect(firstLive > 0 && firstLive < steps.count && steps[firstLive...].allSatisfy { $0.live }, "\(what): live from step \(firstLive) of \(steps.count)")
        return steps
    }

    @Test("A VM grown by ACPI memory hotplug is snapshotted and restored (copy, on demand) with its hot-added RAM, its bytes and its size",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func snapshotRestore() throws {
        let work = NSTemporaryDirectory() + "ch-memhp-snap-\(getpid())"
        try MigrationBinaryTests.freshDirectory(work + "/snap")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let source = try Self.bootAndGrow(work, output: work + "/src.out")
        defer { Snapshots.kill(source) }
        try APILifecycleTests.chRemote(work + "/src.sock", ["pause"])
        try APILifecycleTests.chRemote(work + "/src.sock", ["snapshot", "file://\(work)/snap"])
        Snapshots.kill(source)
        // A pause may fall between a step's two letters: the restore prints the second.
        let sourceText = Snapshots.contents(work + "/src.out")
        let printed = sourceText.utf8.count / 2
        _ = try Self.checkCount(String(sourceText.prefix(printed * 2)), "before the snapshot")

        // The snapshot: the region at 4 GiB in its own KVM slot and hotplug slot 0, and its
        // first dword in memory-ranges is the last count the guest stored there.
        let loaded = try VMSnapshotter.load(from: try SnapshotDirectory(url: "file://\(work)/snap"))
        let state = try VMSnapshotter.memoryState(loaded.tree)
        #expect(state.bootRAM == 32 << 20 && state.currentRAM == 160 << 20 && loaded.config.memory.size == 160 << 20)
        let hotAdded = try state.hotAddedMappings()
        #expect(hotAdded.count == 1 && hotAdded.first?.gpa == 4 << 30 && hotAdded.first?.size == 128 << 20 && hotAdded.first?.slot != 0)
        #expect(state.hotplugSlots.first.map { $0.active && $0.base == 4 << 30 && $0.length == 128 << 20 } == true)
        var offset: UInt64 = 0
        for range in state.memoryRanges.ranges where range.gpa < 4 << 30 { offset += range.length }
        let file = try #require(FileHandle(forReadingAtPath: work + "/snap/memory-ranges"))
        try file.seek(toOffset: offset)
        let stored = try #require(try file.read(upToCount: 4)).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        try file.close()
        // The guest stores a count before printing it.
        #expect(Int(stored) == printed || Int(stored) == printed + 1, "the count stored at 4 GiB (\(stored)) is the last one printed (\(printed)) or the next")

        for (round, mode) in ["copy", "ondemand"].enumerated() {
            let output = work + "/restore\(round).out", socket = work + "/restore\(round).sock"
            let restored = try Snapshots.start(["-v", "--api-socket", "path=\(socket)",
                                                "--restore", "source_url=file://\(work)/snap,resume=on,memory_restore_mode=\(mode)"],
                                               output: output, log: work + "/restore\(round).log")
            defer { Snapshots.kill(restored) }
            #expect(Snapshots.waitFor({ Snapshots.contents(output).utf8.count >= 8 }, seconds: 60),
                    "restore \(mode): \(Snapshots.contents(work + "/restore\(round).log"))")
            #expect(try Self.memorySize(socket) == 160 << 20)
            if round == 0 {
                // It grows on: a second region after the first (hotplug slot 1), live at once for the guest's checks.
                try APILifecycleTests.chRemote(socket, ["resize", "--memory", "288M"])
                #expect(try Self.memorySize(socket) == 288 << 20)
            }
            let start = Snapshots.contents(output).utf8.count
            #expect(Snapshots.waitFor({ Snapshots.contents(output).utf8.count >= start + 6 }, seconds: 60))
            Snapshots.kill(restored)
            // One count from the source's first step through the restored VM's last, live after the snapshot.
            let steps = try Self.checkCount(sourceText + Snapshots.contents(output), "restore \(mode)")
            #expect(steps[printed...].allSatisfy { $0.live }, "restore \(mode): the region is live from the first step")
        }
    }

    /// Migrates a grown writer over `url` and checks the destination counts on with the region live.
    func migrateGrown(url: (String) -> String, local: Bool, name: String) throws {
        let work = NSTemporaryDirectory() + "ch-memhp-mig-\(name)-\(getpid())"
        try MigrationBinaryTests.freshDirectory(work)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let source = try Self.bootAndGrow(work, memory: local ? ",shared=on" : "", output: work + "/src.out")
        defer { Snapshots.kill(source) }
        let destination = try Snapshots.start(["-v", "--api-socket", "path=\(work)/dst.sock"], output: work + "/dst.out", log: work + "/dst.log")
        defer { Snapshots.kill(destination) }
        #expect(Snapshots.waitFor({ FileManager.default.fileExists(atPath: work + "/dst.sock") }, seconds: 20), "the destination VMM listens")
        let target = url(work)
        let receive = try MigrationBinaryTests.chRemoteInBackground(work + "/dst.sock", ["receive-migration", "receiver_url=\(target)"], log: work + "/receive.log")
        defer { Snapshots.kill(receive) }
        if target.hasPrefix("unix:") {
            #expect(Snapshots.waitFor({ FileManager.default.fileExists(atPath: String(target.dropFirst(5))) }, seconds: 20), "the receiver listens")
        } else {
            usleep(300_000)
        }
        try APILifecycleTests.chRemote(work + "/src.sock", ["send-migration", "destination_url=\(target)\(local ? ",local=on" : "")"])
        #expect(MigrationBinaryTests.waitForExit(receive, seconds: 60) && receive.terminationStatus == 0,
                "receive-migration: \(Snapshots.contents(work + "/receive.log")) \(Snapshots.contents(work + "/dst.log"))")
        #expect(MigrationBinaryTests.waitForExit(source, seconds: 30) && source.terminationStatus == 0, "the source exits: \(Snapshots.contents(work + "/src.log"))")
        #expect(try Self.memorySize(work + "/dst.sock") == 160 << 20)
        let before = Snapshots.contents(work + "/dst.out").utf8.count
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/dst.out").utf8.count >= before + 8 }, seconds: 60),
                "the destination counts on: \(Snapshots.contents(work + "/dst.log"))")
        Snapshots.kill(destination)
        // One count across both VMMs (a pause between a step's two letters leaves the second to the destination).
        let sourceSteps = Snapshots.contents(work + "/src.out").utf8.count / 2
        let steps = try Self.checkCount(Snapshots.contents(work + "/src.out") + Snapshots.contents(work + "/dst.out"), "across the migration")
        #expect(steps[sourceSteps...].allSatisfy { $0.live } && steps.count > sourceSteps + 3, "the destination's steps are live")
    }

    @Test("A VM grown by ACPI memory hotplug migrates over unix: with its hot-added RAM", .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func overUnix() throws { try migrateGrown(url: { "unix:\($0)/mig.sock" }, local: false, name: "unix") }

    @Test("A VM grown by ACPI memory hotplug migrates over tcp: with its hot-added RAM", .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func overTCP() throws {
        let port = 20000 + Int((getpid() + 7) % 20000)
        try migrateGrown(url: { _ in "tcp:127.0.0.1:\(port)" }, local: false, name: "tcp")
    }

    @Test("With local=on the hot-added region's memfd is handed over too", .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func localHandOver() throws { try migrateGrown(url: { "unix:\($0)/mig.sock" }, local: true, name: "local") }

    @Test("A VM with virtio-mem (hotplugged_size) is snapshotted, restored and migrated with its region; vm.info keeps hotplugged_size",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func virtioMem() throws {
        let work = NSTemporaryDirectory() + "ch-virtiomem-snap-\(getpid())"
        try MigrationBinaryTests.freshDirectory(work + "/snap")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let kernel = work + "/counter.elf"
        try Data(TinyKernel.pvhELF(code: Snapshots.counter)).write(to: URL(fileURLWithPath: kernel))
        let source = try Snapshots.start(["-v", "--kernel", kernel, "--serial", "tty", "--console", "off", "--memory",
                                          "size=32M,hotplug_method=virtio-mem,hotplug_size=128M,hotplugged_size=64M",
                                          "--api-socket", "path=\(work)/src.sock"], output: work + "/src.out", log: work + "/src.log")
        defer { Snapshots.kill(source) }
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/src.out").utf8.count >= 8 }, seconds: 60))
        // The guest cannot plug (no driver), but the request changes and must travel.
        try APILifecycleTests.chRemote(work + "/src.sock", ["resize", "--memory", "128M"])
        try APILifecycleTests.chRemote(work + "/src.sock", ["pause"])
        try APILifecycleTests.chRemote(work + "/src.sock", ["snapshot", "file://\(work)/snap"])
        Snapshots.kill(source)
        let loaded = try VMSnapshotter.load(from: try SnapshotDirectory(url: "file://\(work)/snap"))
        let state = try VMSnapshotter.memoryState(loaded.tree)
        #expect(state.bootRAM == 32 << 20 && state.currentRAM == 128 << 20 && state.guestRAMMappings.map(\.virtioMem) == [false, true])

        let restored = try Snapshots.start(["-v", "--api-socket", "path=\(work)/dst.sock", "--restore", "source_url=file://\(work)/snap,resume=on"],
                                           output: work + "/dst.out", log: work + "/dst.log")
        defer { Snapshots.kill(restored) }
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/dst.out").utf8.count >= 8 }, seconds: 60), "\(Snapshots.contents(work + "/dst.log"))")
        let info = try APILifecycleTests.chRemote(work + "/dst.sock", ["info"])
        #expect(info.contains("\"hotplugged_size\":100663296") || info.contains("\"hotplugged_size\": 100663296"), "\(info)")
        #expect(try Self.memorySize(work + "/dst.sock") == 32 << 20)

        // Then on to a third VMM over unix:.
        let third = try Snapshots.start(["-v", "--api-socket", "path=\(work)/third.sock"], output: work + "/third.out", log: work + "/third.log")
        defer { Snapshots.kill(third) }
        #expect(Snapshots.waitFor({ FileManager.default.fileExists(atPath: work + "/third.sock") }, seconds: 20), "the third VMM listens")
        let receive = try MigrationBinaryTests.chRemoteInBackground(work + "/third.sock", ["receive-migration", "receiver_url=unix:\(work)/mig.sock"],
                                                                    log: work + "/receive.log")
        defer { Snapshots.kill(receive) }
        #expect(Snapshots.waitFor({ FileManager.default.fileExists(atPath: work + "/mig.sock") }, seconds: 20))
        try APILifecycleTests.chRemote(work + "/dst.sock", ["send-migration", "destination_url=unix:\(work)/mig.sock"])
        #expect(MigrationBinaryTests.waitForExit(receive, seconds: 60) && receive.terminationStatus == 0,
                "\(Snapshots.contents(work + "/receive.log")) \(Snapshots.contents(work + "/third.log"))")
        #expect(Snapshots.waitFor({ Snapshots.contents(work + "/third.out").utf8.count >= 8 }, seconds: 60), "\(Snapshots.contents(work + "/third.log"))")
        #expect(try APILifecycleTests.chRemote(work + "/third.sock", ["info"]).contains("100663296"))
        Snapshots.kill(third)
        let text = Snapshots.contents(work + "/src.out") + Snapshots.contents(work + "/dst.out") + Snapshots.contents(work + "/third.out")
        let counts = try #require(Snapshots.counts(text), "\(text)")
        #expect(counts == (1...counts.count).map { $0 % 256 }, "one count across the snapshot, the restore and the migration: \(counts)")
    }
}
