import CLinux
import HostSystem
import Synchronization

/// Interrupts a KVM vCPU from another thread: sets `kvm_run.immediate_exit` (so a vCPU about
/// to enter the guest returns at once) and sends `KickSignal` to the thread in `KVM_RUN`.
public final class KVMVCPUKicker: VCPUKicker, @unchecked Sendable {
    // SAFETY: points into the vCPU's kvm_run mapping, which the kicker keeps alive.
    private let immediateExit: UnsafeMutableRawPointer
    private let mapping: MemoryMapping
    /// The pthread of the thread that last ran the vCPU (0 before the first run).
    let thread = Atomic<UInt>(0)

    init(mapping: MemoryMapping) {
        self.mapping = mapping
        // SAFETY: immediate_exit is a byte field inside the mapped kvm_run structure.
        immediateExit = mapping.baseAddress + MemoryLayout<kvm_run>.offset(of: \kvm_run.immediate_exit)!
    }

    /// Makes `run()` return `.interrupted` now or at its next call.
    ///
    /// The flag is stored before the thread is read, and `run()` publishes its thread before
    /// entering KVM: with a full fence on both sides, either the kick sees the running thread
    /// and signals it, or that thread's `KVM_RUN` sees the flag (without the fences, x86 may
    /// let both read the old value, and a vCPU started on a new thread then ran on unkicked).
    public func kick() {
        clinux_store_release_u8(immediateExit, 1)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let target = thread.load(ordering: .sequentiallyConsistent)
        if target != 0 { _ = pthread_kill(pthread_t(target), KickSignal.number) }
    }

    func clear() { clinux_store_release_u8(immediateExit, 0) }
}

/// A KVM vCPU: its file descriptor and the shared `kvm_run` page.
///
/// Call `run()` from one dedicated thread (the first run on a thread unblocks the kick signal
/// there). Install `KickSignal` (once per process) so that `kicker.kick()` can interrupt a
/// running guest.
public final class KVMVCPU: X86VirtualCPU, @unchecked Sendable {
    /// The vCPU number.
    public let id: UInt32
    /// The vCPU file descriptor.
    public let descriptor: OwnedFileDescriptor
    /// The VM it belongs to.
    public let vm: KVMVirtualMachine
    private let runMapping: MemoryMapping
    // SAFETY: the mapping holds a kvm_run structure for the vCPU's lifetime; only the
    // vCPU thread reads and writes it outside of the immediate_exit byte.
    private let shared: UnsafeMutablePointer<kvm_run>
    private let kvmKicker: KVMVCPUKicker
    /// KVM's MSR save list filtered to what `KVM_GET_MSRS` reads on this vCPU (computed on
    /// first use, forgotten when the CPUID changes because it decides which MSRs exist).
    let saveableMSRCache = Mutex<[UInt32]?>(nil)

    /// The VM's coalesced ring, read through the page inside `runMapping`, when KVM has one.
    private let coalescedRing: CoalescedRing?

    init(id: UInt32, descriptor: OwnedFileDescriptor, runMapping: MemoryMapping, vm: KVMVirtualMachine,
         coalescedRing: CoalescedRing? = nil) {
        self.coalescedRing = coalescedRing
        self.id = id
        self.descriptor = descriptor
        self.runMapping = runMapping
        self.vm = vm
        shared = runMapping.baseAddress.bindMemory(to: kvm_run.self, capacity: 1)
        kvmKicker = KVMVCPUKicker(mapping: runMapping)
    }

    private var fd: Int32 { descriptor.rawValue }

    /// The kicker for this vCPU.
    public var kicker: any VCPUKicker { kvmKicker }

    /// Forgets the thread that ran this vCPU, once it has ended (been joined): a kick before
    /// the vCPU's next run, on a new thread, then signals no thread.
    public func threadEnded() {
        kvmKicker.thread.store(0, ordering: .releasing)
    }

    /// Enters the guest until the next exit the VMM must handle.
    ///
    /// The corresponding KVM ioctl is `KVM_RUN`. An interruption by a signal or a kick
    /// returns `.interrupted` (and clears the kick).
    public func run() throws(HypervisorError) -> VCPUExit {
        let me = UInt(pthread_self())
        if kvmKicker.thread.load(ordering: .relaxed) != me {
            // First run on this thread: make sure a kick can reach it (threads inherit the
            // signal mask of their creator, which may block the kick signal).
            _ = clinux_unblock_signal(KickSignal.number)
            kvmKicker.thread.store(me, ordering: .sequentiallyConsistent)
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
        let result = clinux_ioctl_val(fd, IOCTL_KVM_RUN, 0)
        if result < 0 {
            let code = clinux_errno()
            if code == EINTR || code == EAGAIN {
                kvmKicker.clear()
                return .interrupted
            }
            throw .ioctlFailed(name: "KVM_RUN", SystemError(call: "ioctl(KVM_RUN)", errno: code))
        }
        return decodeExit()
    }

    /// Hands the writes KVM queued in the coalesced ring to `body`, oldest first.
    public func drainCoalescedWrites(_ body: (CoalescedWrite) -> Void) {
        coalescedRing?.drain(body)
    }

    private func decodeExit() -> VCPUExit {
        let base = UnsafeMutableRawPointer(shared)
        switch Int32(shared.pointee.exit_reason) {
        case KVM_EXIT_IO:
            let io = shared.pointee.io
            let data = ExitData(storage: base + Int(io.data_offset), size: Int(io.size), count: Int(io.count))
            return Int32(io.direction) == KVM_EXIT_IO_IN ? .ioIn(port: io.port, data: data) : .ioOut(port: io.port, data: data)
        case KVM_EXIT_MMIO:
            let offset = clinux_kvm_run_mmio_data_offset()
            let length = min(Int(shared.pointee.mmio.len), 8)
            let data = ExitData(storage: base + offset, size: length)
            let address = shared.pointee.mmio.phys_addr
            return shared.pointee.mmio.is_write != 0 ? .mmioWrite(address: address, data: data) : .mmioRead(address: address, data: data)
        case KVM_EXIT_HLT:
            return .halt
        case KVM_EXIT_SHUTDOWN:
            return .shutdown
        case KVM_EXIT_SYSTEM_EVENT:
            switch Int32(shared.pointee.system_event.type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: return .systemEvent(.shutdown)
            case KVM_SYSTEM_EVENT_RESET: return .systemEvent(.reset)
            case KVM_SYSTEM_EVENT_CRASH: return .systemEvent(.crash)
            default: return .systemEvent(.other(shared.pointee.system_event.type))
            }
        case KVM_EXIT_INTERNAL_ERROR:
            let error = shared.pointee.`internal`
            let count = min(Int(error.ndata), 16)
            let words = withUnsafeBytes(of: error.data) { raw in (0..<count).map { raw.load(fromByteOffset: $0 * 8, as: UInt64.self) } }
            return .internalError(InternalError(suberror: error.suberror, data: words))
        case KVM_EXIT_FAIL_ENTRY:
            let failure = shared.pointee.fail_entry
            return .failEntry(hardwareReason: failure.hardware_entry_failure_reason, cpu: failure.cpu)
        case KVM_EXIT_INTR:
            return .interrupted
        case KVM_EXIT_DEBUG:
            let arch = shared.pointee.debug.arch
            return .debug(DebugExit(exception: arch.exception, pc: arch.pc, dr6: arch.dr6, dr7: arch.dr7))
        case KVM_EXIT_IRQ_WINDOW_OPEN:
            return .interruptWindowOpen
        case KVM_EXIT_HYPERCALL:
            return .hypercall(number: shared.pointee.hypercall.nr)
        case KVM_EXIT_IOAPIC_EOI:
            return .ioapicEOI(vector: shared.pointee.eoi.vector)
        default:
            return .unknown(reason: shared.pointee.exit_reason)
        }
    }

    /// Asks KVM to exit when the guest can take an interrupt (`request_interrupt_window`).
    public func requestInterruptWindow(_ on: Bool) {
        shared.pointee.request_interrupt_window = on ? 1 : 0
    }

    // MARK: Registers

    /// The corresponding KVM ioctl is `KVM_GET_REGS`.
    public func registers() throws(HypervisorError) -> StandardRegisters {
        var regs = kvm_regs()
        _ = try kvmIoctl(fd, IOCTL_KVM_GET_REGS, "KVM_GET_REGS", &regs)
        return KVMConvert.registers(regs)
    }

    /// The corresponding KVM ioctl is `KVM_SET_REGS`.
    public func setRegisters(_ registers: StandardRegisters) throws(HypervisorError) {
        var regs = KVMConvert.kvmRegisters(registers)
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_REGS, "KVM_SET_REGS", &regs)
    }

    /// The corresponding KVM ioctl is `KVM_GET_SREGS`.
    public func specialRegisters() throws(HypervisorError) -> SpecialRegisters {
        var sregs = kvm_sregs()
        _ = try kvmIoctl(fd, IOCTL_KVM_GET_SREGS, "KVM_GET_SREGS", &sregs)
        return KVMConvert.specialRegisters(sregs)
    }

    /// The corresponding KVM ioctl is `KVM_SET_SREGS`.
    public func setSpecialRegisters(_ registers: SpecialRegisters) throws(HypervisorError) {
        var sregs = KVMConvert.kvmSpecialRegisters(registers)
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_SREGS, "KVM_SET_SREGS", &sregs)
    }

    /// The corresponding KVM ioctl is `KVM_GET_FPU`.
    public func fpu() throws(HypervisorError) -> FPUState {
        var state = kvm_fpu()
        _ = try kvmIoctl(fd, IOCTL_KVM_GET_FPU, "KVM_GET_FPU", &state)
        return KVMConvert.fpu(state)
    }

    /// The corresponding KVM ioctl is `KVM_SET_FPU`.
    public func setFPU(_ state: FPUState) throws(HypervisorError) {
        var raw = KVMConvert.kvmFPU(state)
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_FPU, "KVM_SET_FPU", &raw)
    }

    /// Reads MSRs; fails naming the first index the kernel could not read.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_MSRS`.
    public func msrs(_ indices: [UInt32]) throws(HypervisorError) -> [MSREntry] {
        let buffer = FlexibleBuffer<kvm_msrs, kvm_msr_entry>(count: indices.count)
        buffer.header.pointee.nmsrs = UInt32(indices.count)
        for (i, index) in indices.enumerated() { buffer.entries[i].index = index }
        let read = Int(try kvmIoctl(fd, IOCTL_KVM_GET_MSRS, "KVM_GET_MSRS", buffer.raw))
        if read < indices.count {
            throw .invalidArgument("KVM_GET_MSRS read \(read) of \(indices.count) MSRs; MSR \(hex(UInt64(indices[read]))) is not supported")
        }
        return (0..<indices.count).map { MSREntry(index: buffer.entries[$0].index, data: buffer.entries[$0].data) }
    }

    /// Writes MSRs; fails naming the first one the kernel refused.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_MSRS`.
    public func setMSRs(_ entries: [MSREntry]) throws(HypervisorError) {
        let buffer = FlexibleBuffer<kvm_msrs, kvm_msr_entry>(count: entries.count)
        buffer.header.pointee.nmsrs = UInt32(entries.count)
        for (i, entry) in entries.enumerated() {
            buffer.entries[i].index = entry.index
            buffer.entries[i].data = entry.data
        }
        let written = Int(try kvmIoctl(fd, IOCTL_KVM_SET_MSRS, "KVM_SET_MSRS", buffer.raw))
        if written < entries.count {
            throw .invalidArgument("KVM_SET_MSRS wrote \(written) of \(entries.count) MSRs; MSR \(hex(UInt64(entries[written].index))) was refused")
        }
    }

    /// The corresponding KVM ioctl is `KVM_GET_CPUID2`.
    public func cpuid() throws(HypervisorError) -> [CPUIDEntry] {
        try readCPUIDList(fd, IOCTL_KVM_GET_CPUID2, "KVM_GET_CPUID2")
    }

    /// The corresponding KVM ioctl is `KVM_SET_CPUID2`.
    public func setCPUID(_ entries: [CPUIDEntry]) throws(HypervisorError) {
        let buffer = FlexibleBuffer<kvm_cpuid2, kvm_cpuid_entry2>(count: entries.count)
        buffer.header.pointee.nent = UInt32(entries.count)
        for (i, entry) in entries.enumerated() { buffer.entries[i] = KVMConvert.kvmCPUID(entry) }
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_CPUID2, "KVM_SET_CPUID2", buffer.raw)
        saveableMSRCache.withLock { $0 = nil }
    }

    /// The corresponding KVM ioctl is `KVM_GET_LAPIC`.
    public func lapic() throws(HypervisorError) -> LAPICState {
        var state = kvm_lapic_state()
        _ = try kvmIoctl(fd, IOCTL_KVM_GET_LAPIC, "KVM_GET_LAPIC", &state)
        return LAPICState(registers: withUnsafeBytes(of: state.regs) { Array($0) })
    }

    /// The corresponding KVM ioctl is `KVM_SET_LAPIC`.
    public func setLAPIC(_ state: LAPICState) throws(HypervisorError) {
        var raw = kvm_lapic_state()
        withUnsafeMutableBytes(of: &raw.regs) { $0.copyBytes(from: state.registers) }
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_LAPIC, "KVM_SET_LAPIC", &raw)
    }

    /// The corresponding KVM ioctl is `KVM_GET_XCRS`.
    public func xcrs() throws(HypervisorError) -> [ExtendedControlRegister] {
        var raw = kvm_xcrs()
        _ = try kvmIoctl(fd, IOCTL_KVM_GET_XCRS, "KVM_GET_XCRS", &raw)
        let count = min(Int(raw.nr_xcrs), Int(KVM_MAX_XCRS))
        return withUnsafeBytes(of: raw.xcrs) { bytes in
            let entries = bytes.bindMemory(to: kvm_xcr.self)
            return (0..<count).map { ExtendedControlRegister(register: entries[$0].xcr, value: entries[$0].value) }
        }
    }

    /// The corresponding KVM ioctl is `KVM_SET_XCRS`.
    public func setXCRs(_ registers: [ExtendedControlRegister]) throws(HypervisorError) {
        guard registers.count <= Int(KVM_MAX_XCRS) else {
            throw .invalidArgument("at most \(KVM_MAX_XCRS) extended control registers, got \(registers.count)")
        }
        var raw = kvm_xcrs()
        raw.nr_xcrs = UInt32(registers.count)
        withUnsafeMutableBytes(of: &raw.xcrs) { bytes in
            let entries = bytes.bindMemory(to: kvm_xcr.self)
            for (i, register) in registers.enumerated() {
                entries[i] = kvm_xcr(xcr: register.register, reserved: 0, value: register.value)
            }
        }
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_XCRS, "KVM_SET_XCRS", &raw)
    }

    /// The corresponding KVM ioctl is `KVM_GET_VCPU_EVENTS`.
    public func vcpuEvents() throws(HypervisorError) -> VCPUEvents {
        var raw = kvm_vcpu_events()
        _ = try kvmIoctl(fd, IOCTL_KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &raw)
        return KVMConvert.events(raw)
    }

    /// The corresponding KVM ioctl is `KVM_SET_VCPU_EVENTS`.
    public func setVCPUEvents(_ events: VCPUEvents) throws(HypervisorError) {
        var raw = KVMConvert.kvmEvents(events)
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &raw)
    }

    /// The corresponding KVM ioctl is `KVM_GET_MP_STATE`.
    public func mpState() throws(HypervisorError) -> MPState {
        var raw = kvm_mp_state()
        _ = try kvmIoctl(fd, IOCTL_KVM_GET_MP_STATE, "KVM_GET_MP_STATE", &raw)
        return MPState(rawValue: raw.mp_state)
    }

    /// The corresponding KVM ioctl is `KVM_SET_MP_STATE`.
    public func setMPState(_ state: MPState) throws(HypervisorError) {
        var raw = kvm_mp_state(mp_state: state.rawValue)
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_MP_STATE, "KVM_SET_MP_STATE", &raw)
    }

    /// Single-steps or sets hardware breakpoints (`KVM_SET_GUEST_DEBUG`); `control` is the
    /// `KVM_GUESTDBG_*` flags, `debugRegisters` DR0–DR3 and DR7 (at index 7).
    public func setGuestDebug(control: UInt32, debugRegisters: [UInt64] = []) throws(HypervisorError) {
        var raw = kvm_guest_debug()
        raw.control = control
        withUnsafeMutableBytes(of: &raw.arch.debugreg) { bytes in
            for (i, value) in debugRegisters.prefix(8).enumerated() { bytes.storeBytes(of: value, toByteOffset: i * 8, as: UInt64.self) }
        }
        _ = try kvmIoctl(fd, IOCTL_KVM_SET_GUEST_DEBUG, "KVM_SET_GUEST_DEBUG", &raw)
    }

    /// Queues a non-maskable interrupt (`KVM_NMI`).
    public func injectNMI() throws(HypervisorError) {
        _ = try kvmIoctl(fd, IOCTL_KVM_NMI, "KVM_NMI", value: 0)
    }
}
