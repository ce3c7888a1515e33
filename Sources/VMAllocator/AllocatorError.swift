/// Why an allocator refused a request.
///
/// Every case carries the values needed to say what was asked for, in which pool, and
/// what stood in the way; ``description`` turns them into one English sentence.
public enum AllocatorError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No free, suitably aligned range of `size` bytes is left in the pool named `pool`,
    /// whose bounds are `poolRange`.
    case exhausted(size: UInt64, alignment: UInt64, pool: String, poolRange: AddressRange)
    /// The `requested` fixed range overlaps the allocation `existing` in the pool named `pool`.
    case overlap(requested: AddressRange, existing: AddressRange, pool: String)
    /// The `requested` fixed range does not lie entirely inside the pool `pool` named `poolName`.
    case outOfPool(requested: AddressRange, pool: AddressRange, poolName: String)
    /// The alignment is zero or not a power of two.
    case invalidAlignment(UInt64)
    /// A range or allocation of zero bytes was asked for.
    case zeroSize
    /// A range of `size` bytes starting at `start` would run past `UInt64.max`.
    case rangeOverflow(start: UInt64, size: UInt64)
    /// No allocation in the pool named `pool` matches the range being freed at this start address.
    case notAllocated(UInt64, pool: String)
    /// A pool named `name` of `size` bytes at `base` is empty or runs past `UInt64.max`.
    case invalidPool(name: String, base: UInt64, size: UInt64)
    /// Every id in `range` of the pool named `pool` is in use.
    case idsExhausted(pool: String, range: ClosedRange<UInt32>)
    /// An id lies outside `range`, the ids managed by the pool named `pool`.
    case idOutOfRange(UInt32, pool: String, range: ClosedRange<UInt32>)
    /// An id asked for explicitly is already in use in the pool named `pool`.
    case alreadyAllocated(UInt32, pool: String)
    /// An id being freed is not in use in the pool named `pool`.
    case idNotAllocated(UInt32, pool: String)

    /// One English sentence naming the pool, the request and the reason it failed.
    public var description: String {
        switch self {
        case let .exhausted(size, alignment, pool, poolRange):
            return "\(pool): cannot allocate \(hex(size)) bytes aligned to \(hex(alignment)): "
                + "no free range left in \(poolRange)"
        case let .overlap(requested, existing, pool):
            return "\(pool): cannot allocate \(requested): it overlaps the existing allocation \(existing)"
        case let .outOfPool(requested, pool, poolName):
            return "\(poolName): cannot allocate \(requested): it is not inside the pool \(pool)"
        case let .invalidAlignment(alignment):
            return "invalid alignment \(hex(alignment)): an alignment must be a non-zero power of two"
        case .zeroSize:
            return "invalid size 0: an address range must be at least 1 byte long"
        case let .rangeOverflow(start, size):
            return "a range of \(hex(size)) bytes starting at \(hex(start)) would run past "
                + "the top of the 64-bit address space (\(hex(UInt64.max)))"
        case let .notAllocated(start, pool):
            return "\(pool): cannot free the range at \(hex(start)): it does not match any allocation "
                + "(both start and size must match)"
        case let .invalidPool(name, base, size):
            if size == 0 {
                return "\(name): invalid pool at \(hex(base)): a pool must hold at least 1 byte"
            }
            return "\(name): invalid pool of \(hex(size)) bytes at \(hex(base)): it would run past "
                + "the top of the 64-bit address space (\(hex(UInt64.max)))"
        case let .idsExhausted(pool, range):
            return "\(pool): cannot allocate an id: all \(UInt64(range.upperBound - range.lowerBound) + 1) "
                + "ids in \(range.lowerBound)...\(range.upperBound) are in use"
        case let .idOutOfRange(id, pool, range):
            return "\(pool): id \(id) is outside the managed range \(range.lowerBound)...\(range.upperBound)"
        case let .alreadyAllocated(id, pool):
            return "\(pool): cannot allocate id \(id): it is already in use"
        case let .idNotAllocated(id, pool):
            return "\(pool): cannot free id \(id): it is not allocated"
        }
    }
}
