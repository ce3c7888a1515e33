import HostSystem

/// Which hypervisor a backend drives.
public enum HypervisorKind: String, Sendable {
    /// Linux KVM (`/dev/kvm`).
    case kvm
    /// Microsoft Hypervisor on Linux (`/dev/mshv`), reserved for a later backend.
    case mshv
}

/// A hypervisor: the entry point that creates virtual machines.
///
/// The KVM implementation is `KVMHypervisor`. The protocols here hold what every
/// architecture shares; x86-64 specifics live in `X86VirtualMachine` and `X86VirtualCPU`
/// so AArch64 and MSHV backends can be added beside them.
public protocol Hypervisor: AnyObject, Sendable {
    /// The kind of hypervisor.
    var kind: HypervisorKind { get }
    /// Creates an empty virtual machine.
    func createVirtualMachine() throws(HypervisorError) -> any VirtualMachine
}

/// A guest-physical range backed by host memory, as registered with the hypervisor.
public struct MemorySlot: Equatable, @unchecked Sendable {
    // SAFETY (Sendable): hostAddress is only handed to the kernel, never dereferenced here.

    /// Flags of a memory slot.
    public struct Flags: OptionSet, Sendable {
        /// The flag bits.
        public let rawValue: UInt32
        /// Creates flags from bits.
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Track the pages the guest writes (`KVM_MEM_LOG_DIRTY_PAGES`).
        public static let logDirtyPages = Flags(rawValue: 1 << 0)
        /// Guest writes exit as MMIO instead of changing memory (`KVM_MEM_READONLY`).
        public static let readOnly = Flags(rawValue: 1 << 1)
    }

    /// The slot number (unique in the VM).
    public var slot: UInt32
    /// The first guest-physical address.
    public var guestAddress: UInt64
    /// The size in bytes (a multiple of the page size).
    public var size: UInt64
    /// The host virtual address backing the first byte (page-aligned).
    public var hostAddress: UnsafeMutableRawPointer
    /// The slot's flags.
    public var flags: Flags

    /// Creates a slot description.
    public init(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UnsafeMutableRawPointer, flags: Flags = []) {
        self.slot = slot
        self.guestAddress = guestAddress
        self.size = size
        self.hostAddress = hostAddress
        self.flags = flags
    }

    /// Whether the two slots share a guest-physical byte.
    public func overlaps(_ other: MemorySlot) -> Bool {
        guestAddress <= other.guestAddress &+ (other.size &- 1) && other.guestAddress <= guestAddress &+ (size &- 1)
    }
}

/// Where an ioeventfd listens: a port or a guest-physical MMIO address.
public enum IOEventAddress: Equatable, Sendable {
    /// An I/O port.
    case pio(UInt16)
    /// A guest-physical MMIO address.
    case mmio(UInt64)
}

/// An interrupt controller input, for GSI routing.
public enum IRQChip: UInt32, Sendable {
    /// The master 8259 PIC (pins 0–7).
    case picMaster = 0
    /// The slave 8259 PIC (pins 0–7, IRQs 8–15).
    case picSlave = 1
    /// The IOAPIC (pins 0–23).
    case ioapic = 2
}

/// Where a GSI goes: an interrupt controller pin or a message-signalled interrupt.
public enum InterruptRoute: Equatable, Sendable {
    /// GSI `gsi` asserts `pin` of `chip`.
    case irqchip(gsi: UInt32, chip: IRQChip, pin: UInt32)
    /// GSI `gsi` sends an MSI with `address` and `data` (and a device id where the platform needs one).
    case msi(gsi: UInt32, address: UInt64, data: UInt32, deviceID: UInt32? = nil)

    /// The GSI routed.
    public var gsi: UInt32 {
        switch self {
        case .irqchip(let gsi, _, _), .msi(let gsi, _, _, _): return gsi
        }
    }

    /// The x86 default: GSIs 0–15 to the PICs (but 2, the cascade) and GSIs 0–23 to the
    /// IOAPIC pins of the same number, as the kernel sets up by itself with an in-kernel irqchip.
    public static func x86LegacyRoutes() -> [InterruptRoute] {
        var routes: [InterruptRoute] = []
        for gsi in UInt32(0)..<16 where gsi != 2 {
            routes.append(.irqchip(gsi: gsi, chip: gsi < 8 ? .picMaster : .picSlave, pin: gsi % 8))
        }
        for gsi in UInt32(0)..<24 {
            routes.append(.irqchip(gsi: gsi, chip: .ioapic, pin: gsi))
        }
        return routes
    }
}

/// A virtual machine: guest memory slots, interrupt plumbing and vCPUs.
public protocol VirtualMachine: AnyObject, Sendable {
    /// Registers or replaces a guest memory slot. Slots may not overlap.
    func setMemorySlot(_ slot: MemorySlot) throws(HypervisorError)
    /// Removes the slot with this number.
    func removeMemorySlot(_ slot: UInt32) throws(HypervisorError)
    /// The registered slots, sorted by number.
    var memorySlots: [MemorySlot] { get }
    /// Creates vCPU number `id`.
    func createVCPU(id: UInt32) throws(HypervisorError) -> any VirtualCPU
    /// Makes a signal on `eventfd` inject GSI `gsi` (irqfd); with `resample`, a level-triggered line.
    func registerIRQFD(_ eventfd: EventFD, gsi: UInt32, resample: EventFD?) throws(HypervisorError)
    /// Undoes `registerIRQFD`.
    func unregisterIRQFD(_ eventfd: EventFD, gsi: UInt32) throws(HypervisorError)
    /// Makes guest writes of `length` bytes to `address` (with value `datamatch`, if given)
    /// signal `eventfd` instead of exiting (ioeventfd).
    func registerIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError)
    /// Undoes `registerIOEventFD` (the same arguments).
    func unregisterIOEventFD(_ eventfd: EventFD, address: IOEventAddress, length: UInt32, datamatch: UInt64?) throws(HypervisorError)
    /// Replaces the whole GSI routing table.
    func setGSIRouting(_ routes: [InterruptRoute]) throws(HypervisorError)
    /// Raises or lowers an interrupt line of the in-kernel irqchip.
    func setIRQLine(_ irq: UInt32, active: Bool) throws(HypervisorError)
    /// Sends one MSI directly.
    func signalMSI(address: UInt64, data: UInt32) throws(HypervisorError)
    /// The pages the guest wrote in `slot` since the last call, one bit per page, and clears them.
    func dirtyLog(slot: UInt32) throws(HypervisorError) -> [UInt64]
    /// Makes guest writes to the ports `[port, port + length)` go into a ring instead of
    /// exiting: each vCPU loop hands them to the device, in order, through
    /// ``VirtualCPU/drainCoalescedWrites(_:)`` before it handles its next exit. Only for
    /// registers whose write has no effect the guest could see before its next exit (an
    /// address register read through another port). Returns false where the hypervisor
    /// cannot (every write then exits as before).
    func registerCoalescedPortIO(port: UInt16, length: UInt32) throws(HypervisorError) -> Bool
    /// Makes writes to a zone ``registerCoalescedPortIO(port:length:)`` registered exit again.
    /// Writes the ring already holds stay there for the next drain; once this returns, no
    /// vCPU adds one.
    func unregisterCoalescedPortIO(port: UInt16, length: UInt32) throws(HypervisorError)
    /// Hands every write queued in the coalesced ring to `body`, oldest first, from any
    /// thread (a timer that bounds how long a write waits when no vCPU exits), serialised
    /// with the vCPUs' own drains. Nothing happens before the first vCPU exists.
    func drainCoalescedWrites(_ body: (CoalescedWrite) -> Void)
}

extension VirtualMachine {
    /// No coalescing: every write exits.
    public func registerCoalescedPortIO(port: UInt16, length: UInt32) throws(HypervisorError) -> Bool { false }
    /// No coalescing: nothing to unregister.
    public func unregisterCoalescedPortIO(port: UInt16, length: UInt32) throws(HypervisorError) {}
    /// No ring: nothing to drain.
    public func drainCoalescedWrites(_ body: (CoalescedWrite) -> Void) {}
}

/// A guest write the hypervisor queued instead of exiting (``VirtualMachine/registerCoalescedPortIO(port:length:)``).
public struct CoalescedWrite: Equatable, Sendable {
    /// Port I/O (else MMIO).
    public var isPortIO: Bool
    /// The port or guest-physical address.
    public var address: UInt64
    /// The access size in bytes (1 to 8).
    public var size: Int
    /// The value written, little-endian in the low `size` bytes.
    public var value: UInt64

    /// Creates a write record.
    public init(isPortIO: Bool, address: UInt64, size: Int, value: UInt64) {
        self.isPortIO = isPortIO
        self.address = address
        self.size = size
        self.value = value
    }
}

/// x86-64 specifics of a virtual machine.
public protocol X86VirtualMachine: VirtualMachine {
    /// Places the three-page TSS region KVM needs on Intel (below 4 GiB, outside RAM).
    func setTSSAddress(_ address: UInt64) throws(HypervisorError)
    /// Places the one-page identity map KVM needs on Intel.
    func setIdentityMapAddress(_ address: UInt64) throws(HypervisorError)
    /// Creates the in-kernel PIC, IOAPIC and LAPICs.
    func createIRQChip() throws(HypervisorError)
    /// Creates the in-kernel i8254 PIT.
    func createPIT() throws(HypervisorError)
    /// The state of the in-kernel devices (PICs, IOAPIC, PIT) and the guest clock. Take it
    /// with every vCPU stopped.
    func state() throws(HypervisorError) -> VMState
    /// Writes back a state from `state()`; the VM must have the same in-kernel devices.
    /// A state of another format version is refused.
    func restore(_ state: VMState) throws(HypervisorError)
}

/// Something that can make a vCPU's `run()` return `.interrupted` from another thread.
public protocol VCPUKicker: Sendable {
    /// Makes the vCPU leave (or not enter) the guest as soon as possible.
    func kick()
}

/// A virtual CPU. `run()` blocks in the guest; call it from the vCPU's own thread.
public protocol VirtualCPU: AnyObject, Sendable {
    /// The vCPU number.
    var id: UInt32 { get }
    /// Enters the guest and returns at the next exit the VMM must handle.
    func run() throws(HypervisorError) -> VCPUExit
    /// A handle other threads use to interrupt `run()`.
    var kicker: any VCPUKicker { get }
    /// Hands every write queued in the VM's coalesced ring to `body`, oldest first (one vCPU
    /// at a time drains). Call it after each `run()`, before handling the exit. When it
    /// returns, every write queued before the exit has reached `body` here or in another
    /// vCPU's drain (a drain in progress elsewhere is waited for).
    func drainCoalescedWrites(_ body: (CoalescedWrite) -> Void)
}

extension VirtualCPU {
    /// No ring: nothing to drain.
    public func drainCoalescedWrites(_ body: (CoalescedWrite) -> Void) {}
}

/// x86-64 state access of a vCPU.
public protocol X86VirtualCPU: VirtualCPU {
    /// The general-purpose registers.
    func registers() throws(HypervisorError) -> StandardRegisters
    /// Sets the general-purpose registers.
    func setRegisters(_ registers: StandardRegisters) throws(HypervisorError)
    /// Segment, control and system registers.
    func specialRegisters() throws(HypervisorError) -> SpecialRegisters
    /// Sets segment, control and system registers.
    func setSpecialRegisters(_ registers: SpecialRegisters) throws(HypervisorError)
    /// The x87/SSE state.
    func fpu() throws(HypervisorError) -> FPUState
    /// Sets the x87/SSE state.
    func setFPU(_ state: FPUState) throws(HypervisorError)
    /// Reads the MSRs named by `indices`.
    func msrs(_ indices: [UInt32]) throws(HypervisorError) -> [MSREntry]
    /// Writes MSRs; fails if the kernel accepts fewer than all.
    func setMSRs(_ entries: [MSREntry]) throws(HypervisorError)
    /// The CPUID the guest sees.
    func cpuid() throws(HypervisorError) -> [CPUIDEntry]
    /// Sets the CPUID the guest sees.
    func setCPUID(_ entries: [CPUIDEntry]) throws(HypervisorError)
    /// The local APIC registers.
    func lapic() throws(HypervisorError) -> LAPICState
    /// Sets the local APIC registers.
    func setLAPIC(_ state: LAPICState) throws(HypervisorError)
    /// The extended control registers.
    func xcrs() throws(HypervisorError) -> [ExtendedControlRegister]
    /// Sets the extended control registers.
    func setXCRs(_ registers: [ExtendedControlRegister]) throws(HypervisorError)
    /// Pending events.
    func vcpuEvents() throws(HypervisorError) -> VCPUEvents
    /// Sets pending events.
    func setVCPUEvents(_ events: VCPUEvents) throws(HypervisorError)
    /// The multiprocessing state.
    func mpState() throws(HypervisorError) -> MPState
    /// Sets the multiprocessing state.
    func setMPState(_ state: MPState) throws(HypervisorError)
    /// The complete state of the vCPU, for snapshot or migration; call it while the vCPU is
    /// not in `run()`.
    func state() throws(HypervisorError) -> VCPUState
    /// Writes back a state from `state()` in the order the hypervisor needs (CPUID first,
    /// events and MP state last). A state of another format version is refused.
    func restore(_ state: VCPUState) throws(HypervisorError)
}
