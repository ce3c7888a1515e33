import CLinux
import HostSystem
import Testing
@testable import Hypervisor

/// The arm64 backend's ioctl numbers and the GIC set-up sequence, pinned to Linux's headers.
@Suite("KVM arm64 backend: encodings")
struct KVMARM64BackendEncodingTests {
    @Test("_IOC numbers: the helper reproduces the x86 header's generic ones, and the arm64-only ones")
    func ioctlNumbers() {
        // KVM_GET_ONE_REG = _IOW(KVMIO, 0xab, struct kvm_one_reg), KVM_SET_ONE_REG = _IOW(KVMIO, 0xac, ...),
        // KVM_SET_DEVICE_ATTR = _IOW(KVMIO, 0xe1, struct kvm_device_attr): the C constants of this host's header.
        #expect(KVMARM64.ioctlNumber(direction: 1, number: 0xAB, size: 16) == IOCTL_KVM_GET_ONE_REG)
        #expect(KVMARM64.ioctlNumber(direction: 1, number: 0xAC, size: 16) == IOCTL_KVM_SET_ONE_REG)
        #expect(KVMARM64.ioctlNumber(direction: 1, number: 0xE1, size: 24) == IOCTL_KVM_SET_DEVICE_ATTR)
        #expect(KVMARM64.ioctlNumber(direction: 3, number: 0xE0, size: 12) == IOCTL_KVM_CREATE_DEVICE)
        // KVM_ARM_VCPU_INIT = _IOW(KVMIO, 0xae, struct kvm_vcpu_init) and KVM_ARM_PREFERRED_TARGET =
        // _IOR(KVMIO, 0xaf, struct kvm_vcpu_init), struct kvm_vcpu_init being 32 bytes.
        #expect(KVMARM64.ioctlVCPUInit == 0x4020_AEAE)
        #expect(KVMARM64.ioctlPreferredTarget == 0x8020_AEAF)
        #expect(KVMARM64.pmuControlGroup == 0 && KVMARM64.pmuAttributeIRQ == 0 && KVMARM64.pmuAttributeInit == 1)
    }

    @Test("The GICv3 is set up in Cloud Hypervisor's order, with the ITS before the GIC's init")
    func gicSteps() throws {
        let gic = ARM64GICConfiguration(distributorAddress: 0x08FF_0000, redistributorAddress: 0x08F7_0000,
                                        itsAddress: 0x08F5_0000, interruptCount: 256)
        try gic.validate()
        #expect(gic.steps == [
            .create(.gic),
            .setAttribute(.gic, group: .address, attribute: 2, payload: .u64(0x08FF_0000)),
            .setAttribute(.gic, group: .address, attribute: 3, payload: .u64(0x08F7_0000)),
            .create(.its),
            .setAttribute(.its, group: .address, attribute: 4, payload: .u64(0x08F5_0000)),
            .setAttribute(.its, group: .control, attribute: 0, payload: .none),
            .setAttribute(.gic, group: .numberOfIRQs, attribute: 0, payload: .u32(256)),
            .setAttribute(.gic, group: .control, attribute: 0, payload: .none),
        ])
        var noITS = gic
        noITS.itsAddress = nil
        #expect(!noITS.steps.contains(.create(.its)))
        var bad = gic
        bad.redistributorAddress += 0x1000
        #expect(throws: HypervisorError.self) { try bad.validate() }
        bad = gic
        bad.interruptCount = 100
        #expect(throws: HypervisorError.self) { try bad.validate() }
    }
}

/// On an x86-64 host the arm64 calls reach KVM and come back refused, each error naming its
/// ioctl: the calls are wired, and nothing pretends they worked.
@Suite("KVM arm64 backend on this host", .enabled(if: KVMSupport.available, KVMSupport.reason))
struct KVMARM64BackendHostTests {
    func expectRefused(_ ioctl: String, _ body: () throws(HypervisorError) -> Void) {
        do {
            try body()
            #if !arch(arm64)
            Issue.record("\(ioctl) succeeded on an x86-64 host")
            #endif
        } catch {
            guard case .ioctlFailed(let name, _) = error else { Issue.record("unexpected error \(error)"); return }
            #expect(name == ioctl)
        }
    }

    @Test("vCPU init, one-register access, the PMU, the preferred target and the vGIC are refused by name")
    func callsReachTheKernel() throws {
        let kvm = try KVMSupport.kvm()
        let vm = try #require(try kvm.createVirtualMachine() as? KVMVirtualMachine)
        let vcpu = try #require(try vm.createVCPU(id: 0) as? KVMVCPU)
        expectRefused("KVM_ARM_PREFERRED_TARGET") { () throws(HypervisorError) in _ = try vm.preferredTarget() }
        expectRefused("KVM_ARM_VCPU_INIT") { () throws(HypervisorError) in try vcpu.initialize(target: 0, features: [.psci0_2]) }
        expectRefused("KVM_GET_ONE_REG") { () throws(HypervisorError) in _ = try vcpu.oneRegister(KVMARM64.mpidrEL1) }
        expectRefused("KVM_SET_ONE_REG") { () throws(HypervisorError) in try vcpu.setOneRegister(KVMARM64.corePC, 0x4040_0000) }
        expectRefused("KVM_SET_DEVICE_ATTR") { () throws(HypervisorError) in try vcpu.initializePMU(interrupt: 23) }
        expectRefused("KVM_CREATE_DEVICE") { () throws(HypervisorError) in
            try vm.createGICv3(ARM64GICConfiguration(distributorAddress: 0x08FF_0000, redistributorAddress: 0x08FD_0000,
                                                     itsAddress: 0x08FB_0000, interruptCount: 256))
        }
    }
}
