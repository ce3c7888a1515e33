import HostSystem

/// Why a guest memory operation failed: building the memory map or accessing guest memory.
///
/// Every case names the guest addresses involved in hexadecimal, so a log line alone says
/// which access went wrong.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An access of `length` bytes at `address` touches an address that no region backs:
    /// a gap between regions, below the first one or past the end of guest memory.
    /// Nothing was read or written.
    case outOfRange(address: GuestAddress, length: Int)
    /// `address` plus `length` passes the top of the 64-bit guest physical address space.
    case addressOverflow(address: GuestAddress, length: Int)
    /// Two regions (given by their start addresses) share at least one byte.
    case overlappingRegions(GuestAddress, GuestAddress)
    /// A region starting at this address has size 0.
    case emptyRegion(GuestAddress)
    /// An atomic access at `address` is not naturally aligned to `alignment` bytes (in the
    /// guest, or in the host mapping behind it).
    case misaligned(address: GuestAddress, alignment: Int)
    /// Mapping host memory for guest RAM (or allocating its dirty bitmap) failed.
    case mappingFailed(SystemError)
    /// Guest memory was built from an empty list of regions.
    case noRegions
    /// A region at this address cannot be added: the room for `capacity` regions reserved
    /// when the guest memory was built is used up.
    case noSpareRegion(GuestAddress, capacity: Int)
    /// The range is backed, but by more than one region, and the operation (an atomic
    /// access, a host pointer) needs one contiguous host mapping.
    case crossesRegionBoundary(address: GuestAddress, length: Int)
    /// A write of `length` bytes at `address` touches a read-only region. Nothing was written.
    case readOnlyRegion(address: GuestAddress, length: Int)
    /// An access at `address` asked for a negative length.
    case invalidLength(address: GuestAddress, length: Int)
    /// A snapshot's memory table or file does not fit this guest memory (the reason says
    /// which range is missing, extra or different, or how the file's size is wrong).
    case snapshotMismatch(String)
    /// Reading or writing a snapshot's memory file failed.
    case snapshotIO(SystemError)
    /// A userfaultfd for on-demand restore could not be made (the host refuses it, or the
    /// handshake failed).
    case userfaultfdUnavailable(UserFaultFDError)
    /// A userfaultfd operation of the on-demand restore failed (registering a region,
    /// filling a page, the handler thread).
    case userfaultfdFailed(SystemError)
    /// On-demand restore cannot serve this region; the reason says why.
    case onDemandRestoreUnsupported(region: GuestAddress, reason: String)
    /// Handing a guest range back to the host (`fallocate` punch-hole, `madvise`) failed.
    case hostAdviceFailed(address: GuestAddress, length: Int, SystemError)

    /// A sentence that explains the failure and names the guest range in hexadecimal.
    public var description: String {
        switch self {
        case let .outOfRange(address, length):
            if length == 0 {
                return "guest address \(address) (zero-length access) is outside every guest memory region"
            }
            return "guest memory access of \(length) bytes at \(Self.range(address, length)) "
                + "touches an address that no memory region backs (a gap between regions or past the end)"
        case let .addressOverflow(address, length):
            return "guest address \(address) plus \(length) bytes (0x\(String(length, radix: 16))) "
                + "overflows the 64-bit guest physical address space"
        case let .overlappingRegions(first, second):
            return "guest memory regions starting at \(first) and \(second) overlap"
        case let .emptyRegion(start):
            return "guest memory region at \(start) has size 0"
        case let .misaligned(address, alignment):
            return "guest address \(address) is not aligned to \(alignment) bytes, "
                + "as an atomic access of that width requires"
        case let .mappingFailed(error):
            return "could not set up host memory for guest RAM: \(error)"
        case .noRegions:
            return "guest memory needs at least one region, but none was given"
        case let .noSpareRegion(address, capacity):
            return "cannot add a guest memory region at \(address): the guest memory was built with room for \(capacity) regions and they are all used"
        case let .crossesRegionBoundary(address, length):
            return "guest range \(Self.range(address, length)) spans more than one memory region, "
                + "but this operation needs it inside a single region"
        case let .readOnlyRegion(address, length):
            return "guest range \(Self.range(address, length)) lies in a read-only memory region "
                + "and cannot be written"
        case let .invalidLength(address, length):
            return "guest memory access at \(address) asked for a negative length (\(length))"
        case let .snapshotMismatch(reason):
            return "the memory snapshot does not fit this guest memory: \(reason)"
        case let .snapshotIO(error):
            return "could not read or write the guest memory snapshot file: \(error)"
        case let .userfaultfdUnavailable(error):
            return "on-demand memory restore is not possible: \(error)"
        case let .userfaultfdFailed(error):
            return "on-demand memory restore failed: \(error)"
        case let .onDemandRestoreUnsupported(region, reason):
            return "on-demand memory restore cannot serve the guest memory region at \(region): \(reason)"
        case let .hostAdviceFailed(address, length, error):
            return "the host refused advice on guest range \(Self.range(address, length)): \(error)"
        }
    }

    /// `[start, end)` in hexadecimal; the end is computed wide so that it never overflows.
    static func range(_ address: GuestAddress, _ length: Int) -> String {
        let end = UInt128(address.rawValue) + UInt128(max(length, 0))
        return "[\(address), 0x\(String(end, radix: 16)))"
    }
}
