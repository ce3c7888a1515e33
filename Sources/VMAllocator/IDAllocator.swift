/// Hands out small integer ids from a fixed range, always the lowest free one, so freed ids
/// are reused first (PCI device slots, vCPU ids, virtio-mem region ids, GSIs).
///
/// Allocated ids are kept sorted; finding the lowest free id is a binary search because
/// the allocated ids fill a prefix of the range exactly up to the first hole.
public struct IDAllocator: Sendable {
    /// The allocator's name as it appears in errors (for example `"PCI device IDs"`).
    public let name: String
    /// Every id this allocator may hand out.
    public let range: ClosedRange<UInt32>
    /// The ids currently in use, in increasing order.
    public private(set) var allocatedIDs: [UInt32] = []

    /// Creates an allocator for the ids in `range`, all initially free.
    public init(name: String, range: ClosedRange<UInt32>) {
        self.name = name
        self.range = range
    }

    /// The number of ids in ``range``.
    public var capacity: UInt64 { UInt64(range.upperBound - range.lowerBound) + 1 }

    /// The number of ids still free.
    public var freeCount: UInt64 { capacity - UInt64(allocatedIDs.count) }

    /// Allocates the lowest free id.
    ///
    /// - Throws: ``AllocatorError/idsExhausted(pool:range:)`` when every id is in use.
    public mutating func allocate() throws(AllocatorError) -> UInt32 {
        guard freeCount > 0 else { throw .idsExhausted(pool: name, range: range) }
        // allocatedIDs[i] >= lowerBound + i always holds (sorted, distinct, inside the
        // range); the first index where it is strictly greater marks the lowest hole.
        var low = 0
        var high = allocatedIDs.count
        while low < high {
            let middle = low + (high - low) / 2
            if UInt64(allocatedIDs[middle]) > UInt64(range.lowerBound) + UInt64(middle) {
                high = middle
            } else {
                low = middle + 1
            }
        }
        // freeCount > 0 keeps lowerBound + low inside the range.
        let id = range.lowerBound + UInt32(low)
        allocatedIDs.insert(id, at: low)
        return id
    }

    /// Allocates exactly `id` (for example a slot named in the configuration).
    ///
    /// - Throws: ``AllocatorError/idOutOfRange(_:pool:range:)`` or
    ///   ``AllocatorError/alreadyAllocated(_:pool:)``.
    public mutating func allocate(_ id: UInt32) throws(AllocatorError) {
        try checkInRange(id)
        let index = firstIndex(notBelow: id)
        guard index == allocatedIDs.count || allocatedIDs[index] != id else {
            throw .alreadyAllocated(id, pool: name)
        }
        allocatedIDs.insert(id, at: index)
    }

    /// Releases `id` so a later ``allocate()`` may return it again.
    ///
    /// - Throws: ``AllocatorError/idOutOfRange(_:pool:range:)`` or
    ///   ``AllocatorError/idNotAllocated(_:pool:)``.
    public mutating func free(_ id: UInt32) throws(AllocatorError) {
        try checkInRange(id)
        let index = firstIndex(notBelow: id)
        guard index < allocatedIDs.count, allocatedIDs[index] == id else {
            throw .idNotAllocated(id, pool: name)
        }
        allocatedIDs.remove(at: index)
    }

    /// Whether `id` is currently in use (ids outside ``range`` never are).
    public func isAllocated(_ id: UInt32) -> Bool {
        let index = firstIndex(notBelow: id)
        return index < allocatedIDs.count && allocatedIDs[index] == id
    }

    private func checkInRange(_ id: UInt32) throws(AllocatorError) {
        guard range.contains(id) else { throw .idOutOfRange(id, pool: name, range: range) }
    }

    /// The index of the first allocated id that is not below `id` (binary search).
    private func firstIndex(notBelow id: UInt32) -> Int {
        var low = 0
        var high = allocatedIDs.count
        while low < high {
            let middle = low + (high - low) / 2
            if allocatedIDs[middle] >= id {
                high = middle
            } else {
                low = middle + 1
            }
        }
        return low
    }
}
