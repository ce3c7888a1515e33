import CLinux
import HostSystem

extension KVMVCPU {
    // MARK: XSAVE

    /// The size of the XSAVE buffer the kernel reads and writes for this VM: the value of
    /// `KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)` on the VM where the host has it, else the fixed
    /// 4096 bytes of `struct kvm_xsave`.
    public var xsaveSize: Int {
        max(Int(vm.checkExtension(KVM_CAP_XSAVE2)), MemoryLayout<kvm_xsave>.size)
    }

    /// The XSAVE area in the kernel's layout, or `nil` when the host lacks `KVM_CAP_XSAVE`.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_XSAVE2` where the host has `KVM_CAP_XSAVE2`
    /// (the area may then be larger than 4096 bytes), else `KVM_GET_XSAVE`.
    public func xsave() throws(HypervisorError) -> [UInt8]? {
        guard vm.hypervisor.checkExtension(KVM_CAP_XSAVE) > 0 else { return nil }
        let hasXSAVE2 = vm.checkExtension(KVM_CAP_XSAVE2) > 0
        let size = xsaveSize
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        if hasXSAVE2 {
            _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_GET_XSAVE2, "KVM_GET_XSAVE2", buffer.baseAddress)
        } else {
            _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_GET_XSAVE, "KVM_GET_XSAVE", buffer.baseAddress)
        }
        return Array(buffer)
    }

    /// Writes an XSAVE area from `xsave()`. An area larger than this host's XSAVE size (state
    /// components the host cannot hold) is refused; a smaller one is zero-extended (its header
    /// says which components it carries).
    ///
    /// The corresponding KVM ioctl is `KVM_SET_XSAVE`.
    public func setXSAVE(_ area: [UInt8]) throws(HypervisorError) {
        guard vm.hypervisor.checkExtension(KVM_CAP_XSAVE) > 0 else {
            throw .invalidArgument("the state has an XSAVE area but this host's KVM lacks KVM_CAP_XSAVE")
        }
        let size = xsaveSize
        let minimum = MemoryLayout<kvm_xsave>.size
        guard area.count >= minimum, area.count <= size else {
            throw .invalidArgument("an XSAVE area of \(area.count) bytes does not fit this host, which takes \(minimum) to \(size) bytes")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.copyBytes(from: area)
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_SET_XSAVE, "KVM_SET_XSAVE", buffer.baseAddress)
    }

    // MARK: Debug registers and TSC

    /// DR0–DR3, DR6 and DR7, or `nil` when the host lacks `KVM_CAP_DEBUGREGS`.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_DEBUGREGS`.
    public func debugRegisters() throws(HypervisorError) -> DebugRegisters? {
        guard vm.hypervisor.checkExtension(KVM_CAP_DEBUGREGS) > 0 else { return nil }
        var raw = kvm_debugregs()
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", &raw)
        var registers = DebugRegisters()
        registers.breakpoints = withUnsafeBytes(of: raw.db) { Array($0.bindMemory(to: UInt64.self)) }
        registers.dr6 = raw.dr6
        registers.dr7 = raw.dr7
        registers.flags = raw.flags
        return registers
    }

    /// Sets DR0–DR3, DR6 and DR7.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_DEBUGREGS`.
    public func setDebugRegisters(_ registers: DebugRegisters) throws(HypervisorError) {
        guard registers.breakpoints.count == 4 else {
            throw .invalidArgument("debug registers carry 4 breakpoint addresses (DR0-DR3), not \(registers.breakpoints.count)")
        }
        var raw = kvm_debugregs()
        withUnsafeMutableBytes(of: &raw.db) { bytes in
            for (i, value) in registers.breakpoints.enumerated() { bytes.storeBytes(of: value, toByteOffset: i * 8, as: UInt64.self) }
        }
        raw.dr6 = registers.dr6
        raw.dr7 = registers.dr7
        raw.flags = registers.flags
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", &raw)
    }

    /// The guest TSC frequency in kHz, or `nil` when the host lacks `KVM_CAP_GET_TSC_KHZ`.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_TSC_KHZ`.
    public func tscKHz() throws(HypervisorError) -> UInt32? {
        guard vm.hypervisor.checkExtension(KVM_CAP_GET_TSC_KHZ) > 0 else { return nil }
        return UInt32(try kvmIoctl(descriptor.rawValue, IOCTL_KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", value: 0))
    }

    /// Sets the guest TSC frequency (needs `KVM_CAP_TSC_CONTROL`, TSC scaling in the host CPU).
    ///
    /// The corresponding KVM ioctl is `KVM_SET_TSC_KHZ`.
    public func setTSCKHz(_ kHz: UInt32) throws(HypervisorError) {
        guard vm.hypervisor.checkExtension(KVM_CAP_TSC_CONTROL) > 0 else {
            throw .invalidArgument("the guest's TSC ran at \(kHz) kHz, but this host's KVM cannot scale the TSC (no KVM_CAP_TSC_CONTROL) and runs it at \((try? tscKHz()).flatMap { $0 }.map { "\($0) kHz" } ?? "an unknown rate")")
        }
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_SET_TSC_KHZ, "KVM_SET_TSC_KHZ", value: UInt(kHz))
    }

    // MARK: MSRs

    /// How many of `indices` `KVM_GET_MSRS` read (it stops at the first it refuses), and their values.
    private func readMSRPrefix(_ indices: [UInt32]) throws(HypervisorError) -> [MSREntry] {
        let buffer = FlexibleBuffer<kvm_msrs, kvm_msr_entry>(count: indices.count)
        buffer.header.pointee.nmsrs = UInt32(indices.count)
        for (i, index) in indices.enumerated() { buffer.entries[i].index = index }
        let read = Int(try kvmIoctl(descriptor.rawValue, IOCTL_KVM_GET_MSRS, "KVM_GET_MSRS", buffer.raw))
        return (0..<min(read, indices.count)).map { MSREntry(index: buffer.entries[$0].index, data: buffer.entries[$0].data) }
    }

    /// `KVM_GET_MSRS` and `KVM_SET_MSRS` take fewer than 256 entries a call (`MAX_IO_MSRS`).
    static let msrChunk = 128

    /// KVM's MSR save list (`KVM_GET_MSR_INDEX_LIST`) without the MSRs `KVM_GET_MSRS` refuses on
    /// this vCPU (the list names every MSR KVM knows; which exist depends on the host CPU, the
    /// guest CPUID and on the host kernel: a PVM host refuses some that standard KVM reads).
    public func saveableMSRIndices() throws(HypervisorError) -> [UInt32] {
        if let cached = saveableMSRCache.withLock({ $0 }) { return cached }
        var remaining = try vm.hypervisor.supportedMSRIndices()
        var accepted: [UInt32] = []
        while !remaining.isEmpty {
            let read = try readMSRPrefix(Array(remaining.prefix(Self.msrChunk))).count
            accepted += remaining[..<read]
            if read >= min(remaining.count, Self.msrChunk) {
                remaining = Array(remaining.dropFirst(read))
            } else {
                remaining = Array(remaining.dropFirst(read + 1))   // drop the refused one, try the rest
            }
        }
        saveableMSRCache.withLock { $0 = accepted }
        return accepted
    }

    // MARK: Whole state

    /// The complete vCPU state. Call it while the vCPU is not in `run()` (from its own thread
    /// between runs, or after it was kicked out and parked).
    public func state() throws(HypervisorError) -> VCPUState {
        let devices = vm.inKernel.withLock { $0 }
        let cpuid = try cpuid()
        let mpState = try mpState()
        let registers = try registers()
        let specialRegisters = try specialRegisters()
        let fpu = try fpu()
        let xsave = try xsave()
        let xcrs = vm.hypervisor.checkExtension(KVM_CAP_XCRS) > 0 ? try xcrs() : nil
        let indices = try saveableMSRIndices()
        var msrs: [MSREntry] = []
        for start in stride(from: 0, to: indices.count, by: Self.msrChunk) {
            msrs += try self.msrs(Array(indices[start..<min(start + Self.msrChunk, indices.count)]))
        }
        let lapic = devices.lapic ? try lapic() : nil
        let debugRegisters = try debugRegisters()
        let tscKHz = try tscKHz()
        let events = try vcpuEvents()
        return VCPUState(id: id, cpuid: cpuid, registers: registers, specialRegisters: specialRegisters, fpu: fpu,
                         xsave: xsave, xcrs: xcrs, msrs: msrs, lapic: lapic, debugRegisters: debugRegisters,
                         tscKHz: tscKHz, events: events, mpState: mpState)
    }

    /// Writes back a state from `state()`, in the order KVM needs: CPUID (it decides which
    /// MSRs and XSAVE components exist), special registers before general registers, FPU then
    /// the XSAVE area that supersedes it, XCRs, the TSC rate before the TSC MSR, the LAPIC
    /// before the MSRs (KVM drops an IA32_TSC_DEADLINE write unless the LAPIC timer is in
    /// deadline mode), debug registers, then pending events and the MP state last.
    ///
    /// The vCPU must not have run yet (KVM then refuses a different CPUID) and its VM must
    /// have the same in-kernel irqchip as the one saved.
    public func restore(_ state: VCPUState) throws(HypervisorError) {
        try state.checkVersion()
        guard state.id == id else {
            throw .invalidArgument("the state of vCPU \(state.id) cannot be restored into vCPU \(id) (its APIC ID and topology would not match)")
        }
        let devices = vm.inKernel.withLock { $0 }
        if state.lapic != nil, !devices.lapic {
            throw .invalidArgument("the state of vCPU \(id) has an in-kernel LAPIC, but this VM has none: create the irqchip before the vCPU")
        }
        if state.lapic == nil, devices.lapic {
            throw .invalidArgument("the state of vCPU \(id) has no in-kernel LAPIC, but this VM has one: restore it into a VM without the in-kernel irqchip")
        }
        try setCPUID(state.cpuid)
        try setSpecialRegisters(state.specialRegisters)
        try setRegisters(state.registers)
        try setFPU(state.fpu)
        if let xsave = state.xsave { try setXSAVE(xsave) }
        if let xcrs = state.xcrs { try setXCRs(xcrs) }
        if let saved = state.tscKHz, let current = try tscKHz(), saved != current { try setTSCKHz(saved) }
        if let lapic = state.lapic { try setLAPIC(lapic) }
        // IA32_TSC is among these. A PVM host (HOST.md) accepts the write but keeps the guest
        // TSC equal to the host's (measured), so there the restored TSC does not go back.
        for start in stride(from: 0, to: state.msrs.count, by: Self.msrChunk) {
            try setMSRs(Array(state.msrs[start..<min(start + Self.msrChunk, state.msrs.count)]))
        }
        if let debugRegisters = state.debugRegisters { try setDebugRegisters(debugRegisters) }
        // KVM_GET_VCPU_EVENTS does not set the "valid" bits for the pending NMI and the SIPI
        // vector (they are inputs only): set them so the saved values are written too.
        var events = state.events
        events.flags |= UInt32(KVM_VCPUEVENT_VALID_NMI_PENDING) | UInt32(KVM_VCPUEVENT_VALID_SIPI_VECTOR)
        try setVCPUEvents(events)
        try setMPState(state.mpState)
    }
}
