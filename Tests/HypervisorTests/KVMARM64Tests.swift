import CLinux
import Testing
@testable import Hypervisor

/// Register ids and attributes against the values of Linux's `include/uapi/linux/kvm.h`
/// (through CLinux where the x86 header has them) and `arch/arm64/include/uapi/asm/kvm.h`
/// (the macros expanded by hand below).
@Suite("KVM arm64 encodings")
struct KVMARM64Tests {
    @Test func genericFieldsMatchLinuxKVMH() {
        #expect(KVMARM64.regARM64 == UInt64(KVM_REG_ARM64))
        #expect(KVMARM64.regSizeU64 == UInt64(KVM_REG_SIZE_U64))
        #expect(KVMARM64.regSizeU32 == UInt64(KVM_REG_SIZE_U32))
        #expect(KVMARM64.regSizeU128 == UInt64(KVM_REG_SIZE_U128))
        #expect(KVMARM64.regSizeShift == UInt64(KVM_REG_SIZE_SHIFT))
        #expect(KVMARM64.deviceTypeVGICv3 == UInt32(KVM_DEV_TYPE_ARM_VGIC_V3.rawValue))
        #expect(KVMARM64.deviceTypeVGICITS == UInt32(KVM_DEV_TYPE_ARM_VGIC_ITS.rawValue))
    }

    @Test func coreRegisterIds() {
        // KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | offsetof(struct kvm_regs, ...) / 4
        #expect(KVMARM64.coreX(0) == 0x6030_0000_0010_0000)
        #expect(KVMARM64.coreX(1) == 0x6030_0000_0010_0002)
        #expect(KVMARM64.coreX(30) == 0x6030_0000_0010_003C)
        #expect(KVMARM64.coreSP == 0x6030_0000_0010_003E)
        #expect(KVMARM64.corePC == 0x6030_0000_0010_0040)
        #expect(KVMARM64.corePSTATE == 0x6030_0000_0010_0042)
        #expect(KVMARM64.coreSPEL1 == 0x6030_0000_0010_0044)
        #expect(KVMARM64.coreELREL1 == 0x6030_0000_0010_0046)
        #expect(KVMARM64.coreSPSR(0) == 0x6030_0000_0010_0048)
        #expect(KVMARM64.coreV(0) == 0x6040_0000_0010_0054)
        #expect(KVMARM64.coreV(31) == 0x6040_0000_0010_00D0)
        #expect(KVMARM64.coreFPSR == 0x6020_0000_0010_00D4)
        #expect(KVMARM64.coreFPCR == 0x6020_0000_0010_00D5)
    }

    @Test func systemAndTimerRegisterIds() {
        #expect(KVMARM64.mpidrEL1 == 0x6030_0000_0013_C005)
        #expect(KVMARM64.sctlrEL1 == 0x6030_0000_0013_C080)
        #expect(KVMARM64.idAA64MMFR0EL1 == 0x6030_0000_0013_C038)
        // ARM64_SYS_REG(3, 3, 14, 3, 1), (3, 3, 14, 3, 2), (3, 3, 14, 0, 2)
        #expect(KVMARM64.timerCTL == 0x6030_0000_0013_DF19)
        #expect(KVMARM64.timerCNT == 0x6030_0000_0013_DF1A)
        #expect(KVMARM64.timerCVAL == 0x6030_0000_0013_DF02)
        #expect(KVMARM64.psciVersion == 0x6030_0000_0014_0000)
    }

    @Test func vcpuInitAndVGICAttributes() {
        #expect(KVMARM64.featureWord(KVMARM64.vcpuFeatures(vcpu: 0, pmu: false)) == 0b100)
        #expect(KVMARM64.featureWord(KVMARM64.vcpuFeatures(vcpu: 1, pmu: true)) == 0b1101)
        #expect(KVMARM64.bootPSTATE == 0x3C5)
        #expect(KVMARM64.VGICGroup.address.rawValue == 0 && KVMARM64.VGICGroup.numberOfIRQs.rawValue == 3)
        #expect(KVMARM64.VGICGroup.control.rawValue == 4 && KVMARM64.VGICGroup.itsRegisters.rawValue == 8)
        #expect(KVMARM64.VGICAddressType.distributor.rawValue == 2 && KVMARM64.VGICAddressType.redistributor.rawValue == 3)
        #expect(KVMARM64.VGICAddressType.its.rawValue == 4 && KVMARM64.VGICAddressType.redistributorRegion.rawValue == 5)
        #expect(KVMARM64.redistributorRegionValue(count: 4, base: 0x08FD_0000, index: 0) == 0x0040_0000_08FD_0000)
        #expect(KVMARM64.vgicRegisterAttribute(mpidr: 0x8000_0102, offset: 0x80) == 0x0000_0102_0000_0080)
        #expect(KVMARM64.vgicRegisterAttribute(mpidr: 0x01_8000_0000, offset: 4) == 0x0100_0000_0000_0004)
        // KVM_IRQ_LINE: SPI 33 = (1 << 24) | 33; PPI 27 on vCPU 2; vCPU 300 uses vcpu2_index.
        #expect(KVMARM64.irqLine(type: .spi, number: 33) == 0x0100_0021)
        #expect(KVMARM64.irqLine(type: .ppi, vcpu: 2, number: 27) == 0x0202_001B)
        #expect(KVMARM64.irqLine(type: .ppi, vcpu: 300, number: 27) == 0x122C_001B)
    }
}
