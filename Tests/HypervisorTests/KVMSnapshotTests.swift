import Foundation
import HostSystem
import Hypervisor
import HypervisorTesting
import Synchronization
import Testing

/// Complete vCPU and VM state on this host's /dev/kvm: a counting guest saved, destroyed,
/// rebuilt from its state and memory, and still counting from where it stopped.
@Suite("KVM snapshot state", .enabled(if: KVMSupport.available, KVMSupport.reason))
struct KVMSnapshotTests {
    /// CPL3 code (IOPL 3): program the in-kernel PIT's channel 0 (mode 0, count 0x1234:
    /// `out 0x43,0x30; out 0x40,0x34; out 0x40,0x12`) and the master PIC's mask (`out 0x21,0xfb`),
    /// then `xor eax,eax; 1: inc rax; mov [0x3000],rax; jmp 1b` (the count in RAX and in memory).
    static let counter: [UInt8] = [0xB0, 0x30, 0xE6, 0x43, 0xB0, 0x34, 0xE6, 0x40, 0xB0, 0x12, 0xE6, 0x40,
                                   0xB0, 0xFB, 0xE6, 0x21, 0x31, 0xC0,
                                   0x48, 0xFF, 0xC0, 0x48, 0x89, 0x04, 0x25, 0x00, 0x30, 0x00, 0x00, 0xEB, 0xF3]

    /// Channel `channel`'s count and mode in `PITState.channels` (`struct kvm_pit_channel_state`,
    /// 24 bytes: `count` is the u32 at offset 0, `mode` the byte at offset 13).
    static func pitChannel(_ pit: PITState?, _ channel: Int) -> (count: UInt32, mode: UInt8)? {
        guard let bytes = pit?.channels, bytes.count == 72 else { return nil }
        let base = channel * 24
        let count = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[base + $1]) << (8 * UInt32($1)) }
        return (count, bytes[base + 13])
    }
    static let counterAddress = 0x3000

    /// Runs the vCPU on its own thread for about `milliseconds`, then kicks it out of the guest.
    static func run(_ vcpu: KVMVCPU, milliseconds: UInt32) throws {
        try KickSignal.install()
        let exit = Mutex<String>("none")
        let run = try BackgroundRun {
            let result = try? vcpu.run()
            exit.withLock { $0 = "\(String(describing: result))" }
        }
        usleep(milliseconds * 1000)
        vcpu.kicker.kick()
        #expect(run.wait(seconds: 30), "the kick ended KVM_RUN")
        #expect(exit.withLock { $0 }.contains("interrupted"), "the counting guest only leaves when kicked, got \(exit.withLock { $0 })")
    }

    /// Runs the vCPU in slices of `milliseconds` until `done` holds, for up to 30 s: on a
    /// loaded machine the guest's CPL0 start (emulated here) can take longer than one slice.
    static func run(_ vcpu: KVMVCPU, milliseconds: UInt32, until done: () throws -> Bool) throws {
        var waited: UInt32 = 0
        repeat {
            try run(vcpu, milliseconds: milliseconds)
            waited += milliseconds
        } while try !done() && waited < 30_000
    }

    static func counterInMemory(_ guest: TinyGuest) -> UInt64 {
        guest.bytes(at: counterAddress, count: 8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    /// A guest with the in-kernel irqchip and PIT, some non-default state, counted for a while
    /// and stopped; returns its vCPU state, VM state and memory, then destroys it.
    static func countAndSave() throws -> (VCPUState, VMState, [UInt8]) {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm(), irqchip: true)
        try guest.vm.createPIT()
        try guest.startUserMode(counter)
        try guest.vcpu.setMSRs([MSREntry(index: 0x174, data: 0x10), MSREntry(index: 0xC000_0082, data: 0xFFFF_8000_0000_1000)])
        if var debug = try guest.vcpu.debugRegisters() {
            debug.breakpoints = [0x4000, 0x5000, 0, 0]
            try guest.vcpu.setDebugRegisters(debug)
        }
        try run(guest.vcpu, milliseconds: 200) { try guest.vcpu.registers().rax > 1000 }
        let vcpu = try guest.vcpu.state()
        let vm = try guest.vm.state()
        return (vcpu, vm, guest.bytes(at: 0, count: guest.memory.size))
    }

    @Test("A counting CPL3 guest continues from its count after save, destroy and restore into a new VM")
    func counterContinuesAfterRestore() throws {
        let (saved, savedVM, memory) = try Self.countAndSave()
        let count = saved.registers.rax
        #expect(count > 1000, "the guest counted before the save (RAX \(count))")
        #expect((0x2000..<0x2000 + UInt64(Self.counter.count)).contains(saved.registers.rip), "stopped inside the loop")
        #expect(saved.specialRegisters.cs.dpl == 3, "stopped at CPL3")
        #expect(saved.msrs.contains(MSREntry(index: 0x174, data: 0x10)), "IA32_SYSENTER_CS is in the saved MSRs")
        #expect(saved.msrs.contains { $0.index == 0x10 }, "IA32_TSC is in the saved MSRs")
        #expect(saved.lapic != nil && savedVM.picMaster != nil && savedVM.ioapic != nil && savedVM.pit != nil)
        // struct kvm_pic_state: the interrupt mask register is the byte at offset 2.
        #expect(savedVM.picMaster?[2] == 0xFB, "the guest's PIC mask is in the saved state")
        #expect(Self.pitChannel(savedVM.pit, 0).map { [$0.count, UInt32($0.mode)] } == [0x1234, 0], "the guest's PIT programming is in the saved state")

        // Through JSON, as a snapshot file would carry it.
        let decoded = try JSONDecoder().decode(VCPUState.self, from: JSONEncoder().encode(saved))
        let decodedVM = try JSONDecoder().decode(VMState.self, from: JSONEncoder().encode(savedVM))

        let guest = try TinyGuest(hypervisor: KVMSupport.kvm(), irqchip: true)
        try guest.vm.createPIT()
        #expect(Self.counterInMemory(guest) == 0, "the new VM starts with empty memory")
        guest.load(memory, at: 0)
        try guest.vm.restore(decodedVM)
        try guest.vcpu.restore(decoded)

        // Everything reads back as saved, but the TSC, which kept running.
        let restored = try guest.vcpu.state()
        #expect(restored.registers == saved.registers)
        #expect(restored.specialRegisters == saved.specialRegisters)
        #expect(restored.fpu == saved.fpu)
        #expect(restored.xsave == saved.xsave)
        #expect(restored.xcrs == saved.xcrs)
        #expect(restored.lapic == saved.lapic)
        #expect(restored.debugRegisters == saved.debugRegisters)
        #expect(restored.events == saved.events)
        #expect(restored.mpState == saved.mpState)
        #expect(restored.tscKHz == saved.tscKHz)
        #expect(restored.cpuid == saved.cpuid)
        #expect(restored.msrs.map(\.index) == saved.msrs.map(\.index))
        let differing = zip(restored.msrs, saved.msrs).filter { $0.0 != $0.1 && $0.0.index != 0x10 }.map { String($0.0.index, radix: 16) }
        #expect(differing.isEmpty, "MSRs other than IA32_TSC read back as saved; differing: \(differing)")
        // The TSC and kvmclock continue from the saved values. (On this project's PVM hosts the
        // guest TSC is the host's and a written IA32_TSC is accepted but has no effect, measured:
        // there the TSC check holds without the restore; kvmclock's does not.)
        let savedTSC = try #require(saved.msrs.first { $0.index == 0x10 }?.data)
        let restoredTSC = try #require(restored.msrs.first { $0.index == 0x10 }?.data)
        #expect(restoredTSC >= savedTSC && restoredTSC - savedTSC < 60 * 5_000_000_000, "TSC \(savedTSC) -> \(restoredTSC)")
        let restoredVM = try guest.vm.state()
        #expect(restoredVM.picMaster == savedVM.picMaster && restoredVM.picSlave == savedVM.picSlave)
        #expect(restoredVM.ioapic == savedVM.ioapic)
        #expect(restoredVM.pit?.flags == savedVM.pit?.flags)
        #expect(Self.pitChannel(restoredVM.pit, 0).map { [$0.count, UInt32($0.mode)] } == [0x1234, 0], "the PIT was restored")
        if let savedClock = savedVM.clock?.clock, let restoredClock = restoredVM.clock?.clock {
            #expect(restoredClock >= savedClock && restoredClock - savedClock < 60_000_000_000, "kvmclock \(savedClock) -> \(restoredClock) ns")
        }

        try Self.run(guest.vcpu, milliseconds: 100) { try guest.vcpu.registers().rax > count }
        let after = try guest.vcpu.registers().rax
        #expect(after > count, "the counter went on from \(count) (now \(after)), not from 0")
        let inMemory = Self.counterInMemory(guest)
        #expect(inMemory == after || inMemory == after - 1, "memory holds the count (\(inMemory)) next to RAX (\(after))")
    }

    /// Set in the child process of `counterContinuesInNewProcess`: the folder with the snapshot.
    static let childFolderVariable = "CH_TEST_SNAPSHOT_FOLDER"

    @Test("A counting guest saved to files is restored by a new process and counts on")
    func counterContinuesInNewProcess() throws {
        let environment = ProcessInfo.processInfo.environment
        if let folder = environment[Self.childFolderVariable] {
            try Self.restoreAndCount(from: URL(fileURLWithPath: folder))
            return
        }
        let (saved, savedVM, memory) = try Self.countAndSave()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ch-snapshot-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try JSONEncoder().encode(saved).write(to: folder.appendingPathComponent("vcpu.json"))
        try JSONEncoder().encode(savedVM).write(to: folder.appendingPathComponent("vm.json"))
        try Data(memory).write(to: folder.appendingPathComponent("memory"))

        // The test bundle itself, running only this test, with the folder in its environment.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        process.arguments = ["--testing-library", "swift-testing", "--filter", "KVMSnapshotTests/counterContinuesInNewProcess"]
        process.environment = environment.merging([Self.childFolderVariable: folder.path]) { $1 }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // A child whose guest could not be stopped must fail the test, not hang the suite.
        let watchdog = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 180, execute: watchdog)
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        watchdog.cancel()
        #expect(process.terminationStatus == 0 && process.terminationReason == .exit, "the restoring process failed:\n\(text)")
        #expect(process.processIdentifier != getpid())

        let result = try JSONDecoder().decode([String: UInt64].self, from: Data(contentsOf: folder.appendingPathComponent("result.json")))
        let count = saved.registers.rax
        let after = try #require(result["rax"]), inMemory = try #require(result["memory"])
        #expect(after > count, "the new process's guest went on from \(count) (now \(after)), not from 0")
        #expect(inMemory == after || inMemory == after - 1, "memory holds the count (\(inMemory)) next to RAX (\(after))")
    }

    /// The child's half: a fresh VM from the files, checked, run, and its count written back.
    static func restoreAndCount(from folder: URL) throws {
        let saved = try JSONDecoder().decode(VCPUState.self, from: Data(contentsOf: folder.appendingPathComponent("vcpu.json")))
        let savedVM = try JSONDecoder().decode(VMState.self, from: Data(contentsOf: folder.appendingPathComponent("vm.json")))
        let memory = try Data(contentsOf: folder.appendingPathComponent("memory"))
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm(), irqchip: true)
        try guest.vm.createPIT()
        try #require(memory.count == guest.memory.size, "the memory file has \(memory.count) bytes")
        guest.load(Array(memory), at: 0)
        try guest.vm.restore(savedVM)
        try guest.vcpu.restore(saved)
        #expect(try guest.vcpu.registers() == saved.registers)
        #expect(try guest.vcpu.specialRegisters() == saved.specialRegisters)
        #expect(try guest.vm.state().picMaster?[2] == 0xFB, "the PIC mask was restored")
        try run(guest.vcpu, milliseconds: 100) { try guest.vcpu.registers().rax > saved.registers.rax }
        let result = ["rax": try guest.vcpu.registers().rax, "memory": counterInMemory(guest)]
        try JSONEncoder().encode(result).write(to: folder.appendingPathComponent("result.json"))
    }

    @Test("vCPU and VM state survive JSON unchanged")
    func jsonRoundTrip() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm(), irqchip: true)
        try guest.vm.createPIT()
        try guest.startUserMode(Self.counter)
        let state = try guest.vcpu.state()
        let vmState = try guest.vm.state()
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = try encoder.encode(state)
        let back = try JSONDecoder().decode(VCPUState.self, from: json)
        #expect(back == state)
        #expect(try encoder.encode(back) == json, "encoding is stable")
        #expect(try JSONDecoder().decode(VMState.self, from: encoder.encode(vmState)) == vmState)
        #expect(state.version == VCPUState.currentVersion && vmState.version == VMState.currentVersion)
        if let xsave = state.xsave { #expect(xsave.count == guest.vcpu.xsaveSize && xsave.count >= 4096) }
    }

    @Test("A state of another version, another vCPU or a damaged LAPIC page is refused with the reason")
    func refusals() throws {
        let guest = try TinyGuest(hypervisor: KVMSupport.kvm(), irqchip: true)
        try guest.startUserMode(Self.counter)
        var state = try guest.vcpu.state()
        let registersBefore = try guest.vcpu.registers()
        state.version = 7
        state.registers.rax = 0x5555
        let error = #expect(throws: HypervisorError.self) { try guest.vcpu.restore(state) }
        #expect(error?.description.contains("version 7") == true && error?.description.contains("version 1") == true,
                "the message names both versions: \(String(describing: error))")
        #expect(try guest.vcpu.registers() == registersBefore, "nothing was written")

        var vmState = try guest.vm.state()
        vmState.version = 0
        let vmError = #expect(throws: HypervisorError.self) { try guest.vm.restore(vmState) }
        #expect(vmError?.description.contains("version 0") == true && vmError?.description.contains("version 1") == true)

        state.version = VCPUState.currentVersion
        state.id = 3
        let idError = #expect(throws: HypervisorError.self) { try guest.vcpu.restore(state) }
        #expect(idError?.description.contains("vCPU 3") == true)

        let plain = try TinyGuest(hypervisor: KVMSupport.kvm())   // no in-kernel irqchip
        state.id = 0
        let chipError = #expect(throws: HypervisorError.self) { try plain.vcpu.restore(state) }
        #expect(chipError?.description.contains("irqchip") == true)
        #expect(try plain.vcpu.state().lapic == nil, "a VM without the irqchip saves no LAPIC")
        #expect(try plain.vm.state().picMaster == nil && plain.vm.state().pit == nil)
        let noChip = try plain.vcpu.state()
        let lapicError = #expect(throws: HypervisorError.self) { try guest.vcpu.restore(noChip) }
        #expect(lapicError?.description.contains("no in-kernel LAPIC") == true, "the other way round is refused too")
        let vmMismatch = #expect(throws: HypervisorError.self) { try guest.vm.restore(plain.vm.state()) }
        #expect(vmMismatch?.description.contains("no in-kernel irqchip") == true)

        // A page of 1020 bytes, as base64 text.
        let shortPage = "{\"registers\":\"\(Data(repeating: 0, count: 1020).base64EncodedString())\"}"
        #expect(throws: DecodingError.self) { _ = try JSONDecoder().decode(LAPICState.self, from: Data(shortPage.utf8)) }
    }
}
