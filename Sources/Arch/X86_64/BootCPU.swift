import GuestMemory
import Hypervisor

/// How the boot vCPU enters the kernel.
public enum X86BootProtocol: Hashable, Sendable, CustomStringConvertible {
    /// The PVH ABI: 32-bit protected mode with paging off at the ELF note's entry, `rbx`
    /// pointing at the `hvm_start_info`. Cloud Hypervisor's way for an ELF `vmlinux`.
    case pvh
    /// The Linux 64-bit boot protocol: long mode on identity page tables at the 64-bit
    /// entry, `rsi` pointing at the zero page. The way for a bzImage.
    case linux64

    /// The protocol's name.
    public var description: String {
        switch self {
        case .pvh: return "PVH boot protocol"
        case .linux64: return "Linux 64-bit boot protocol"
        }
    }
}

/// The registers a boot vCPU starts with.
public struct X86BootState: Equatable, Sendable {
    /// The general-purpose registers.
    public var registers: StandardRegisters
    /// The segment, control and system registers.
    public var specialRegisters: SpecialRegisters
    /// The FPU and SSE state.
    public var fpu: FPUState
    /// The MSRs to set.
    public var msrs: [MSREntry]
}

/// The boot vCPU's initial state for each entry, Cloud Hypervisor's choices.
public enum X86BootCPU {
    /// CR0.PE: protected mode.
    public static let cr0ProtectionEnable: UInt64 = 1 << 0
    /// CR0.NW: not write-through (with CD, disables caching).
    public static let cr0NotWriteThrough: UInt64 = 1 << 29
    /// CR0.CD: cache disable.
    public static let cr0CacheDisable: UInt64 = 1 << 30
    /// CR0.PG: paging.
    public static let cr0Paging: UInt64 = 1 << 31
    /// CR4.PAE: physical address extension (required for long mode).
    public static let cr4PAE: UInt64 = 1 << 5
    /// EFER.LME: long mode enable.
    public static let eferLME: UInt64 = 1 << 8
    /// EFER.LMA: long mode active.
    public static let eferLMA: UInt64 = 1 << 10

    /// `IA32_TIME_STAMP_COUNTER`.
    public static let msrTSC: UInt32 = 0x10
    /// `IA32_SYSENTER_CS`.
    public static let msrSysenterCS: UInt32 = 0x174
    /// `IA32_SYSENTER_ESP`.
    public static let msrSysenterESP: UInt32 = 0x175
    /// `IA32_SYSENTER_EIP`.
    public static let msrSysenterEIP: UInt32 = 0x176
    /// `IA32_MISC_ENABLE`.
    public static let msrMiscEnable: UInt32 = 0x1A0
    /// `IA32_MISC_ENABLE` bit 0: fast string operations.
    public static let miscEnableFastString: UInt64 = 1 << 0
    /// `IA32_MTRR_DEF_TYPE`.
    public static let msrMTRRDefType: UInt32 = 0x2FF
    /// `IA32_MTRR_DEF_TYPE` value: MTRRs enabled (bit 11), default type write-back (6).
    public static let mtrrEnableWriteBack: UInt64 = 0x806
    /// `STAR` (SYSCALL segments).
    public static let msrSTAR: UInt32 = 0xC000_0081
    /// `LSTAR` (64-bit SYSCALL target).
    public static let msrLSTAR: UInt32 = 0xC000_0082
    /// `CSTAR` (compatibility-mode SYSCALL target).
    public static let msrCSTAR: UInt32 = 0xC000_0083
    /// `SFMASK` (SYSCALL flag mask).
    public static let msrSyscallMask: UInt32 = 0xC000_0084
    /// `KERNEL_GS_BASE` (SWAPGS).
    public static let msrKernelGSBase: UInt32 = 0xC000_0102

    /// LVT delivery mode NMI.
    public static let deliveryModeNMI: UInt32 = 4
    /// LVT delivery mode ExtINT (the 8259 PIC's interrupts).
    public static let deliveryModeExtINT: UInt32 = 7

    /// The MSRs every vCPU gets at boot, in Cloud Hypervisor's order: the SYSENTER and
    /// SYSCALL MSRs and `KERNEL_GS_BASE` cleared, the TSC at 0, fast strings enabled in
    /// `IA32_MISC_ENABLE`, and MTRRs enabled with write-back as the default memory type.
    public static func bootMSRs() -> [MSREntry] {
        [
            MSREntry(index: msrSysenterCS, data: 0),
            MSREntry(index: msrSysenterESP, data: 0),
            MSREntry(index: msrSysenterEIP, data: 0),
            MSREntry(index: msrSTAR, data: 0),
            MSREntry(index: msrCSTAR, data: 0),
            MSREntry(index: msrKernelGSBase, data: 0),
            MSREntry(index: msrSyscallMask, data: 0),
            MSREntry(index: msrLSTAR, data: 0),
            MSREntry(index: msrTSC, data: 0),
            MSREntry(index: msrMiscEnable, data: miscEnableFastString),
            MSREntry(index: msrMTRRDefType, data: mtrrEnableWriteBack),
        ]
    }

    /// The FPU state at boot: FCW 0x37F (all exceptions masked, extended precision) and
    /// MXCSR 0x1F80 (all SSE exceptions masked), everything else zero.
    public static func bootFPU() -> FPUState {
        var fpu = FPUState()
        fpu.fcw = 0x37F
        fpu.mxcsr = 0x1F80
        return fpu
    }

    /// Routes the local APIC's LINT0 to ExtINT and LINT1 to NMI (each LVT register's
    /// delivery-mode field, bits 10..8, replaced; the other bits kept), as a PC's BSP wires
    /// them for the 8259 PIC and the NMI line.
    public static func configureLocalInterrupts(_ lapic: inout LAPICState) {
        let lint0 = lapic.register(at: LAPICState.lint0Register)
        lapic.setRegister(at: LAPICState.lint0Register, (lint0 & ~0x700) | (deliveryModeExtINT << 8))
        let lint1 = lapic.register(at: LAPICState.lint1Register)
        lapic.setRegister(at: LAPICState.lint1Register, (lint1 & ~0x700) | (deliveryModeNMI << 8))
    }

    /// The general-purpose registers for a PVH entry: `rip` the PVH entry, `rbx` the start
    /// info's address, RFLAGS 0x2, everything else zero.
    public static func pvhRegisters(entry: GuestAddress,
                                    startInfo: GuestAddress = X86Layout.pvhInfoStart) -> StandardRegisters {
        var registers = StandardRegisters()
        registers.rflags = 0x2
        registers.rip = entry.rawValue
        registers.rbx = startInfo.rawValue
        return registers
    }

    /// The general-purpose registers for a 64-bit Linux entry: `rip` the entry, `rsi` the
    /// zero page, `rsp` and `rbp` the boot stack, RFLAGS 0x2.
    public static func linux64Registers(entry: GuestAddress, bootParams: GuestAddress = X86Layout.zeroPageStart,
                                        stackPointer: GuestAddress = X86Layout.bootStackPointer) -> StandardRegisters {
        var registers = StandardRegisters()
        registers.rflags = 0x2
        registers.rip = entry.rawValue
        registers.rsi = bootParams.rawValue
        registers.rsp = stackPointer.rawValue
        registers.rbp = stackPointer.rawValue
        return registers
    }

    /// `base` (the vCPU's current special registers, which keep their APIC base and the
    /// like) set up for a PVH entry: CS/DS/ES/FS/GS/SS flat 32-bit from `GDT.protectedMode`,
    /// TR its TSS, the given GDTR/IDTR, CR0 = PE only (paging off), CR4 = 0, EFER = 0.
    public static func pvhSpecialRegisters(from base: SpecialRegisters, gdt: DescriptorTable,
                                           idt: DescriptorTable) -> SpecialRegisters {
        var registers = loadSegments(GDT.protectedMode, into: base, gdt: gdt, idt: idt)
        registers.cr0 = cr0ProtectionEnable
        registers.cr4 = 0
        registers.efer = 0
        return registers
    }

    /// `base` set up for a 64-bit Linux entry: segments from `GDT.longMode` (64-bit code),
    /// the given GDTR/IDTR, CR3 the identity PML4, CR4.PAE, EFER.LME|LMA, and CR0 with PE
    /// and PG set and CD/NW cleared (caches on).
    public static func linux64SpecialRegisters(from base: SpecialRegisters, gdt: DescriptorTable,
                                               idt: DescriptorTable, cr3: UInt64 = X86Layout.pml4Start.rawValue) -> SpecialRegisters {
        var registers = loadSegments(GDT.longMode, into: base, gdt: gdt, idt: idt)
        registers.cr0 = (registers.cr0 & ~(cr0CacheDisable | cr0NotWriteThrough)) | cr0ProtectionEnable | cr0Paging
        registers.cr3 = cr3
        registers.cr4 |= cr4PAE
        registers.efer |= eferLME | eferLMA
        return registers
    }

    /// Loads code, data and TSS segments from `table` and the descriptor-table registers.
    static func loadSegments(_ table: [UInt64], into base: SpecialRegisters, gdt: DescriptorTable,
                             idt: DescriptorTable) -> SpecialRegisters {
        var registers = base
        let code = GDT.segment(from: table[Int(GDT.codeIndex)], index: GDT.codeIndex)
        let data = GDT.segment(from: table[Int(GDT.dataIndex)], index: GDT.dataIndex)
        registers.cs = code
        registers.ds = data
        registers.es = data
        registers.fs = data
        registers.gs = data
        registers.ss = data
        registers.tr = GDT.segment(from: table[Int(GDT.tssIndex)], index: GDT.tssIndex)
        registers.gdt = gdt
        registers.idt = idt
        return registers
    }

    /// Writes the boot GDT and IDT (and, for `.linux64`, the identity page tables) to
    /// `memory` and returns the boot vCPU's full initial state for entering `entry` by
    /// `bootProtocol`, starting from its current special registers `base`.
    ///
    /// - Throws: `.guestMemory` when RAM does not back the tables.
    public static func bootState(for bootProtocol: X86BootProtocol, entry: GuestAddress, memory: GuestMemory,
                                 base: SpecialRegisters) throws(ArchError) -> X86BootState {
        switch bootProtocol {
        case .pvh:
            let tables = try GDT.write(GDT.protectedMode, to: memory)
            return X86BootState(registers: pvhRegisters(entry: entry),
                                specialRegisters: pvhSpecialRegisters(from: base, gdt: tables.gdt, idt: tables.idt),
                                fpu: bootFPU(), msrs: bootMSRs())
        case .linux64:
            let tables = try GDT.write(GDT.longMode, to: memory)
            let cr3 = try IdentityPageTables.write(to: memory)
            return X86BootState(registers: linux64Registers(entry: entry),
                                specialRegisters: linux64SpecialRegisters(from: base, gdt: tables.gdt, idt: tables.idt, cr3: cr3),
                                fpu: bootFPU(), msrs: bootMSRs())
        }
    }
}
