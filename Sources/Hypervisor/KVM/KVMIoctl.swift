import CLinux
import HostSystem

/// Calls a KVM ioctl with a pointer argument, retrying on `EINTR`.
@inline(__always)
func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: StaticString, _ argument: UnsafeMutableRawPointer?) throws(HypervisorError) -> Int32 {
    while true {
        let result = clinux_ioctl_ptr(fd, request, argument)
        if result >= 0 { return result }
        let code = clinux_errno()
        if code == EINTR { continue }
        throw HypervisorError.ioctlFailed(name: "\(name)", SystemError(call: "ioctl(\(name))", errno: code))
    }
}

/// Calls a KVM ioctl with an integer argument, retrying on `EINTR`.
@inline(__always)
func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: StaticString, value: UInt) throws(HypervisorError) -> Int32 {
    while true {
        let result = clinux_ioctl_val(fd, request, value)
        if result >= 0 { return result }
        let code = clinux_errno()
        if code == EINTR { continue }
        throw HypervisorError.ioctlFailed(name: "\(name)", SystemError(call: "ioctl(\(name))", errno: code))
    }
}

/// Calls a KVM ioctl with a pointer to a C structure, retrying on `EINTR`.
@inline(__always)
func kvmIoctl<T>(_ fd: Int32, _ request: UInt, _ name: StaticString, _ value: inout T) throws(HypervisorError) -> Int32 {
    while true {
        let result = withUnsafeMutablePointer(to: &value) { clinux_ioctl_ptr(fd, request, $0) }
        if result >= 0 { return result }
        let code = clinux_errno()
        if code == EINTR { continue }
        throw HypervisorError.ioctlFailed(name: "\(name)", SystemError(call: "ioctl(\(name))", errno: code))
    }
}

/// A zeroed, 8-byte-aligned heap buffer for the kernel's variable-length structures
/// (`kvm_msrs`, `kvm_cpuid2`, `kvm_irq_routing`, `kvm_msr_list`): a header followed by
/// `count` entries.
struct FlexibleBuffer<Header, Entry>: ~Copyable {
    let raw: UnsafeMutableRawPointer
    let count: Int

    init(count: Int) {
        self.count = count
        let bytes = MemoryLayout<Header>.size + max(count, 1) * MemoryLayout<Entry>.stride
        raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
    }

    deinit { raw.deallocate() }

    // SAFETY: the buffer was sized for Header plus `count` entries and zeroed, and both
    // types are trivial C structures.
    var header: UnsafeMutablePointer<Header> { raw.assumingMemoryBound(to: Header.self) }
    var entries: UnsafeMutablePointer<Entry> {
        (raw + MemoryLayout<Header>.size).assumingMemoryBound(to: Entry.self)
    }
}

/// Reads a CPUID list (`KVM_GET_SUPPORTED_CPUID`, `KVM_GET_EMULATED_CPUID` on the system
/// descriptor, `KVM_GET_CPUID2` on a vCPU), growing the buffer while the kernel says `E2BIG`.
func readCPUIDList(_ fd: Int32, _ request: UInt, _ name: StaticString) throws(HypervisorError) -> [CPUIDEntry] {
    var capacity = 128
    while true {
        let buffer = FlexibleBuffer<kvm_cpuid2, kvm_cpuid_entry2>(count: capacity)
        buffer.header.pointee.nent = UInt32(capacity)
        if clinux_ioctl_ptr(fd, request, buffer.raw) >= 0 {
            return (0..<Int(buffer.header.pointee.nent)).map { KVMConvert.cpuid(buffer.entries[$0]) }
        }
        let code = clinux_errno()
        if code == E2BIG && capacity < 4096 { capacity *= 2; continue }
        if code == EINTR { continue }
        throw .ioctlFailed(name: "\(name)", SystemError(call: "ioctl(\(name))", errno: code))
    }
}
