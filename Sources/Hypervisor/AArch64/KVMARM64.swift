/// The KVM arm64 ABI's numbers, computed in Swift so they build and are tested on any host:
/// `KVM_GET_ONE_REG`/`KVM_SET_ONE_REG` register ids (core, system and timer registers), the
/// `KVM_ARM_VCPU_INIT` feature bits, the vGICv3 device attributes (`KVM_CREATE_DEVICE` with
/// `KVM_DEV_TYPE_ARM_VGIC_V3`, then `KVM_SET_DEVICE_ATTR`) and the `KVM_IRQ_LINE` number.
///
/// The sources are Linux's `include/uapi/linux/kvm.h` and
/// `arch/arm64/include/uapi/asm/kvm.h`; the tests pin each value to the header's. Calls that
/// need an arm64 host (the ioctls themselves) belong behind `#if arch(arm64)`.
public enum KVMARM64 {
    // MARK: Register ids

    /// `KVM_REG_ARM64`: the architecture field of a register id.
    public static let regARM64: UInt64 = 0x6000_0000_0000_0000
    /// `KVM_REG_SIZE_SHIFT`: where log2(size in bytes) sits in a register id.
    public static let regSizeShift: UInt64 = 52
    /// `KVM_REG_SIZE_U32`.
    public static let regSizeU32: UInt64 = 2 << 52
    /// `KVM_REG_SIZE_U64`.
    public static let regSizeU64: UInt64 = 3 << 52
    /// `KVM_REG_SIZE_U128`.
    public static let regSizeU128: UInt64 = 4 << 52
    /// `KVM_REG_ARM_COPROC_SHIFT`.
    public static let coprocShift: UInt64 = 16
    /// `KVM_REG_ARM_CORE`: coprocessor 0x10, the `struct kvm_regs` registers.
    public static let coprocCore: UInt64 = 0x0010 << 16
    /// `KVM_REG_ARM64_SYSREG`: coprocessor 0x13, system registers by encoding.
    public static let coprocSystem: UInt64 = 0x0013 << 16
    /// `KVM_REG_ARM_FW`: coprocessor 0x14, KVM's firmware pseudo-registers.
    public static let coprocFirmware: UInt64 = 0x0014 << 16

    /// Byte offsets in `struct kvm_regs` (`user_pt_regs` then the EL1 registers and the FP/SIMD state).
    enum CoreOffset {
        static let regs = 0          // x0..x30, 8 bytes each
        static let sp = 248          // sp_el0
        static let pc = 256
        static let pstate = 264
        static let spEL1 = 272
        static let elrEL1 = 280
        static let spsr = 288        // 5 x 8 bytes
        static let vregs = 336       // fp_regs: 16-byte aligned, 32 x 16 bytes
        static let fpsr = 848
        static let fpcr = 852
    }

    /// A `KVM_REG_ARM_CORE` id: the register's offset in `struct kvm_regs` in 32-bit words
    /// (`KVM_REG_ARM_CORE_REG`), with its size.
    static func core(byteOffset: Int, size: UInt64) -> UInt64 {
        regARM64 | size | coprocCore | UInt64(byteOffset / 4)
    }

    /// The id of general-purpose register `x<index>` (0-30).
    public static func coreX(_ index: Int) -> UInt64 {
        precondition((0...30).contains(index), "x\(index) does not exist")
        return core(byteOffset: CoreOffset.regs + 8 * index, size: regSizeU64)
    }

    /// The id of `sp` (SP_EL0).
    public static let coreSP = core(byteOffset: CoreOffset.sp, size: regSizeU64)
    /// The id of `pc`.
    public static let corePC = core(byteOffset: CoreOffset.pc, size: regSizeU64)
    /// The id of `pstate`.
    public static let corePSTATE = core(byteOffset: CoreOffset.pstate, size: regSizeU64)
    /// The id of `sp_el1`.
    public static let coreSPEL1 = core(byteOffset: CoreOffset.spEL1, size: regSizeU64)
    /// The id of `elr_el1`.
    public static let coreELREL1 = core(byteOffset: CoreOffset.elrEL1, size: regSizeU64)
    /// The id of `spsr[index]` (0 is SPSR_EL1).
    public static func coreSPSR(_ index: Int) -> UInt64 {
        precondition((0..<5).contains(index), "spsr[\(index)] does not exist")
        return core(byteOffset: CoreOffset.spsr + 8 * index, size: regSizeU64)
    }
    /// The id of FP/SIMD register `v<index>` (0-31, 128-bit).
    public static func coreV(_ index: Int) -> UInt64 {
        precondition((0...31).contains(index), "v\(index) does not exist")
        return core(byteOffset: CoreOffset.vregs + 16 * index, size: regSizeU128)
    }
    /// The id of `fpsr` (32-bit).
    public static let coreFPSR = core(byteOffset: CoreOffset.fpsr, size: regSizeU32)
    /// The id of `fpcr` (32-bit).
    public static let coreFPCR = core(byteOffset: CoreOffset.fpcr, size: regSizeU32)

    /// The id of the system register with encoding `op0, op1, CRn, CRm, op2` (`ARM64_SYS_REG`).
    public static func systemRegister(op0: UInt64, op1: UInt64, crn: UInt64, crm: UInt64, op2: UInt64) -> UInt64 {
        regARM64 | regSizeU64 | coprocSystem
            | ((op0 << 14) & 0xC000) | ((op1 << 11) & 0x3800) | ((crn << 7) & 0x780) | ((crm << 3) & 0x78) | (op2 & 0x7)
    }

    /// MPIDR_EL1 (3, 0, 0, 0, 5): the vCPU's affinity, for the FDT's `cpu` nodes.
    public static let mpidrEL1 = systemRegister(op0: 3, op1: 0, crn: 0, crm: 0, op2: 5)
    /// SCTLR_EL1 (3, 0, 1, 0, 0).
    public static let sctlrEL1 = systemRegister(op0: 3, op1: 0, crn: 1, crm: 0, op2: 0)
    /// ID_AA64MMFR0_EL1 (3, 0, 0, 7, 0): physical address range and granules.
    public static let idAA64MMFR0EL1 = systemRegister(op0: 3, op1: 0, crn: 0, crm: 7, op2: 0)
    /// `KVM_REG_ARM_TIMER_CTL`: CNTV_CTL_EL0 (3, 3, 14, 3, 1).
    public static let timerCTL = systemRegister(op0: 3, op1: 3, crn: 14, crm: 3, op2: 1)
    /// `KVM_REG_ARM_TIMER_CNT`: the virtual counter. The header's encoding is (3, 3, 14, 3, 2),
    /// swapped with CVAL by accident and kept as ABI.
    public static let timerCNT = systemRegister(op0: 3, op1: 3, crn: 14, crm: 3, op2: 2)
    /// `KVM_REG_ARM_TIMER_CVAL`: the virtual timer's compare value, encoded (3, 3, 14, 0, 2) (see `timerCNT`).
    public static let timerCVAL = systemRegister(op0: 3, op1: 3, crn: 14, crm: 0, op2: 2)
    /// `KVM_REG_ARM_PSCI_VERSION`: firmware pseudo-register 0.
    public static let psciVersion = regARM64 | regSizeU64 | coprocFirmware | 0

    // MARK: vCPU init

    /// `KVM_ARM_VCPU_INIT` feature bits (`features[0]`).
    public enum VCPUFeature: UInt32, Sendable, CaseIterable {
        /// `KVM_ARM_VCPU_POWER_OFF`: secondary vCPUs start off and wait for PSCI `CPU_ON`.
        case powerOff = 0
        /// `KVM_ARM_VCPU_EL1_32BIT`.
        case el1_32Bit = 1
        /// `KVM_ARM_VCPU_PSCI_0_2`.
        case psci0_2 = 2
        /// `KVM_ARM_VCPU_PMU_V3`.
        case pmuV3 = 3
        /// `KVM_ARM_VCPU_SVE`.
        case sve = 4
        /// `KVM_ARM_VCPU_PTRAUTH_ADDRESS`.
        case ptrauthAddress = 5
        /// `KVM_ARM_VCPU_PTRAUTH_GENERIC`.
        case ptrauthGeneric = 6
    }

    /// `features[0]` of `struct kvm_vcpu_init` for a set of features.
    public static func featureWord(_ features: some Sequence<VCPUFeature>) -> UInt32 {
        features.reduce(0) { $0 | (1 << $1.rawValue) }
    }

    /// The features Cloud Hypervisor asks for: PSCI 0.2, PMU if wanted, and power-off for every
    /// vCPU but the boot one.
    public static func vcpuFeatures(vcpu: Int, pmu: Bool) -> [VCPUFeature] {
        var features: [VCPUFeature] = [.psci0_2]
        if pmu { features.append(.pmuV3) }
        if vcpu > 0 { features.append(.powerOff) }
        return features
    }

    /// `struct kvm_vcpu_init` in 32-bit words: `target`, then `features[7]`.
    public static let vcpuInitWords = 8

    /// An ioctl request number as `_IOC` makes it for KVM (type 0xAE): direction 1 writes to
    /// the kernel (`_IOW`), 2 reads from it (`_IOR`), 3 both.
    public static func ioctlNumber(direction: UInt, number: UInt, size: Int) -> UInt {
        (direction << 30) | (UInt(size) << 16) | (0xAE << 8) | number
    }

    /// `KVM_ARM_VCPU_INIT`: `_IOW(KVMIO, 0xae, struct kvm_vcpu_init)`.
    public static let ioctlVCPUInit = ioctlNumber(direction: 1, number: 0xAE, size: 4 * vcpuInitWords)
    /// `KVM_ARM_PREFERRED_TARGET`: `_IOR(KVMIO, 0xaf, struct kvm_vcpu_init)`.
    public static let ioctlPreferredTarget = ioctlNumber(direction: 2, number: 0xAF, size: 4 * vcpuInitWords)

    /// `KVM_ARM_VCPU_PMU_V3_CTRL`: the vCPU attribute group of the PMU.
    public static let pmuControlGroup: UInt32 = 0
    /// `KVM_ARM_VCPU_PMU_V3_IRQ`: the PMU's overflow interrupt (a PPI's GIC interrupt ID).
    public static let pmuAttributeIRQ: UInt64 = 0
    /// `KVM_ARM_VCPU_PMU_V3_INIT`: initialise the PMU (after the vGIC).
    public static let pmuAttributeInit: UInt64 = 1

    /// PSTATE at the kernel entry: EL1h (SPSel = 1) with D, A, I and F masked (`PSR_MODE_EL1h | PSR_[DAIF]_BIT`).
    public static let bootPSTATE: UInt64 = 0x3C5

    // MARK: vGIC

    /// `KVM_DEV_TYPE_ARM_VGIC_V3`.
    public static let deviceTypeVGICv3: UInt32 = 7
    /// `KVM_DEV_TYPE_ARM_VGIC_ITS`.
    public static let deviceTypeVGICITS: UInt32 = 8

    /// vGIC device attribute groups (`KVM_DEV_ARM_VGIC_GRP_*`).
    public enum VGICGroup: UInt32, Sendable, CaseIterable {
        /// Base addresses.
        case address = 0
        /// Distributor registers.
        case distributorRegisters = 1
        /// CPU interface registers (GICv2).
        case cpuRegisters = 2
        /// The number of interrupts.
        case numberOfIRQs = 3
        /// Control (init, table save/restore).
        case control = 4
        /// Redistributor registers.
        case redistributorRegisters = 5
        /// CPU system registers (ICC_*).
        case cpuSystemRegisters = 6
        /// Line levels.
        case levelInfo = 7
        /// ITS registers.
        case itsRegisters = 8
    }

    /// `attr` values in the address group.
    public enum VGICAddressType: UInt64, Sendable, CaseIterable {
        /// `KVM_VGIC_V3_ADDR_TYPE_DIST`.
        case distributor = 2
        /// `KVM_VGIC_V3_ADDR_TYPE_REDIST`: one region for every vCPU's frames.
        case redistributor = 3
        /// `KVM_VGIC_ITS_ADDR_TYPE` (on the ITS device).
        case its = 4
        /// `KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION`.
        case redistributorRegion = 5
    }

    /// `attr` values in the control group.
    public enum VGICControl: UInt64, Sendable, CaseIterable {
        /// `KVM_DEV_ARM_VGIC_CTRL_INIT`: after the addresses and the IRQ count are set.
        case initialize = 0
        /// `KVM_DEV_ARM_ITS_SAVE_TABLES`.
        case saveITSTables = 1
        /// `KVM_DEV_ARM_ITS_RESTORE_TABLES`.
        case restoreITSTables = 2
        /// `KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES`.
        case savePendingTables = 3
        /// `KVM_DEV_ARM_ITS_CTRL_RESET`.
        case resetITS = 4
    }

    /// The value for `KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION`: `count` frames from the 64 KiB-aligned
    /// `base`, region `index` (what the kernel's selftests call `REDIST_REGION_ATTR_ADDR`).
    public static func redistributorRegionValue(count: UInt64, base: UInt64, index: UInt64) -> UInt64 {
        precondition(base & 0xFFFF == 0, "redistributor base \(base) is not 64 KiB-aligned")
        return (count << 52) | base | (index & 0xFFF)
    }

    /// The `attr` of a register in the distributor or redistributor register groups:
    /// the vCPU's MPIDR affinity in bits 32-63, the register offset below
    /// (`KVM_DEV_ARM_VGIC_V3_MPIDR_SHIFT`).
    public static func vgicRegisterAttribute(mpidr: UInt64, offset: UInt32) -> UInt64 {
        let affinity = (mpidr & 0xFF_FFFF) | ((mpidr >> 8) & 0xFF00_0000)   // Aff3.Aff2.Aff1.Aff0
        return (affinity << 32) | UInt64(offset)
    }

    // MARK: KVM_IRQ_LINE

    /// `irq_type` values of `KVM_IRQ_LINE`'s `irq` field.
    public enum IRQType: UInt32, Sendable {
        /// `KVM_ARM_IRQ_TYPE_CPU` (no in-kernel GIC).
        case cpu = 0
        /// `KVM_ARM_IRQ_TYPE_SPI`.
        case spi = 1
        /// `KVM_ARM_IRQ_TYPE_PPI`.
        case ppi = 2
    }

    /// The `irq` field of `KVM_IRQ_LINE`: type in bits 24-27, vCPU in 16-23 (and 28-31
    /// above 255), the interrupt number in 0-15. SPIs take their GIC interrupt ID (32 and up).
    public static func irqLine(type: IRQType, vcpu: UInt32 = 0, number: UInt32) -> UInt32 {
        (type.rawValue << 24) | ((vcpu & 0xFF) << 16) | (((vcpu >> 8) & 0xF) << 28) | (number & 0xFFFF)
    }
}
