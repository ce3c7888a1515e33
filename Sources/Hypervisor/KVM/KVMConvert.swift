import CLinux

/// Conversions between the backend-neutral x86 state types and KVM's C structures.
enum KVMConvert {
    static func registers(_ r: kvm_regs) -> StandardRegisters {
        var s = StandardRegisters()
        s.rax = r.rax; s.rbx = r.rbx; s.rcx = r.rcx; s.rdx = r.rdx
        s.rsi = r.rsi; s.rdi = r.rdi; s.rsp = r.rsp; s.rbp = r.rbp
        s.r8 = r.r8; s.r9 = r.r9; s.r10 = r.r10; s.r11 = r.r11
        s.r12 = r.r12; s.r13 = r.r13; s.r14 = r.r14; s.r15 = r.r15
        s.rip = r.rip; s.rflags = r.rflags
        return s
    }

    static func kvmRegisters(_ s: StandardRegisters) -> kvm_regs {
        kvm_regs(rax: s.rax, rbx: s.rbx, rcx: s.rcx, rdx: s.rdx, rsi: s.rsi, rdi: s.rdi, rsp: s.rsp, rbp: s.rbp,
                 r8: s.r8, r9: s.r9, r10: s.r10, r11: s.r11, r12: s.r12, r13: s.r13, r14: s.r14, r15: s.r15,
                 rip: s.rip, rflags: s.rflags)
    }

    static func segment(_ k: kvm_segment) -> SegmentRegister {
        SegmentRegister(base: k.base, limit: k.limit, selector: k.selector, type: k.type, present: k.present != 0, dpl: k.dpl,
                        db: k.db != 0, s: k.s != 0, l: k.l != 0, g: k.g != 0, avl: k.avl != 0, unusable: k.unusable != 0)
    }

    static func kvmSegment(_ s: SegmentRegister) -> kvm_segment {
        var k = kvm_segment()
        k.base = s.base; k.limit = s.limit; k.selector = s.selector; k.type = s.type
        k.present = s.present ? 1 : 0; k.dpl = s.dpl; k.db = s.db ? 1 : 0; k.s = s.s ? 1 : 0
        k.l = s.l ? 1 : 0; k.g = s.g ? 1 : 0; k.avl = s.avl ? 1 : 0; k.unusable = s.unusable ? 1 : 0
        return k
    }

    static func specialRegisters(_ k: kvm_sregs) -> SpecialRegisters {
        var s = SpecialRegisters()
        s.cs = segment(k.cs); s.ds = segment(k.ds); s.es = segment(k.es); s.fs = segment(k.fs)
        s.gs = segment(k.gs); s.ss = segment(k.ss); s.tr = segment(k.tr); s.ldt = segment(k.ldt)
        s.gdt = DescriptorTable(base: k.gdt.base, limit: k.gdt.limit)
        s.idt = DescriptorTable(base: k.idt.base, limit: k.idt.limit)
        s.cr0 = k.cr0; s.cr2 = k.cr2; s.cr3 = k.cr3; s.cr4 = k.cr4; s.cr8 = k.cr8
        s.efer = k.efer; s.apicBase = k.apic_base
        s.interruptBitmap = withUnsafeBytes(of: k.interrupt_bitmap) { Array($0.bindMemory(to: UInt64.self)) }
        return s
    }

    static func kvmSpecialRegisters(_ s: SpecialRegisters) -> kvm_sregs {
        var k = kvm_sregs()
        k.cs = kvmSegment(s.cs); k.ds = kvmSegment(s.ds); k.es = kvmSegment(s.es); k.fs = kvmSegment(s.fs)
        k.gs = kvmSegment(s.gs); k.ss = kvmSegment(s.ss); k.tr = kvmSegment(s.tr); k.ldt = kvmSegment(s.ldt)
        k.gdt.base = s.gdt.base; k.gdt.limit = s.gdt.limit
        k.idt.base = s.idt.base; k.idt.limit = s.idt.limit
        k.cr0 = s.cr0; k.cr2 = s.cr2; k.cr3 = s.cr3; k.cr4 = s.cr4; k.cr8 = s.cr8
        k.efer = s.efer; k.apic_base = s.apicBase
        withUnsafeMutableBytes(of: &k.interrupt_bitmap) { raw in
            for (i, word) in s.interruptBitmap.prefix(4).enumerated() { raw.storeBytes(of: word, toByteOffset: i * 8, as: UInt64.self) }
        }
        return k
    }

    static func fpu(_ k: kvm_fpu) -> FPUState {
        var s = FPUState()
        s.fpr = withUnsafeBytes(of: k.fpr) { raw in (0..<8).map { Array(raw[($0 * 16)..<($0 * 16 + 16)]) } }
        s.xmm = withUnsafeBytes(of: k.xmm) { raw in (0..<16).map { Array(raw[($0 * 16)..<($0 * 16 + 16)]) } }
        s.fcw = k.fcw; s.fsw = k.fsw; s.ftwx = k.ftwx; s.lastOpcode = k.last_opcode
        s.lastIP = k.last_ip; s.lastDP = k.last_dp; s.mxcsr = k.mxcsr
        return s
    }

    static func kvmFPU(_ s: FPUState) -> kvm_fpu {
        var k = kvm_fpu()
        withUnsafeMutableBytes(of: &k.fpr) { raw in
            for (i, register) in s.fpr.prefix(8).enumerated() {
                for (j, byte) in register.prefix(16).enumerated() { raw[i * 16 + j] = byte }
            }
        }
        withUnsafeMutableBytes(of: &k.xmm) { raw in
            for (i, register) in s.xmm.prefix(16).enumerated() {
                for (j, byte) in register.prefix(16).enumerated() { raw[i * 16 + j] = byte }
            }
        }
        k.fcw = s.fcw; k.fsw = s.fsw; k.ftwx = s.ftwx; k.last_opcode = s.lastOpcode
        k.last_ip = s.lastIP; k.last_dp = s.lastDP; k.mxcsr = s.mxcsr
        return k
    }

    static func cpuid(_ k: kvm_cpuid_entry2) -> CPUIDEntry {
        CPUIDEntry(function: k.function, index: k.index, flags: k.flags, eax: k.eax, ebx: k.ebx, ecx: k.ecx, edx: k.edx)
    }

    static func kvmCPUID(_ s: CPUIDEntry) -> kvm_cpuid_entry2 {
        var k = kvm_cpuid_entry2()
        k.function = s.function; k.index = s.index; k.flags = s.flags
        k.eax = s.eax; k.ebx = s.ebx; k.ecx = s.ecx; k.edx = s.edx
        return k
    }

    static func events(_ k: kvm_vcpu_events) -> VCPUEvents {
        var e = VCPUEvents()
        e.exceptionInjected = k.exception.injected != 0
        e.exceptionNumber = k.exception.nr
        e.exceptionHasErrorCode = k.exception.has_error_code != 0
        e.exceptionPending = k.exception.pending != 0
        e.exceptionErrorCode = k.exception.error_code
        e.exceptionHasPayload = k.exception_has_payload != 0
        e.exceptionPayload = k.exception_payload
        e.interruptInjected = k.interrupt.injected != 0
        e.interruptNumber = k.interrupt.nr
        e.interruptSoft = k.interrupt.soft != 0
        e.interruptShadow = k.interrupt.shadow
        e.nmiInjected = k.nmi.injected != 0
        e.nmiPending = k.nmi.pending != 0
        e.nmiMasked = k.nmi.masked != 0
        e.sipiVector = k.sipi_vector
        e.flags = k.flags
        e.smm = k.smi.smm != 0
        e.smiPending = k.smi.pending != 0
        e.smmInsideNMI = k.smi.smm_inside_nmi != 0
        e.latchedInit = k.smi.latched_init
        e.tripleFaultPending = k.triple_fault.pending != 0
        return e
    }

    static func kvmEvents(_ e: VCPUEvents) -> kvm_vcpu_events {
        var k = kvm_vcpu_events()
        k.exception.injected = e.exceptionInjected ? 1 : 0
        k.exception.nr = e.exceptionNumber
        k.exception.has_error_code = e.exceptionHasErrorCode ? 1 : 0
        k.exception.pending = e.exceptionPending ? 1 : 0
        k.exception.error_code = e.exceptionErrorCode
        k.exception_has_payload = e.exceptionHasPayload ? 1 : 0
        k.exception_payload = e.exceptionPayload
        k.interrupt.injected = e.interruptInjected ? 1 : 0
        k.interrupt.nr = e.interruptNumber
        k.interrupt.soft = e.interruptSoft ? 1 : 0
        k.interrupt.shadow = e.interruptShadow
        k.nmi.injected = e.nmiInjected ? 1 : 0
        k.nmi.pending = e.nmiPending ? 1 : 0
        k.nmi.masked = e.nmiMasked ? 1 : 0
        k.sipi_vector = e.sipiVector
        k.flags = e.flags
        k.smi.smm = e.smm ? 1 : 0
        k.smi.pending = e.smiPending ? 1 : 0
        k.smi.smm_inside_nmi = e.smmInsideNMI ? 1 : 0
        k.smi.latched_init = e.latchedInit
        k.triple_fault.pending = e.tripleFaultPending ? 1 : 0
        return k
    }
}
