import CLinux
import HostSystem

extension KVMVirtualMachine {
    /// Asks whether the kernel offers `capability` for this VM (some answers, such as
    /// `KVM_CAP_XSAVE2`'s buffer size, depend on the VM): 0 for no, a positive number for yes.
    ///
    /// The corresponding KVM ioctl is `KVM_CHECK_EXTENSION` on the VM descriptor.
    public func checkExtension(_ capability: Int32) -> Int32 {
        max(0, clinux_ioctl_val(descriptor.rawValue, IOCTL_KVM_CHECK_EXTENSION, UInt(capability)))
    }

    /// The size in bytes of each chip's state inside `struct kvm_irqchip`.
    private static func chipStateSize(_ chip: IRQChip) -> Int {
        chip == .ioapic ? MemoryLayout<kvm_ioapic_state>.size : MemoryLayout<kvm_pic_state>.size
    }

    /// One chip of the in-kernel irqchip, in the kernel's layout.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_IRQCHIP`.
    public func irqchipState(_ chip: IRQChip) throws(HypervisorError) -> [UInt8] {
        var raw = kvm_irqchip()
        raw.chip_id = chip.rawValue
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP", &raw)
        return withUnsafeBytes(of: raw.chip) { Array($0.prefix(Self.chipStateSize(chip))) }
    }

    /// Writes one chip of the in-kernel irqchip from `irqchipState(_:)`.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_IRQCHIP`.
    public func setIRQChipState(_ chip: IRQChip, _ bytes: [UInt8]) throws(HypervisorError) {
        let size = Self.chipStateSize(chip)
        guard bytes.count == size else {
            throw .invalidArgument("the saved \(chip) state is \(bytes.count) bytes; this host's kernel layout is \(size) bytes")
        }
        var raw = kvm_irqchip()
        raw.chip_id = chip.rawValue
        withUnsafeMutableBytes(of: &raw.chip) { $0.copyBytes(from: bytes) }
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP", &raw)
    }

    /// The in-kernel PIT's state.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_PIT2`.
    public func pitState() throws(HypervisorError) -> PITState {
        var raw = kvm_pit_state2()
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_GET_PIT2, "KVM_GET_PIT2", &raw)
        return PITState(channels: withUnsafeBytes(of: raw.channels) { Array($0) }, flags: raw.flags)
    }

    /// Writes the in-kernel PIT's state.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_PIT2`.
    public func setPITState(_ state: PITState) throws(HypervisorError) {
        var raw = kvm_pit_state2()
        let size = MemoryLayout.size(ofValue: raw.channels)
        guard state.channels.count == size else {
            throw .invalidArgument("the saved PIT channels are \(state.channels.count) bytes; this host's kernel layout is \(size) bytes")
        }
        withUnsafeMutableBytes(of: &raw.channels) { $0.copyBytes(from: state.channels) }
        raw.flags = state.flags
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_SET_PIT2, "KVM_SET_PIT2", &raw)
    }

    /// kvmclock, or `nil` when the host lacks `KVM_CAP_ADJUST_CLOCK`.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_CLOCK`.
    public func clock() throws(HypervisorError) -> ClockState? {
        guard checkExtension(KVM_CAP_ADJUST_CLOCK) > 0 else { return nil }
        var raw = kvm_clock_data()
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_GET_CLOCK, "KVM_GET_CLOCK", &raw)
        return ClockState(clock: raw.clock, flags: raw.flags, realtime: raw.realtime, hostTSC: raw.host_tsc)
    }

    /// Sets kvmclock. When the saved value carries `KVM_CLOCK_REALTIME`, that flag and the
    /// realtime stamp are passed on, and the kernel advances the clock by the host time elapsed
    /// since it was taken (as a migrated guest expects). Other flags are report-only, and kernels
    /// older than the realtime flag refuse them, so they are not passed.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_CLOCK`.
    public func setClock(_ state: ClockState) throws(HypervisorError) {
        var raw = kvm_clock_data()
        raw.clock = state.clock
        let realtime = UInt32(KVM_CLOCK_REALTIME)
        if state.flags & realtime != 0 {
            raw.flags = realtime
            raw.realtime = state.realtime
        }
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_SET_CLOCK, "KVM_SET_CLOCK", &raw)
    }

    /// The state of the in-kernel PICs, IOAPIC and PIT this VM has, and kvmclock. Take it with
    /// every vCPU stopped.
    public func state() throws(HypervisorError) -> VMState {
        let devices = inKernel.withLock { $0 }
        let picMaster = devices.irqchip ? try irqchipState(.picMaster) : nil
        let picSlave = devices.irqchip ? try irqchipState(.picSlave) : nil
        let ioapic = devices.irqchip ? try irqchipState(.ioapic) : nil
        let pit = devices.pit ? try pitState() : nil
        return VMState(picMaster: picMaster, picSlave: picSlave, ioapic: ioapic, pit: pit, clock: try clock())
    }

    /// Writes back a state from `state()`. This VM must have the in-kernel devices the saved
    /// one had (create the irqchip and the PIT first); a state of another version is refused.
    public func restore(_ state: VMState) throws(HypervisorError) {
        try state.checkVersion()
        let devices = inKernel.withLock { $0 }
        let chips: [(IRQChip, [UInt8]?)] = [(.picMaster, state.picMaster), (.picSlave, state.picSlave), (.ioapic, state.ioapic)]
        let savedChips = chips.filter { $0.1 != nil }.count
        if devices.irqchip, savedChips == 0 {
            throw .invalidArgument("the saved VM had no in-kernel irqchip but this VM has one: restore into a VM created the same way")
        }
        if devices.irqchip, savedChips != chips.count {
            throw .invalidArgument("the saved VM state has \(savedChips) of the irqchip's 3 chips (master PIC, slave PIC, IOAPIC); it is damaged")
        }
        if devices.pit, state.pit == nil {
            throw .invalidArgument("the saved VM had no in-kernel PIT but this VM has one: restore into a VM created the same way")
        }
        for (chip, bytes) in chips {
            guard let bytes else { continue }
            guard devices.irqchip else {
                throw .invalidArgument("the saved VM had an in-kernel irqchip but this VM has none: call createIRQChip() before restoring")
            }
            try setIRQChipState(chip, bytes)
        }
        if let pit = state.pit {
            guard devices.pit else {
                throw .invalidArgument("the saved VM had an in-kernel PIT but this VM has none: call createPIT() before restoring")
            }
            try setPITState(pit)
        }
        if let clock = state.clock { try setClock(clock) }
    }
}

extension IRQChip: CustomStringConvertible {
    /// The chip's name.
    public var description: String {
        switch self {
        case .picMaster: return "master PIC"
        case .picSlave: return "slave PIC"
        case .ioapic: return "IOAPIC"
        }
    }
}
