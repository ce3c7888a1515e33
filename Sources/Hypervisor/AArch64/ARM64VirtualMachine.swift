/// An arm64 vCPU: initialised with a target and features before its first run, its registers
/// reached one at a time by id (arm64 KVM has no `KVM_GET_REGS`).
///
/// The KVM backend (`KVMVCPU`) implements every call on any host, so that this code builds and
/// its error paths are tested on x86-64; it declares the conformance only on arm64 hosts.
public protocol ARM64VirtualCPU: VirtualCPU {
    /// Sets the vCPU's target and features; required once before any register access.
    ///
    /// The corresponding KVM ioctl is `KVM_ARM_VCPU_INIT`.
    func initialize(target: UInt32, features: [KVMARM64.VCPUFeature]) throws(HypervisorError)
    /// Reads a 64-bit register by its `KVM_REG_ARM64` id (`KVMARM64.coreX(0)`, `KVMARM64.mpidrEL1`...).
    ///
    /// The corresponding KVM ioctl is `KVM_GET_ONE_REG`.
    func oneRegister(_ id: UInt64) throws(HypervisorError) -> UInt64
    /// Writes a 64-bit register by its id.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_ONE_REG`.
    func setOneRegister(_ id: UInt64, _ value: UInt64) throws(HypervisorError)
    /// Gives the vCPU's PMU its overflow interrupt (a PPI, as a GIC interrupt ID) and
    /// initialises it; only after the vGIC is initialised.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_DEVICE_ATTR` on the vCPU
    /// (`KVM_ARM_VCPU_PMU_V3_CTRL`: `KVM_ARM_VCPU_PMU_V3_IRQ`, then `KVM_ARM_VCPU_PMU_V3_INIT`).
    func initializePMU(interrupt: UInt32) throws(HypervisorError)
}

extension ARM64VirtualCPU {
    /// The vCPU's MPIDR_EL1 (its affinity, for the device tree's `cpu` nodes).
    public func mpidr() throws(HypervisorError) -> UInt64 { try oneRegister(KVMARM64.mpidrEL1) }
}

/// An arm64 VM: the preferred vCPU target and the in-kernel GICv3 with its ITS.
public protocol ARM64VirtualMachine: VirtualMachine {
    /// The vCPU target this host prefers (`struct kvm_vcpu_init.target`).
    ///
    /// The corresponding KVM ioctl is `KVM_ARM_PREFERRED_TARGET`.
    func preferredTarget() throws(HypervisorError) -> UInt32
    /// Creates and initialises the in-kernel GICv3 (and its ITS) by `configuration.steps`;
    /// call after every vCPU exists.
    ///
    /// The corresponding KVM ioctls are `KVM_CREATE_DEVICE` and `KVM_SET_DEVICE_ATTR`.
    func createGICv3(_ configuration: ARM64GICConfiguration) throws(HypervisorError)
}

/// Where the in-kernel GICv3 lives and how many interrupts it has, with the exact sequence
/// of device calls that sets it up (Cloud Hypervisor's order: distributor and redistributor
/// addresses, the ITS created, placed and initialised, the interrupt count, then the GIC's
/// own `CTRL_INIT`).
public struct ARM64GICConfiguration: Hashable, Sendable {
    /// The distributor's base (64 KiB).
    public var distributorAddress: UInt64
    /// The base of the redistributor frames, 128 KiB per vCPU.
    public var redistributorAddress: UInt64
    /// The ITS's base, or nil for a GIC without MSI support.
    public var itsAddress: UInt64?
    /// The number of interrupts (SGIs, PPIs and SPIs), a multiple of 32 from 64 to 1024.
    public var interruptCount: UInt32

    /// A configuration; the addresses must be 64 KiB-aligned.
    public init(distributorAddress: UInt64, redistributorAddress: UInt64, itsAddress: UInt64?, interruptCount: UInt32) {
        self.distributorAddress = distributorAddress
        self.redistributorAddress = redistributorAddress
        self.itsAddress = itsAddress
        self.interruptCount = interruptCount
    }

    /// Which in-kernel device a step addresses.
    public enum Device: Hashable, Sendable {
        /// The `KVM_DEV_TYPE_ARM_VGIC_V3` device.
        case gic
        /// The `KVM_DEV_TYPE_ARM_VGIC_ITS` device.
        case its
    }

    /// What `KVM_SET_DEVICE_ATTR`'s `addr` points at.
    public enum Payload: Hashable, Sendable {
        /// Nothing (`addr` 0).
        case none
        /// A 32-bit value.
        case u32(UInt32)
        /// A 64-bit value.
        case u64(UInt64)
    }

    /// One call of the set-up sequence.
    public enum Step: Hashable, Sendable {
        /// `KVM_CREATE_DEVICE` of `device`.
        case create(Device)
        /// `KVM_SET_DEVICE_ATTR` on `device`.
        case setAttribute(Device, group: KVMARM64.VGICGroup, attribute: UInt64, payload: Payload)
    }

    /// Checks alignment and the interrupt count.
    public func validate() throws(HypervisorError) {
        for (name, address) in [("distributor", distributorAddress), ("redistributor", redistributorAddress),
                                ("ITS", itsAddress ?? 0)] where address & 0xFFFF != 0 {
            throw .invalidArgument("the GICv3 \(name) address 0x\(String(address, radix: 16)) is not 64 KiB-aligned")
        }
        guard (64...1024).contains(interruptCount), interruptCount.isMultiple(of: 32) else {
            throw .invalidArgument("a GICv3 has a multiple of 32 interrupts from 64 to 1024, not \(interruptCount)")
        }
    }

    /// The device calls, in order.
    public var steps: [Step] {
        var steps: [Step] = [
            .create(.gic),
            .setAttribute(.gic, group: .address, attribute: KVMARM64.VGICAddressType.distributor.rawValue,
                          payload: .u64(distributorAddress)),
            .setAttribute(.gic, group: .address, attribute: KVMARM64.VGICAddressType.redistributor.rawValue,
                          payload: .u64(redistributorAddress)),
        ]
        if let itsAddress {
            steps += [
                .create(.its),
                .setAttribute(.its, group: .address, attribute: KVMARM64.VGICAddressType.its.rawValue, payload: .u64(itsAddress)),
                .setAttribute(.its, group: .control, attribute: KVMARM64.VGICControl.initialize.rawValue, payload: .none),
            ]
        }
        steps += [
            .setAttribute(.gic, group: .numberOfIRQs, attribute: 0, payload: .u32(interruptCount)),
            .setAttribute(.gic, group: .control, attribute: KVMARM64.VGICControl.initialize.rawValue, payload: .none),
        ]
        return steps
    }
}
