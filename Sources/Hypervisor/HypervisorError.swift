import HostSystem

/// Everything that can go wrong talking to a hypervisor, each case with a sentence that
/// says what failed and, where the fix is known, how to fix it.
public enum HypervisorError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The hypervisor device node does not exist.
    case deviceMissing(path: String)
    /// The device node exists but this process may not open it.
    case devicePermissionDenied(path: String)
    /// Opening the device failed for another reason.
    case deviceOpenFailed(path: String, SystemError)
    /// The kernel speaks another KVM API version than 12.
    case unsupportedAPIVersion(Int32)
    /// A capability the VMM needs is not offered by the kernel.
    case missingCapability(name: String, number: Int32)
    /// An ioctl failed; `name` is the KVM request (`"KVM_RUN"`).
    case ioctlFailed(name: String, SystemError)
    /// Mapping or another host operation failed.
    case host(SystemError)
    /// A memory slot would overlap an existing one.
    case overlappingMemorySlot(slot: UInt32, guestAddress: UInt64, size: UInt64, existingSlot: UInt32, existingAddress: UInt64, existingSize: UInt64)
    /// A memory slot's address, size or host address is not page-aligned or is empty.
    case invalidMemorySlot(slot: UInt32, reason: String)
    /// No memory slot with that number is registered.
    case unknownMemorySlot(UInt32)
    /// A value passed in is outside what the hypervisor accepts.
    case invalidArgument(String)
    /// The kernel returned data the VMM cannot use.
    case unexpectedKernelData(String)

    /// A sentence describing the error and how to fix it where that is known.
    public var description: String {
        switch self {
        case .deviceMissing(let path):
            return "\(path) does not exist: the KVM module is not loaded or this machine has no hardware virtualisation (try `modprobe kvm_intel` or `modprobe kvm_amd`, and check that virtualisation is enabled in the firmware)"
        case .devicePermissionDenied(let path):
            return "permission denied opening \(path): run as root, or add the user to the group that owns it (`sudo usermod -aG kvm $USER`, then log in again)"
        case .deviceOpenFailed(let path, let error):
            return "cannot open \(path): \(error)"
        case .unsupportedAPIVersion(let version):
            return "the kernel's KVM API version is \(version); this VMM needs version 12"
        case .missingCapability(let name, let number):
            return "the kernel's KVM lacks \(name) (capability \(number)), which this VMM needs"
        case .ioctlFailed(let name, let error):
            return "\(name) failed: \(error.reason) (errno \(error.errno))"
        case .host(let error):
            return error.description
        case .overlappingMemorySlot(let slot, let address, let size, let existing, let existingAddress, let existingSize):
            return "memory slot \(slot) [\(hex(address))-\(hex(address &+ size &- 1))] overlaps memory slot \(existing) [\(hex(existingAddress))-\(hex(existingAddress &+ existingSize &- 1))]"
        case .invalidMemorySlot(let slot, let reason):
            return "memory slot \(slot) is invalid: \(reason)"
        case .unknownMemorySlot(let slot):
            return "no memory slot \(slot) is registered"
        case .invalidArgument(let text):
            return text
        case .unexpectedKernelData(let text):
            return "the kernel returned unexpected data: \(text)"
        }
    }
}

/// `0x…` text for an address.
func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
