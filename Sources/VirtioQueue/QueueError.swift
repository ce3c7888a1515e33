import GuestMemory

/// One of the three areas of guest memory that make up a split virtqueue.
public enum QueuePart: String, Sendable, Equatable, CustomStringConvertible {
    /// The descriptor table (16 bytes per entry, 16-byte aligned).
    case descriptorTable = "descriptor table"
    /// The available (driver) ring (2-byte aligned).
    case availableRing = "available ring"
    /// The used (device) ring (4-byte aligned).
    case usedRing = "used ring"

    /// The part's name as used in error messages.
    public var description: String { rawValue }
}

/// Why a virtqueue operation failed.
///
/// Configuration errors come from `SplitQueue.init(maxSize:)` and `SplitQueue.activate(in:)`.
/// Every error thrown while popping a descriptor chain means the driver broke the virtio
/// rules: the device should stop using the queue and set `DEVICE_NEEDS_RESET`. The queue's
/// state is left as it was before the failing call.
public enum QueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The device's maximum queue size is zero, not a power of two, or above 32768.
    case invalidMaxSize(UInt16)
    /// The driver's queue size is zero, not a power of two, or above the device maximum.
    case invalidSize(size: UInt16, maxSize: UInt16)
    /// A ring area does not start on the alignment the virtio specification requires.
    case misalignedRing(QueuePart, address: GuestAddress, alignment: Int)
    /// A ring area of `length` bytes at `address` is not entirely backed by guest memory.
    case ringOutOfMemory(QueuePart, address: GuestAddress, length: Int)
    /// The queue was used before `activate(in:)` succeeded (or after its configuration changed).
    case notReady
    /// The driver's available index moved further ahead of the last one seen than the queue
    /// has entries.
    case availableIndexJump(lastSeen: UInt16, published: UInt16, size: UInt16)
    /// The head index read from the available ring is not below the queue size.
    case headIndexOutOfRange(head: UInt16, size: UInt16)
    /// A descriptor's `next` field points outside its table (`limit` entries).
    case nextIndexOutOfRange(head: UInt16, next: UInt16, limit: Int)
    /// The chain has more descriptors than its table has entries, so it must loop.
    case chainTooLong(head: UInt16, limit: Int)
    /// A descriptor's address plus length passes the top of the 64-bit address space.
    case descriptorAddressOverflow(head: UInt16, address: GuestAddress, length: UInt32)
    /// A descriptor's buffer is not entirely backed by (writable, for a device-writable
    /// buffer) guest memory.
    case descriptorOutOfMemory(head: UInt16, address: GuestAddress, length: UInt32, cause: GuestMemoryError)
    /// An indirect descriptor has length zero.
    case emptyIndirectTable(head: UInt16)
    /// An indirect descriptor's length is not a multiple of the 16-byte descriptor size.
    case indirectTableLengthNotMultiple(head: UInt16, length: UInt32)
    /// An indirect table has more entries than the queue size allows.
    case indirectTableTooLarge(head: UInt16, entries: UInt32, limit: UInt16)
    /// An indirect table's address plus length overflows or leaves guest memory.
    case indirectTableOutOfMemory(head: UInt16, address: GuestAddress, length: UInt32)
    /// A descriptor inside an indirect table is itself marked indirect.
    case nestedIndirect(head: UInt16)
    /// A descriptor has both `VIRTQ_DESC_F_INDIRECT` and `VIRTQ_DESC_F_NEXT` set.
    case indirectWithNext(head: UInt16)
    /// A device-readable descriptor follows a device-writable one at `position` in the chain.
    case readableAfterWritable(head: UInt16, position: Int)
    /// `addUsed` was given a head index that is not below the queue size.
    case usedHeadOutOfRange(head: UInt16, size: UInt16)
    /// A `ChainReader` was asked for more bytes than the readable descriptors still hold.
    case readOverrun(requested: Int, remaining: Int)
    /// A `ChainWriter` was given more bytes than the writable descriptors still hold.
    case writeOverrun(requested: Int, remaining: Int)
    /// Accessing a ring or a buffer in guest memory failed.
    case memory(GuestMemoryError)
    /// The queue's address translator (a virtual IOMMU) maps no guest memory for the whole
    /// ring area of `length` bytes at I/O virtual address `address`.
    case ringNotMapped(QueuePart, address: UInt64, length: Int)
    /// The queue's address translator maps no guest memory for the whole buffer (or
    /// indirect table) of `length` bytes at I/O virtual address `address`.
    case descriptorNotMapped(head: UInt16, address: UInt64, length: UInt32)

    /// A sentence that explains the failure.
    public var description: String {
        switch self {
        case let .invalidMaxSize(size):
            return "maximum queue size \(size) is invalid: it must be a power of two between 1 and 32768"
        case let .invalidSize(size, maxSize):
            return "queue size \(size) is invalid: it must be a power of two between 1 and the maximum \(maxSize)"
        case let .misalignedRing(part, address, alignment):
            return "the \(part) at guest address \(address) is not aligned to \(alignment) bytes"
        case let .ringOutOfMemory(part, address, length):
            return "the \(part) (\(length) bytes at guest address \(address)) is not inside guest memory"
        case .notReady:
            return "the queue is not ready: activate it after configuring its size and ring addresses"
        case let .availableIndexJump(lastSeen, published, size):
            return "the driver moved the available index from \(lastSeen) to \(published), "
                + "more than the queue size \(size) ahead"
        case let .headIndexOutOfRange(head, size):
            return "the available ring names descriptor \(head) as a chain head, but the queue has only \(size)"
        case let .nextIndexOutOfRange(head, next, limit):
            return "a descriptor in the chain starting at \(head) links to entry \(next), "
                + "outside its table of \(limit) entries"
        case let .chainTooLong(head, limit):
            return "the chain starting at descriptor \(head) is longer than \(limit) descriptors (a loop)"
        case let .descriptorAddressOverflow(head, address, length):
            return "a descriptor in the chain starting at \(head) (\(length) bytes at \(address)) "
                + "passes the end of the 64-bit address space"
        case let .descriptorOutOfMemory(head, address, length, cause):
            return "a descriptor in the chain starting at \(head) (\(length) bytes at \(address)) "
                + "is not usable guest memory: \(cause)"
        case let .emptyIndirectTable(head):
            return "the chain starting at descriptor \(head) refers to an indirect table of length 0"
        case let .indirectTableLengthNotMultiple(head, length):
            return "the chain starting at descriptor \(head) refers to an indirect table of \(length) bytes, "
                + "not a multiple of 16"
        case let .indirectTableTooLarge(head, entries, limit):
            return "the chain starting at descriptor \(head) refers to an indirect table of \(entries) entries, "
                + "more than the queue size \(limit)"
        case let .indirectTableOutOfMemory(head, address, length):
            return "the chain starting at descriptor \(head) refers to an indirect table "
                + "(\(length) bytes at \(address)) outside guest memory"
        case let .nestedIndirect(head):
            return "the indirect table of the chain starting at descriptor \(head) contains another indirect descriptor"
        case let .indirectWithNext(head):
            return "a descriptor in the chain starting at \(head) sets both the INDIRECT and NEXT flags"
        case let .readableAfterWritable(head, position):
            return "descriptor \(position) of the chain starting at \(head) is device-readable "
                + "but follows a device-writable one"
        case let .usedHeadOutOfRange(head, size):
            return "cannot return descriptor \(head) to the used ring: the queue has only \(size) entries"
        case let .readOverrun(requested, remaining):
            return "cannot read \(requested) bytes from the chain: only \(remaining) readable bytes remain"
        case let .writeOverrun(requested, remaining):
            return "cannot write \(requested) bytes to the chain: only \(remaining) writable bytes remain"
        case let .memory(cause):
            return "guest memory access for the queue failed: \(cause)"
        case let .ringNotMapped(part, address, length):
            return "the \(part) (\(length) bytes at I/O virtual address 0x\(String(address, radix: 16))) "
                + "is not mapped by the IOMMU"
        case let .descriptorNotMapped(head, address, length):
            return "the chain starting at descriptor \(head) names \(length) bytes at I/O virtual address "
                + "0x\(String(address, radix: 16)), which the IOMMU does not map"
        }
    }
}
