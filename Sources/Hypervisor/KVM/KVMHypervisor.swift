import CLinux
import HostSystem

/// The KVM hypervisor: an open `/dev/kvm` (the KVM "system" file descriptor).
///
/// ```swift
/// let kvm = try KVMHypervisor()
/// let vm = try kvm.createKVMVirtualMachine()
/// ```
public final class KVMHypervisor: Hypervisor {
    /// The open `/dev/kvm`.
    public let descriptor: OwnedFileDescriptor
    /// The size of each vCPU's shared `kvm_run` mapping (`KVM_GET_VCPU_MMAP_SIZE`).
    public let vcpuMmapSize: Int
    /// The KVM API version (always 12 once open).
    public let apiVersion: Int32

    /// The capabilities this VMM cannot work without, with their names.
    public static let requiredCapabilities: [(name: String, number: Int32)] = [
        ("KVM_CAP_USER_MEMORY", KVM_CAP_USER_MEMORY),
        ("KVM_CAP_IRQCHIP", KVM_CAP_IRQCHIP),
        ("KVM_CAP_IOEVENTFD", KVM_CAP_IOEVENTFD),
        ("KVM_CAP_IRQFD", KVM_CAP_IRQFD),
        ("KVM_CAP_IRQ_ROUTING", KVM_CAP_IRQ_ROUTING),
        ("KVM_CAP_IMMEDIATE_EXIT", KVM_CAP_IMMEDIATE_EXIT),
        ("KVM_CAP_SIGNAL_MSI", KVM_CAP_SIGNAL_MSI),
        ("KVM_CAP_MP_STATE", KVM_CAP_MP_STATE),
        ("KVM_CAP_EXT_CPUID", KVM_CAP_EXT_CPUID),
        ("KVM_CAP_SET_TSS_ADDR", KVM_CAP_SET_TSS_ADDR),
        ("KVM_CAP_PIT2", KVM_CAP_PIT2),
        ("KVM_CAP_VCPU_EVENTS", KVM_CAP_VCPU_EVENTS),
    ]

    /// Opens `path` (normally `/dev/kvm`), checks the API version and the required capabilities.
    ///
    /// A missing device or one this user may not open gives an error that says how to fix it.
    public init(path: String = "/dev/kvm") throws(HypervisorError) {
        let fd = clinux_open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            let code = clinux_errno()
            switch code {
            case ENOENT, ENODEV, ENXIO: throw .deviceMissing(path: path)
            case EACCES, EPERM: throw .devicePermissionDenied(path: path)
            default: throw .deviceOpenFailed(path: path, SystemError(call: "open(\(path))", errno: code))
            }
        }
        descriptor = OwnedFileDescriptor(adopting: fd)
        apiVersion = try kvmIoctl(fd, IOCTL_KVM_GET_API_VERSION, "KVM_GET_API_VERSION", value: 0)
        guard apiVersion == KVM_API_VERSION else { throw .unsupportedAPIVersion(apiVersion) }
        vcpuMmapSize = Int(try kvmIoctl(fd, IOCTL_KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", value: 0))
        for capability in Self.requiredCapabilities where checkExtension(capability.number) <= 0 {
            throw .missingCapability(name: capability.name, number: capability.number)
        }
    }

    /// Always `.kvm`.
    public var kind: HypervisorKind { .kvm }

    /// Asks whether the kernel offers `capability` (`KVM_CAP_*`): 0 for no, a positive
    /// number (often a limit) for yes.
    ///
    /// The corresponding KVM ioctl is `KVM_CHECK_EXTENSION`.
    public func checkExtension(_ capability: Int32) -> Int32 {
        max(0, clinux_ioctl_val(descriptor.rawValue, IOCTL_KVM_CHECK_EXTENSION, UInt(capability)))
    }

    /// The most vCPUs a VM may have (`KVM_CAP_MAX_VCPUS`, falling back to `KVM_CAP_NR_VCPUS`).
    public var maxVCPUs: Int {
        let max = checkExtension(KVM_CAP_MAX_VCPUS)
        return Int(max > 0 ? max : checkExtension(KVM_CAP_NR_VCPUS))
    }

    /// The number of memory slots a VM may have (`KVM_CAP_NR_MEMSLOTS`).
    public var maxMemorySlots: Int { Int(checkExtension(KVM_CAP_NR_MEMSLOTS)) }

    /// Creates a VM as the protocol type.
    public func createVirtualMachine() throws(HypervisorError) -> any VirtualMachine {
        try createKVMVirtualMachine()
    }

    /// Creates a VM.
    ///
    /// The corresponding KVM ioctl is `KVM_CREATE_VM`.
    public func createKVMVirtualMachine() throws(HypervisorError) -> KVMVirtualMachine {
        let fd = try kvmIoctl(descriptor.rawValue, IOCTL_KVM_CREATE_VM, "KVM_CREATE_VM", value: 0)
        return KVMVirtualMachine(descriptor: OwnedFileDescriptor(adopting: fd), hypervisor: self)
    }

    /// The CPUID leaves KVM can offer a guest on this host.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_SUPPORTED_CPUID`.
    public func supportedCPUID() throws(HypervisorError) -> [CPUIDEntry] {
        try readCPUIDList(descriptor.rawValue, IOCTL_KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID")
    }

    /// The CPUID leaves KVM emulates (`KVM_GET_EMULATED_CPUID`).
    public func emulatedCPUID() throws(HypervisorError) -> [CPUIDEntry] {
        try readCPUIDList(descriptor.rawValue, IOCTL_KVM_GET_EMULATED_CPUID, "KVM_GET_EMULATED_CPUID")
    }

    /// The MSRs KVM lets a VMM save and restore.
    ///
    /// The corresponding KVM ioctl is `KVM_GET_MSR_INDEX_LIST`.
    public func supportedMSRIndices() throws(HypervisorError) -> [UInt32] {
        try msrList(IOCTL_KVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST")
    }

    /// The feature MSRs KVM reports (`KVM_GET_MSR_FEATURE_INDEX_LIST`).
    public func featureMSRIndices() throws(HypervisorError) -> [UInt32] {
        try msrList(IOCTL_KVM_GET_MSR_FEATURE_INDEX_LIST, "KVM_GET_MSR_FEATURE_INDEX_LIST")
    }

    private func msrList(_ request: UInt, _ name: StaticString) throws(HypervisorError) -> [UInt32] {
        var capacity = 256
        while true {
            let buffer = FlexibleBuffer<kvm_msr_list, UInt32>(count: capacity)
            buffer.header.pointee.nmsrs = UInt32(capacity)
            let result = clinux_ioctl_ptr(descriptor.rawValue, request, buffer.raw)
            if result >= 0 {
                return Array(UnsafeBufferPointer(start: buffer.entries, count: Int(buffer.header.pointee.nmsrs)))
            }
            let code = clinux_errno()
            if code == E2BIG {
                // The kernel wrote the count it needs.
                capacity = max(capacity * 2, Int(buffer.header.pointee.nmsrs))
                continue
            }
            if code == EINTR { continue }
            throw .ioctlFailed(name: "\(name)", SystemError(call: "ioctl(\(name))", errno: code))
        }
    }
}
