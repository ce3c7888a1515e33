// Complete, versioned state of an x86-64 vCPU and of a VM's in-kernel devices, for
// snapshot/restore and live migration. Plain `Codable` values: the KVM backend fills them
// from its C structures (byte blobs keep the kernel's own layout and size) and writes them back.

/// The debug registers DR0–DR3, DR6 and DR7 (`KVM_GET_DEBUGREGS`).
public struct DebugRegisters: Equatable, Sendable, Codable {
    /// DR0–DR3, the breakpoint addresses (always four).
    public var breakpoints: [UInt64] = [0, 0, 0, 0]
    /// DR6, the debug status.
    public var dr6: UInt64 = 0xFFFF_0FF0
    /// DR7, the debug control.
    public var dr7: UInt64 = 0x400
    /// `kvm_debugregs.flags` as the kernel reported it.
    public var flags: UInt64 = 0

    /// The reset values.
    public init() {}
}

/// The whole saveable state of one x86-64 vCPU.
///
/// Taken with `X86VirtualCPU.state()` from a vCPU that is not running, and written back with
/// `restore(_:)` into a vCPU that has not run yet (or one of the same VM) with the same
/// in-kernel irqchip setup. Parts a host does not offer are `nil` (and stay untouched on
/// restore); nothing is invented.
public struct VCPUState: Equatable, Sendable, Codable {
    /// The format version of this value; see `currentVersion`.
    public var version: UInt32
    /// The vCPU number it was taken from.
    public var id: UInt32
    /// The CPUID the guest sees (`KVM_GET_CPUID2`); restored first.
    public var cpuid: [CPUIDEntry]
    /// General-purpose registers, RIP and RFLAGS.
    public var registers: StandardRegisters
    /// Segment, control and system registers.
    public var specialRegisters: SpecialRegisters
    /// The x87/SSE state (`KVM_GET_FPU`); restored before `xsave`, which supersedes it.
    public var fpu: FPUState
    /// The XSAVE area in the kernel's `kvm_xsave` layout (`KVM_GET_XSAVE2` where the host has
    /// `KVM_CAP_XSAVE2`, then possibly more than 4096 bytes; else `KVM_GET_XSAVE`, 4096 bytes);
    /// `nil` without `KVM_CAP_XSAVE`.
    public var xsave: [UInt8]?
    /// The extended control registers (`KVM_GET_XCRS`); `nil` without `KVM_CAP_XCRS`.
    public var xcrs: [ExtendedControlRegister]?
    /// Every MSR of KVM's save list (`KVM_GET_MSR_INDEX_LIST`) that `KVM_GET_MSRS` reads on
    /// this vCPU, in the list's order; IA32_TSC (0x10) is among them.
    public var msrs: [MSREntry]
    /// The local APIC page; `nil` when the VM has no in-kernel irqchip.
    public var lapic: LAPICState?
    /// The debug registers; `nil` without `KVM_CAP_DEBUGREGS`.
    public var debugRegisters: DebugRegisters?
    /// The guest TSC frequency in kHz (`KVM_GET_TSC_KHZ`); `nil` without `KVM_CAP_GET_TSC_KHZ`.
    public var tscKHz: UInt32?
    /// Pending and in-flight events; restored after everything above.
    public var events: VCPUEvents
    /// The multiprocessing state; restored last.
    public var mpState: MPState

    /// The version this code writes and accepts.
    public static let currentVersion: UInt32 = 1

    /// Creates a state value (normally done by a backend's `state()`).
    public init(id: UInt32, cpuid: [CPUIDEntry], registers: StandardRegisters, specialRegisters: SpecialRegisters, fpu: FPUState,
                xsave: [UInt8]?, xcrs: [ExtendedControlRegister]?, msrs: [MSREntry], lapic: LAPICState?,
                debugRegisters: DebugRegisters?, tscKHz: UInt32?, events: VCPUEvents, mpState: MPState) {
        version = Self.currentVersion
        self.id = id
        self.cpuid = cpuid
        self.registers = registers
        self.specialRegisters = specialRegisters
        self.fpu = fpu
        self.xsave = xsave
        self.xcrs = xcrs
        self.msrs = msrs
        self.lapic = lapic
        self.debugRegisters = debugRegisters
        self.tscKHz = tscKHz
        self.events = events
        self.mpState = mpState
    }

    /// Throws unless `version` is `currentVersion`.
    public func checkVersion() throws(HypervisorError) {
        try checkStateVersion("vCPU \(id) state", found: version, expected: Self.currentVersion)
    }

    private enum CodingKeys: String, CodingKey {
        case version, id, cpuid, registers, specialRegisters, fpu, xsave, xcrs, msrs, lapic, debugRegisters, tscKHz, events, mpState
    }

    /// Decodes every field; an absent part must be written as `null`, so that a damaged file
    /// missing a key is refused instead of restoring without that part.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(UInt32.self, forKey: .version)
        id = try c.decode(UInt32.self, forKey: .id)
        cpuid = try c.decode([CPUIDEntry].self, forKey: .cpuid)
        registers = try c.decode(StandardRegisters.self, forKey: .registers)
        specialRegisters = try c.decode(SpecialRegisters.self, forKey: .specialRegisters)
        fpu = try c.decode(FPUState.self, forKey: .fpu)
        xsave = try c.decodeStateBytesIfNotNull(forKey: .xsave)
        xcrs = try c.decode([ExtendedControlRegister]?.self, forKey: .xcrs)
        msrs = try c.decode([MSREntry].self, forKey: .msrs)
        lapic = try c.decode(LAPICState?.self, forKey: .lapic)
        debugRegisters = try c.decode(DebugRegisters?.self, forKey: .debugRegisters)
        tscKHz = try c.decode(UInt32?.self, forKey: .tscKHz)
        events = try c.decode(VCPUEvents.self, forKey: .events)
        mpState = try c.decode(MPState.self, forKey: .mpState)
    }

    /// Encodes every field, absent parts as `null`.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(version, forKey: .version)
        try c.encode(id, forKey: .id)
        try c.encode(cpuid, forKey: .cpuid)
        try c.encode(registers, forKey: .registers)
        try c.encode(specialRegisters, forKey: .specialRegisters)
        try c.encode(fpu, forKey: .fpu)
        try c.encodeStateBytes(xsave, forKey: .xsave)
        try c.encode(xcrs, forKey: .xcrs)
        try c.encode(msrs, forKey: .msrs)
        try c.encode(lapic, forKey: .lapic)
        try c.encode(debugRegisters, forKey: .debugRegisters)
        try c.encode(tscKHz, forKey: .tscKHz)
        try c.encode(events, forKey: .events)
        try c.encode(mpState, forKey: .mpState)
    }
}

/// The i8254 PIT state (`KVM_GET_PIT2`).
public struct PITState: Equatable, Sendable, Codable {
    /// The three channels, `struct kvm_pit_channel_state[3]` in the kernel's layout.
    public var channels: [UInt8]
    /// `kvm_pit_state2.flags` (`KVM_PIT_FLAGS_HPET_LEGACY`, `KVM_PIT_FLAGS_SPEAKER_DATA_ON`).
    public var flags: UInt32

    /// Creates the value.
    public init(channels: [UInt8], flags: UInt32) {
        self.channels = channels
        self.flags = flags
    }

    private enum CodingKeys: String, CodingKey { case channels, flags }

    /// Decodes the channels (base64 text, or numbers as earlier versions wrote them) and flags.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        channels = try c.decodeStateBytes(forKey: .channels)
        flags = try c.decode(UInt32.self, forKey: .flags)
    }

    /// Encodes the channels as base64 text.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeStateBytes(channels, forKey: .channels)
        try c.encode(flags, forKey: .flags)
    }
}

/// The kvmclock value (`KVM_GET_CLOCK`).
public struct ClockState: Equatable, Sendable, Codable {
    /// The guest clock in nanoseconds.
    public var clock: UInt64
    /// `KVM_CLOCK_*` flags: which of the fields below are valid, and whether the TSC is stable.
    public var flags: UInt32
    /// Host CLOCK_REALTIME in nanoseconds when taken (valid with `KVM_CLOCK_REALTIME`).
    public var realtime: UInt64
    /// The host TSC when taken (valid with `KVM_CLOCK_HOST_TSC`).
    public var hostTSC: UInt64

    /// Creates the value.
    public init(clock: UInt64, flags: UInt32, realtime: UInt64 = 0, hostTSC: UInt64 = 0) {
        self.clock = clock
        self.flags = flags
        self.realtime = realtime
        self.hostTSC = hostTSC
    }
}

/// The state of a VM's in-kernel devices: the 8259 PICs and IOAPIC of the irqchip, the PIT
/// and kvmclock. Devices the VM does not have are `nil`.
public struct VMState: Equatable, Sendable, Codable {
    /// The format version of this value; see `currentVersion`.
    public var version: UInt32
    /// The master PIC, `struct kvm_pic_state` in the kernel's layout (`KVM_GET_IRQCHIP`, chip 0).
    public var picMaster: [UInt8]?
    /// The slave PIC, `struct kvm_pic_state` (chip 1).
    public var picSlave: [UInt8]?
    /// The IOAPIC, `struct kvm_ioapic_state` (chip 2).
    public var ioapic: [UInt8]?
    /// The PIT; `nil` when the VM has no in-kernel PIT.
    public var pit: PITState?
    /// kvmclock; `nil` when the host cannot report it.
    public var clock: ClockState?

    /// The version this code writes and accepts.
    public static let currentVersion: UInt32 = 1

    /// Creates a state value (normally done by a backend's `state()`).
    public init(picMaster: [UInt8]?, picSlave: [UInt8]?, ioapic: [UInt8]?, pit: PITState?, clock: ClockState?) {
        version = Self.currentVersion
        self.picMaster = picMaster
        self.picSlave = picSlave
        self.ioapic = ioapic
        self.pit = pit
        self.clock = clock
    }

    /// Throws unless `version` is `currentVersion`.
    public func checkVersion() throws(HypervisorError) {
        try checkStateVersion("VM state", found: version, expected: Self.currentVersion)
    }

    private enum CodingKeys: String, CodingKey { case version, picMaster, picSlave, ioapic, pit, clock }

    /// Decodes every field; an absent device must be written as `null` (a missing key is damage).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(UInt32.self, forKey: .version)
        picMaster = try c.decodeStateBytesIfNotNull(forKey: .picMaster)
        picSlave = try c.decodeStateBytesIfNotNull(forKey: .picSlave)
        ioapic = try c.decodeStateBytesIfNotNull(forKey: .ioapic)
        pit = try c.decode(PITState?.self, forKey: .pit)
        clock = try c.decode(ClockState?.self, forKey: .clock)
    }

    /// Encodes every field, absent devices as `null`.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(version, forKey: .version)
        try c.encodeStateBytes(picMaster, forKey: .picMaster)
        try c.encodeStateBytes(picSlave, forKey: .picSlave)
        try c.encodeStateBytes(ioapic, forKey: .ioapic)
        try c.encode(pit, forKey: .pit)
        try c.encode(clock, forKey: .clock)
    }
}

func checkStateVersion(_ what: String, found: UInt32, expected: UInt32) throws(HypervisorError) {
    guard found == expected else {
        throw .invalidArgument("\(what) has format version \(found), but this VMM reads and writes version \(expected) only; restore it with the VMM that saved it")
    }
}

/// `VMState` under a second name, for modules that have a `VMState` of their own (the VMM's
/// lifecycle state).
public typealias InKernelVMState = VMState
