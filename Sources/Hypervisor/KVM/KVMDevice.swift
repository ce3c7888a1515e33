import CLinux
import HostSystem

/// An in-kernel device of a KVM VM (the descriptor `KVM_CREATE_DEVICE` returns): the arm64
/// vGICv3 and its ITS, VFIO's device, ... configured through device attributes.
public final class KVMDevice: @unchecked Sendable {
    /// The device file descriptor.
    public let descriptor: OwnedFileDescriptor
    /// The `KVM_DEV_TYPE_*` it was created as.
    public let type: UInt32

    init(descriptor: OwnedFileDescriptor, type: UInt32) {
        self.descriptor = descriptor
        self.type = type
    }

    /// Sets attribute `attribute` of `group`; `payload`, when given, is what the attribute's
    /// `addr` points at (the kernel reads its size from the attribute).
    ///
    /// The corresponding KVM ioctl is `KVM_SET_DEVICE_ATTR`.
    public func setAttribute(group: UInt32, attribute: UInt64, payload: ARM64GICConfiguration.Payload = .none) throws(HypervisorError) {
        try Self.setAttribute(on: descriptor.rawValue, group: group, attribute: attribute, payload: payload)
    }

    /// Whether the device knows attribute `attribute` of `group`.
    ///
    /// The corresponding KVM ioctl is `KVM_HAS_DEVICE_ATTR`.
    public func hasAttribute(group: UInt32, attribute: UInt64) -> Bool {
        var attr = kvm_device_attr(flags: 0, group: group, attr: attribute, addr: 0)
        return (try? kvmIoctl(descriptor.rawValue, IOCTL_KVM_HAS_DEVICE_ATTR, "KVM_HAS_DEVICE_ATTR", &attr)) != nil
    }

    /// `KVM_SET_DEVICE_ATTR` on any descriptor that takes it (a device, or an arm64 vCPU).
    static func setAttribute(on fd: Int32, group: UInt32, attribute: UInt64,
                             payload: ARM64GICConfiguration.Payload) throws(HypervisorError) {
        var attr = kvm_device_attr(flags: 0, group: group, attr: attribute, addr: 0)
        switch payload {
        case .none:
            _ = try kvmIoctl(fd, IOCTL_KVM_SET_DEVICE_ATTR, "KVM_SET_DEVICE_ATTR", &attr)
        case .u32(var value):
            // SAFETY: the kernel reads 4 bytes from `addr` during the call, while `value` lives.
            try withUnsafeMutablePointer(to: &value) { (pointer) throws(HypervisorError) in
                attr.addr = UInt64(UInt(bitPattern: pointer))
                _ = try kvmIoctl(fd, IOCTL_KVM_SET_DEVICE_ATTR, "KVM_SET_DEVICE_ATTR", &attr)
            }
        case .u64(var value):
            // SAFETY: the kernel reads 8 bytes from `addr` during the call, while `value` lives.
            try withUnsafeMutablePointer(to: &value) { (pointer) throws(HypervisorError) in
                attr.addr = UInt64(UInt(bitPattern: pointer))
                _ = try kvmIoctl(fd, IOCTL_KVM_SET_DEVICE_ATTR, "KVM_SET_DEVICE_ATTR", &attr)
            }
        }
    }
}

/// `struct kvm_vcpu_init` (arm64's header only, so spelled out here): `target`, `features[7]`.
typealias VCPUInitWords = (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)

extension KVMVirtualMachine {
    /// Creates an in-kernel device of `type` (`KVM_DEV_TYPE_*`).
    ///
    /// The corresponding KVM ioctl is `KVM_CREATE_DEVICE`.
    public func createDevice(type: UInt32) throws(HypervisorError) -> KVMDevice {
        var request = kvm_create_device(type: type, fd: 0, flags: 0)
        _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_CREATE_DEVICE, "KVM_CREATE_DEVICE", &request)
        return KVMDevice(descriptor: OwnedFileDescriptor(adopting: Int32(bitPattern: request.fd)), type: type)
    }

    /// The vCPU target an arm64 host prefers.
    ///
    /// The corresponding KVM ioctl is `KVM_ARM_PREFERRED_TARGET` (arm64 hosts only; elsewhere
    /// the kernel refuses it and this throws).
    public func preferredTarget() throws(HypervisorError) -> UInt32 {
        // `struct kvm_vcpu_init`: target, then features[7]; the kernel writes its 32 bytes.
        var initWords: VCPUInitWords = (0, 0, 0, 0, 0, 0, 0, 0)
        _ = try kvmIoctl(descriptor.rawValue, KVMARM64.ioctlPreferredTarget, "KVM_ARM_PREFERRED_TARGET", &initWords)
        return initWords.0
    }

    /// Creates the in-kernel GICv3 (and ITS) by the configuration's steps; the devices stay
    /// open as long as the VM.
    ///
    /// The corresponding KVM ioctls are `KVM_CREATE_DEVICE` and `KVM_SET_DEVICE_ATTR`.
    public func createGICv3(_ configuration: ARM64GICConfiguration) throws(HypervisorError) {
        try configuration.validate()
        var devices: [ARM64GICConfiguration.Device: KVMDevice] = [:]
        for step in configuration.steps {
            switch step {
            case .create(let device):
                let type = device == .gic ? KVMARM64.deviceTypeVGICv3 : KVMARM64.deviceTypeVGICITS
                devices[device] = try createDevice(type: type)
            case .setAttribute(let device, let group, let attribute, let payload):
                guard let target = devices[device] else {
                    throw .invalidArgument("the GIC set-up sets an attribute of the \(device) before creating it")
                }
                try target.setAttribute(group: group.rawValue, attribute: attribute, payload: payload)
            }
        }
        retainedDevices.withLock { $0 += devices.values }
    }
}

extension KVMVCPU {
    /// Sets the arm64 vCPU's target and features.
    ///
    /// The corresponding KVM ioctl is `KVM_ARM_VCPU_INIT` (arm64 hosts only).
    public func initialize(target: UInt32, features: [KVMARM64.VCPUFeature]) throws(HypervisorError) {
        // `struct kvm_vcpu_init`: target, then features[7]; the kernel reads its 32 bytes.
        var initWords: VCPUInitWords = (target, KVMARM64.featureWord(features), 0, 0, 0, 0, 0, 0)
        _ = try kvmIoctl(descriptor.rawValue, KVMARM64.ioctlVCPUInit, "KVM_ARM_VCPU_INIT", &initWords)
    }

    /// Reads a 64-bit register by id.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_ONE_REG`.
    public func oneRegister(_ id: UInt64) throws(HypervisorError) -> UInt64 {
        var value: UInt64 = 0
        // SAFETY: the kernel writes the register's 8 bytes to `addr` during the call.
        try withUnsafeMutablePointer(to: &value) { (pointer) throws(HypervisorError) in
            var request = kvm_one_reg(id: id, addr: UInt64(UInt(bitPattern: pointer)))
            _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_GET_ONE_REG, "KVM_GET_ONE_REG", &request)
        }
        return value
    }

    /// Writes a 64-bit register by id.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_ONE_REG`.
    public func setOneRegister(_ id: UInt64, _ value: UInt64) throws(HypervisorError) {
        var value = value
        // SAFETY: the kernel reads the register's 8 bytes from `addr` during the call.
        try withUnsafeMutablePointer(to: &value) { (pointer) throws(HypervisorError) in
            var request = kvm_one_reg(id: id, addr: UInt64(UInt(bitPattern: pointer)))
            _ = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_SET_ONE_REG, "KVM_SET_ONE_REG", &request)
        }
    }

    /// Sets the PMU's overflow interrupt and initialises the PMU.
    ///
    /// The corresponding KVM ioctl is `KVM_SET_DEVICE_ATTR` on the vCPU (`KVM_ARM_VCPU_PMU_V3_CTRL`).
    public func initializePMU(interrupt: UInt32) throws(HypervisorError) {
        try KVMDevice.setAttribute(on: descriptor.rawValue, group: KVMARM64.pmuControlGroup,
                                   attribute: KVMARM64.pmuAttributeIRQ, payload: .u32(interrupt))
        try KVMDevice.setAttribute(on: descriptor.rawValue, group: KVMARM64.pmuControlGroup,
                                   attribute: KVMARM64.pmuAttributeInit, payload: .none)
    }
}

#if arch(arm64)
// The arm64 backend: every call above is implemented on all hosts (so the x86-64 build checks
// it); only here does KVM accept them, so only here are the conformances declared.
extension KVMVCPU: ARM64VirtualCPU {}
extension KVMVirtualMachine: ARM64VirtualMachine {}
#endif
