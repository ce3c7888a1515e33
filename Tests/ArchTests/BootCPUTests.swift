import Testing
import GuestMemory
import Hypervisor
@testable import Arch

@Suite("Boot CPU state")
struct BootCPUTests {
    @Test func gdtEntriesMatchCloudHypervisor() {
        #expect(GDT.longMode == [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0x008F_8B00_0000_FFFF])
        #expect(GDT.protectedMode == [0, 0x00CF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0x0000_8B00_0000_0067])
        #expect(GDT.entry(flags: 0xA09B, base: 0x1234_5678, limit: 0xFFFFF) == 0x12AF_9B34_5678_FFFF)
    }

    @Test func segmentFromGDTDecodesEveryField() {
        let code = GDT.segment(from: GDT.entry(flags: 0xA09B, base: 0x100000, limit: 0xFFFFF), index: 0)
        #expect(code.g && !code.db && code.l && !code.avl)
        #expect(code.present && code.dpl == 0 && code.s && code.type == 0xB)
        #expect(code.base == 0x100000 && code.limit == 0xFFFF_FFFF && !code.unusable && code.selector == 0)

        let data = GDT.segment(from: GDT.protectedMode[2], index: 2)
        #expect(data.selector == 0x10 && data.db && !data.l && data.type == 0x3 && data.limit == 0xFFFF_FFFF)

        let tss = GDT.segment(from: GDT.protectedMode[3], index: 3)
        #expect(tss.selector == 0x18 && !tss.g && tss.limit == 0x67 && tss.type == 0xB && !tss.s && tss.present)

        let null = GDT.segment(from: 0, index: 0)
        #expect(null.unusable && !null.present)
    }

    @Test func gdtAndIDTAreWrittenAndDescribed() throws {
        let memory = try makeRAM(1 << 20)
        let tables = try GDT.write(GDT.longMode, to: memory)
        #expect(tables.gdt == DescriptorTable(base: 0x500, limit: 31))
        #expect(tables.idt == DescriptorTable(base: 0x520, limit: 7))
        #expect(try read(memory, UInt64.self, at: 0x508) == 0x00AF_9B00_0000_FFFF)
        #expect(try read(memory, UInt64.self, at: 0x518) == 0x008F_8B00_0000_FFFF)
        #expect(try read(memory, UInt64.self, at: 0x520) == 0)
    }

    @Test func identityPageTablesMapTheFirstGiB() throws {
        let memory = try makeRAM(1 << 20)
        try memory.fill(0xFF, count: 0x3000, at: GuestAddress(0x9000))
        let cr3 = try IdentityPageTables.write(to: memory)
        #expect(cr3 == 0x9000)
        #expect(try read(memory, UInt64.self, at: 0x9000) == 0xA003)
        #expect(try read(memory, UInt64.self, at: 0x9008) == 0)
        #expect(try read(memory, UInt64.self, at: 0xA000) == 0xB003)
        for index: UInt64 in [0, 1, 2, 255, 511] {
            #expect(try read(memory, UInt64.self, at: 0xB000 + index * 8) == (index << 21) | 0x83)
        }
    }

    @Test func pvhEntryState() throws {
        let memory = try makeRAM(1 << 20)
        var base = SpecialRegisters()
        base.apicBase = 0xFEE0_0900
        base.cr0 = 0x6000_0010
        let state = try X86BootCPU.bootState(for: .pvh, entry: GuestAddress(0x1000_0A0), memory: memory, base: base)
        #expect(state.registers.rip == 0x1000_0A0 && state.registers.rbx == 0x6000 && state.registers.rflags == 0x2)
        #expect(state.registers.rsp == 0 && state.registers.rsi == 0)
        let sregs = state.specialRegisters
        #expect(sregs.cr0 == 0x1 && sregs.cr4 == 0 && sregs.efer == 0)
        #expect(sregs.cs.selector == 0x08 && sregs.cs.db && !sregs.cs.l && sregs.cs.limit == 0xFFFF_FFFF)
        #expect(sregs.ss == sregs.ds && sregs.es == sregs.ds && sregs.ds.selector == 0x10)
        #expect(sregs.tr.selector == 0x18 && sregs.tr.limit == 0x67)
        #expect(sregs.apicBase == 0xFEE0_0900)
        #expect(try read(memory, UInt64.self, at: 0x508) == 0x00CF_9B00_0000_FFFF)
    }

    @Test func linux64EntryState() throws {
        let memory = try makeRAM(1 << 20)
        var base = SpecialRegisters()
        base.cr0 = 0x6000_0010
        let state = try X86BootCPU.bootState(for: .linux64, entry: GuestAddress(0x100200), memory: memory, base: base)
        let registers = state.registers
        #expect(registers.rip == 0x100200 && registers.rsi == 0x7000)
        #expect(registers.rsp == 0x8FF0 && registers.rbp == 0x8FF0 && registers.rflags == 0x2)
        let sregs = state.specialRegisters
        #expect(sregs.cr0 == 0x8000_0011)
        #expect(sregs.cr3 == 0x9000 && sregs.cr4 & 0x20 != 0)
        #expect(sregs.efer & 0x500 == 0x500)
        #expect(sregs.cs.l && !sregs.cs.db && sregs.cs.selector == 0x08)
        #expect(sregs.tr.type == 0xB && sregs.gdt.limit == 31)
        #expect(try read(memory, UInt64.self, at: 0x9000) == 0xA003)
        #expect(state.fpu.fcw == 0x37F && state.fpu.mxcsr == 0x1F80)
    }

    @Test func bootMSRs() {
        let msrs = X86BootCPU.bootMSRs()
        #expect(msrs.map(\.index) == [0x174, 0x175, 0x176, 0xC000_0081, 0xC000_0083, 0xC000_0102, 0xC000_0084,
                                     0xC000_0082, 0x10, 0x1A0, 0x2FF])
        #expect(msrs.first { $0.index == 0x1A0 }?.data == 1)
        #expect(msrs.first { $0.index == 0x2FF }?.data == 0x806)
        #expect(msrs.filter { $0.index != 0x1A0 && $0.index != 0x2FF }.allSatisfy { $0.data == 0 })
    }

    @Test func localInterruptsAreExtINTAndNMI() {
        var lapic = LAPICState()
        lapic.setRegister(at: LAPICState.lint0Register, 0x0001_0700)  // masked, some mode
        lapic.setRegister(at: LAPICState.lint1Register, 0x0000_0000)
        X86BootCPU.configureLocalInterrupts(&lapic)
        #expect(lapic.register(at: LAPICState.lint0Register) == 0x0001_0700)
        #expect(lapic.register(at: LAPICState.lint1Register) == 0x0000_0400)
        lapic.setRegister(at: LAPICState.lint0Register, 0)
        X86BootCPU.configureLocalInterrupts(&lapic)
        #expect(lapic.register(at: LAPICState.lint0Register) == 0x700)
    }
}
