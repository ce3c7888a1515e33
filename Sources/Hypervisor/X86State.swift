// x86-64 vCPU state as plain Swift values, independent of any backend's C layout.
// The KVM backend converts to and from `kvm_regs`, `kvm_sregs` and friends.

/// The general-purpose registers, instruction pointer and flags.
public struct StandardRegisters: Equatable, Sendable, Codable {
    /// RAX.
    public var rax: UInt64 = 0
    /// RBX.
    public var rbx: UInt64 = 0
    /// RCX.
    public var rcx: UInt64 = 0
    /// RDX.
    public var rdx: UInt64 = 0
    /// RSI.
    public var rsi: UInt64 = 0
    /// RDI.
    public var rdi: UInt64 = 0
    /// RSP.
    public var rsp: UInt64 = 0
    /// RBP.
    public var rbp: UInt64 = 0
    /// R8.
    public var r8: UInt64 = 0
    /// R9.
    public var r9: UInt64 = 0
    /// R10.
    public var r10: UInt64 = 0
    /// R11.
    public var r11: UInt64 = 0
    /// R12.
    public var r12: UInt64 = 0
    /// R13.
    public var r13: UInt64 = 0
    /// R14.
    public var r14: UInt64 = 0
    /// R15.
    public var r15: UInt64 = 0
    /// RIP.
    public var rip: UInt64 = 0
    /// RFLAGS (bit 1 is reserved and always set on real hardware).
    public var rflags: UInt64 = 0x2

    /// All registers zero, RFLAGS at its reset value 0x2.
    public init() {}
}

/// A segment register with its hidden descriptor cache.
public struct SegmentRegister: Equatable, Sendable, Codable {
    /// Base address.
    public var base: UInt64 = 0
    /// Limit (in bytes, already scaled by granularity).
    public var limit: UInt32 = 0xFFFF
    /// Selector.
    public var selector: UInt16 = 0
    /// Descriptor type (4 bits, for example 0xB for 64-bit code, execute/read, accessed).
    public var type: UInt8 = 0
    /// Present bit.
    public var present: Bool = true
    /// Descriptor privilege level (0–3).
    public var dpl: UInt8 = 0
    /// Default operation size bit (32-bit segment).
    public var db: Bool = false
    /// Code/data (true) or system (false) descriptor.
    public var s: Bool = true
    /// 64-bit code segment bit.
    public var l: Bool = false
    /// Granularity bit (limit in 4 KiB units).
    public var g: Bool = false
    /// Available-for-software bit.
    public var avl: Bool = false
    /// Marks the segment unusable (a null selector in protected mode).
    public var unusable: Bool = false

    /// A real-mode style segment: base 0, limit 0xFFFF, present, read/write data.
    public init() {}

    /// A segment with the given fields.
    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool = true, dpl: UInt8 = 0,
                db: Bool = false, s: Bool = true, l: Bool = false, g: Bool = false, avl: Bool = false, unusable: Bool = false) {
        self.base = base
        self.limit = limit
        self.selector = selector
        self.type = type
        self.present = present
        self.dpl = dpl
        self.db = db
        self.s = s
        self.l = l
        self.g = g
        self.avl = avl
        self.unusable = unusable
    }
}

/// The GDTR or IDTR: a descriptor table's base and limit.
public struct DescriptorTable: Equatable, Sendable, Codable {
    /// Base address.
    public var base: UInt64 = 0
    /// Limit (size in bytes minus one).
    public var limit: UInt16 = 0xFFFF

    /// Base 0, limit 0xFFFF (the reset value).
    public init() {}

    /// A table at `base` of `limit + 1` bytes.
    public init(base: UInt64, limit: UInt16) {
        self.base = base
        self.limit = limit
    }
}

/// Segment, control and system registers.
public struct SpecialRegisters: Equatable, Sendable, Codable {
    /// CS.
    public var cs = SegmentRegister()
    /// DS.
    public var ds = SegmentRegister()
    /// ES.
    public var es = SegmentRegister()
    /// FS.
    public var fs = SegmentRegister()
    /// GS.
    public var gs = SegmentRegister()
    /// SS.
    public var ss = SegmentRegister()
    /// The task register.
    public var tr = SegmentRegister()
    /// The LDT register.
    public var ldt = SegmentRegister()
    /// GDTR.
    public var gdt = DescriptorTable()
    /// IDTR.
    public var idt = DescriptorTable()
    /// CR0.
    public var cr0: UInt64 = 0
    /// CR2.
    public var cr2: UInt64 = 0
    /// CR3.
    public var cr3: UInt64 = 0
    /// CR4.
    public var cr4: UInt64 = 0
    /// CR8 (task priority).
    public var cr8: UInt64 = 0
    /// The EFER MSR.
    public var efer: UInt64 = 0
    /// The APIC base MSR.
    public var apicBase: UInt64 = 0
    /// A pending external interrupt, one bit per vector (256 bits), when no in-kernel irqchip is used.
    public var interruptBitmap: [UInt64] = [0, 0, 0, 0]

    /// All zero.
    public init() {}
}

/// The x87 FPU and SSE state (`KVM_GET_FPU`).
public struct FPUState: Equatable, Sendable, Codable {
    /// The eight x87 registers, 16 bytes each (80 bits used).
    public var fpr: [[UInt8]] = Array(repeating: Array(repeating: 0, count: 16), count: 8)
    /// FPU control word (0x37F after FNINIT).
    public var fcw: UInt16 = 0x37F
    /// FPU status word.
    public var fsw: UInt16 = 0
    /// Abridged FPU tag word.
    public var ftwx: UInt8 = 0
    /// Last x87 opcode.
    public var lastOpcode: UInt16 = 0
    /// Last x87 instruction pointer.
    public var lastIP: UInt64 = 0
    /// Last x87 data pointer.
    public var lastDP: UInt64 = 0
    /// The sixteen XMM registers, 16 bytes each.
    public var xmm: [[UInt8]] = Array(repeating: Array(repeating: 0, count: 16), count: 16)
    /// MXCSR (0x1F80 at reset).
    public var mxcsr: UInt32 = 0x1F80

    /// The state after reset (FNINIT and default MXCSR).
    public init() {}

    private enum CodingKeys: String, CodingKey { case fpr, fcw, fsw, ftwx, lastOpcode, lastIP, lastDP, xmm, mxcsr }

    /// Decodes every field (the registers as base64 texts, or numbers as earlier versions wrote them).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        fpr = try c.decodeStateRows(forKey: .fpr)
        fcw = try c.decode(UInt16.self, forKey: .fcw)
        fsw = try c.decode(UInt16.self, forKey: .fsw)
        ftwx = try c.decode(UInt8.self, forKey: .ftwx)
        lastOpcode = try c.decode(UInt16.self, forKey: .lastOpcode)
        lastIP = try c.decode(UInt64.self, forKey: .lastIP)
        lastDP = try c.decode(UInt64.self, forKey: .lastDP)
        xmm = try c.decodeStateRows(forKey: .xmm)
        mxcsr = try c.decode(UInt32.self, forKey: .mxcsr)
    }

    /// Encodes every field, the registers as base64 texts.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeStateRows(fpr, forKey: .fpr)
        try c.encode(fcw, forKey: .fcw)
        try c.encode(fsw, forKey: .fsw)
        try c.encode(ftwx, forKey: .ftwx)
        try c.encode(lastOpcode, forKey: .lastOpcode)
        try c.encode(lastIP, forKey: .lastIP)
        try c.encode(lastDP, forKey: .lastDP)
        try c.encodeStateRows(xmm, forKey: .xmm)
        try c.encode(mxcsr, forKey: .mxcsr)
    }
}

/// One model-specific register and its value.
public struct MSREntry: Equatable, Sendable, Codable {
    /// The MSR number (for example 0xC0000080 for EFER).
    public var index: UInt32
    /// The value.
    public var data: UInt64

    /// Creates the entry.
    public init(index: UInt32, data: UInt64) {
        self.index = index
        self.data = data
    }
}

/// One CPUID leaf (or sub-leaf) as the guest sees it.
public struct CPUIDEntry: Equatable, Sendable, Codable {
    /// The leaf (EAX input).
    public var function: UInt32
    /// The sub-leaf (ECX input), meaningful when `flags` has `significantIndex`.
    public var index: UInt32
    /// KVM CPUID flags (`KVM_CPUID_FLAG_*`).
    public var flags: UInt32
    /// EAX output.
    public var eax: UInt32
    /// EBX output.
    public var ebx: UInt32
    /// ECX output.
    public var ecx: UInt32
    /// EDX output.
    public var edx: UInt32

    /// The flag saying that `index` selects a sub-leaf (`KVM_CPUID_FLAG_SIGNIFCANT_INDEX`).
    public static let significantIndex: UInt32 = 1

    /// Creates the entry.
    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0, eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }
}

/// The local APIC's 1 KiB register page (`KVM_GET_LAPIC`), with typed register access.
public struct LAPICState: Equatable, Sendable, Codable {
    /// The raw register page, 1024 bytes.
    public var registers: [UInt8]

    /// The APIC ID register offset.
    public static let idRegister = 0x20
    /// The spurious-interrupt vector register offset (bit 8 enables the APIC).
    public static let spuriousVectorRegister = 0xF0
    /// The LVT LINT0 register offset.
    public static let lint0Register = 0x350
    /// The LVT LINT1 register offset.
    public static let lint1Register = 0x360

    /// A page of zeros.
    public init() { registers = Array(repeating: 0, count: 1024) }

    /// A page from `registers` (must be 1024 bytes).
    public init(registers: [UInt8]) {
        precondition(registers.count == 1024, "a LAPIC register page is 1024 bytes, got \(registers.count)")
        self.registers = registers
    }

    private enum CodingKeys: String, CodingKey { case registers }

    /// Decodes the page, refusing one that is not exactly 1024 bytes.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let bytes = try container.decodeStateBytes(forKey: .registers)
        guard bytes.count == 1024 else {
            throw DecodingError.dataCorruptedError(forKey: .registers, in: container,
                                                   debugDescription: "a LAPIC register page is 1024 bytes, this one has \(bytes.count)")
        }
        registers = bytes
    }

    /// Encodes the page as base64 text.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeStateBytes(registers, forKey: .registers)
    }

    /// The 32-bit register at `offset` (a multiple of 16 below 1024).
    public func register(at offset: Int) -> UInt32 {
        precondition(offset >= 0 && offset + 4 <= 1024, "LAPIC register offset \(offset) out of range")
        return (0..<4).reduce(UInt32(0)) { $0 | UInt32(registers[offset + $1]) << (8 * UInt32($1)) }
    }

    /// Sets the 32-bit register at `offset`.
    public mutating func setRegister(at offset: Int, _ value: UInt32) {
        precondition(offset >= 0 && offset + 4 <= 1024, "LAPIC register offset \(offset) out of range")
        for i in 0..<4 { registers[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
    }
}

/// An extended control register (`XCR0` and friends) and its value.
public struct ExtendedControlRegister: Equatable, Sendable, Codable {
    /// The register number (0 for XCR0).
    public var register: UInt32
    /// The value.
    public var value: UInt64

    /// Creates the entry.
    public init(register: UInt32, value: UInt64) {
        self.register = register
        self.value = value
    }
}

/// Pending and in-flight events of a vCPU (`KVM_GET_VCPU_EVENTS`): exceptions, interrupts,
/// NMIs, SIPI and SMM state, as needed to save and restore a vCPU exactly.
public struct VCPUEvents: Equatable, Sendable, Codable {
    /// An exception being injected.
    public var exceptionInjected = false
    /// Its vector.
    public var exceptionNumber: UInt8 = 0
    /// Whether it has an error code.
    public var exceptionHasErrorCode = false
    /// An exception pending (not yet injected).
    public var exceptionPending = false
    /// The error code.
    public var exceptionErrorCode: UInt32 = 0
    /// Whether `exceptionPayload` is meaningful.
    public var exceptionHasPayload = false
    /// The exception payload (for example CR2 of a page fault).
    public var exceptionPayload: UInt64 = 0
    /// An external interrupt being injected.
    public var interruptInjected = false
    /// Its vector.
    public var interruptNumber: UInt8 = 0
    /// Whether it is a software interrupt.
    public var interruptSoft = false
    /// The interrupt shadow (after `sti` or `mov ss`).
    public var interruptShadow: UInt8 = 0
    /// An NMI being injected.
    public var nmiInjected = false
    /// An NMI pending.
    public var nmiPending = false
    /// NMIs masked.
    public var nmiMasked = false
    /// The SIPI vector.
    public var sipiVector: UInt32 = 0
    /// The `KVM_VCPUEVENT_VALID_*` flags saying which groups are valid.
    public var flags: UInt32 = 0
    /// In system-management mode.
    public var smm = false
    /// An SMI pending.
    public var smiPending = false
    /// Inside an NMI handler while in SMM.
    public var smmInsideNMI = false
    /// A latched INIT.
    public var latchedInit: UInt8 = 0
    /// A triple fault pending.
    public var tripleFaultPending = false

    /// No events.
    public init() {}
}

/// A vCPU's multiprocessing state (`KVM_GET_MP_STATE`).
public struct MPState: RawRepresentable, Equatable, Sendable, Codable, CustomStringConvertible {
    /// The KVM value (`KVM_MP_STATE_*`).
    public var rawValue: UInt32
    /// Creates the value.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Running (the boot processor after reset).
    public static let runnable = MPState(rawValue: 0)
    /// Waiting for INIT (application processors after reset).
    public static let uninitialized = MPState(rawValue: 1)
    /// INIT received, waiting for SIPI.
    public static let initReceived = MPState(rawValue: 2)
    /// Halted, waiting for an interrupt.
    public static let halted = MPState(rawValue: 3)
    /// SIPI received.
    public static let sipiReceived = MPState(rawValue: 4)

    /// The state's name.
    public var description: String {
        switch rawValue {
        case 0: return "runnable"
        case 1: return "uninitialized"
        case 2: return "init-received"
        case 3: return "halted"
        case 4: return "sipi-received"
        default: return "mp-state \(rawValue)"
        }
    }
}
