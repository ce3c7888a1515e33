/// Which end of the free space an address allocation is taken from.
public enum AllocationPolicy: Hashable, Sendable {
    /// The lowest suitably aligned free address.
    case firstFit
    /// The highest suitably aligned free address (Cloud Hypervisor places 64-bit PCI BARs
    /// top-down this way).
    case lastFit
}

/// Hands out non-overlapping, aligned ranges of one address pool (port I/O space, an MMIO
/// window, a PCI BAR window, guest RAM holes).
///
/// A value type: copy it to try a plan and throw the copy away. Allocations are kept in
/// an array sorted by start address; fixed-address checks and frees use binary search,
/// and searching for free space walks the gaps between allocations. Arithmetic is
/// overflow-checked, so a pool may end at `UInt64.max`.
public struct AddressAllocator: Sendable, CustomStringConvertible {
    /// The pool's name as it appears in errors (for example `"MMIO space"`).
    public let name: String
    /// Every address this allocator may hand out.
    public let pool: AddressRange
    /// The ranges currently allocated, sorted by start address and never overlapping.
    public private(set) var allocations: [AddressRange] = []
    /// The number of pool bytes not covered by any allocation (free space may be fragmented).
    public private(set) var freeBytes: UInt64

    /// Creates an allocator for the `size` bytes starting at `base`.
    ///
    /// - Throws: ``AllocatorError/invalidPool(name:base:size:)`` when `size` is zero or
    ///   the pool would run past `UInt64.max` (ending exactly at `UInt64.max` is fine).
    public init(name: String, base: UInt64, size: UInt64) throws(AllocatorError) {
        guard size > 0, !base.addingReportingOverflow(size - 1).overflow else {
            throw .invalidPool(name: name, base: base, size: size)
        }
        self.init(name: name, pool: AddressRange(unchecked: base, size: size))
    }

    /// Creates an allocator for every address in `pool`.
    public init(name: String, pool: AddressRange) {
        self.name = name
        self.pool = pool
        self.freeBytes = pool.size
    }

    /// Allocates `size` bytes whose start is a multiple of `alignment`.
    ///
    /// - Parameters:
    ///   - size: the number of bytes; at least 1.
    ///   - alignment: a power of two the start address must be a multiple of.
    ///   - policy: ``AllocationPolicy/firstFit`` takes the lowest fitting address,
    ///     ``AllocationPolicy/lastFit`` the highest.
    /// - Returns: the allocated range.
    /// - Throws: ``AllocatorError/zeroSize``, ``AllocatorError/invalidAlignment(_:)``, or
    ///   ``AllocatorError/exhausted(size:alignment:pool:poolRange:)`` when no gap fits.
    public mutating func allocate(
        size: UInt64, alignment: UInt64, policy: AllocationPolicy = .firstFit
    ) throws(AllocatorError) -> AddressRange {
        guard size > 0 else { throw .zeroSize }
        try Alignment.validate(alignment)
        guard size <= freeBytes, let (index, start) = findFit(size: size, alignment: alignment, policy: policy)
        else {
            throw .exhausted(size: size, alignment: alignment, pool: name, poolRange: pool)
        }
        let range = AddressRange(unchecked: start, size: size)
        insert(range, at: index)
        return range
    }

    /// Allocates the `size` bytes starting exactly at `address`.
    ///
    /// - Returns: the allocated range.
    /// - Throws: ``AllocatorError/zeroSize``, ``AllocatorError/rangeOverflow(start:size:)``,
    ///   ``AllocatorError/outOfPool(requested:pool:poolName:)`` when the range is not
    ///   entirely inside the pool, or ``AllocatorError/overlap(requested:existing:pool:)``
    ///   naming the lowest existing allocation in the way.
    @discardableResult
    public mutating func allocate(at address: UInt64, size: UInt64) throws(AllocatorError) -> AddressRange {
        let requested = try AddressRange(start: address, size: size)
        guard pool.contains(requested) else {
            throw .outOfPool(requested: requested, pool: pool, poolName: name)
        }
        let index = firstIndex(startingAbove: requested.start)
        if index > 0, allocations[index - 1].overlaps(requested) {
            throw .overlap(requested: requested, existing: allocations[index - 1], pool: name)
        }
        if index < allocations.count, allocations[index].overlaps(requested) {
            throw .overlap(requested: requested, existing: allocations[index], pool: name)
        }
        insert(requested, at: index)
        return requested
    }

    /// Releases an allocation; `range` must equal it exactly (same start and size).
    ///
    /// - Throws: ``AllocatorError/notAllocated(_:pool:)`` when no allocation equals `range`.
    public mutating func free(_ range: AddressRange) throws(AllocatorError) {
        let index = firstIndex(startingAbove: range.start) - 1
        guard index >= 0, allocations[index] == range else {
            throw .notAllocated(range.start, pool: name)
        }
        remove(at: index)
    }

    /// Releases the allocation that starts at `start`, whatever its size.
    ///
    /// - Throws: ``AllocatorError/notAllocated(_:pool:)`` when no allocation starts there.
    public mutating func free(at start: UInt64) throws(AllocatorError) {
        let index = firstIndex(startingAbove: start) - 1
        guard index >= 0, allocations[index].start == start else {
            throw .notAllocated(start, pool: name)
        }
        remove(at: index)
    }

    /// The allocation that covers `address`, if any.
    public func allocation(containing address: UInt64) -> AddressRange? {
        let index = firstIndex(startingAbove: address) - 1
        guard index >= 0, allocations[index].contains(address) else { return nil }
        return allocations[index]
    }

    /// The maximal free ranges of the pool, sorted by start address.
    public var freeRanges: [AddressRange] {
        (0...allocations.count).compactMap { index in
            gap(before: index).map { AddressRange(unchecked: $0.first, size: $0.last - $0.first + 1) }
        }
    }

    /// The pool name and bounds, the number of allocations and the free byte count.
    public var description: String {
        "\(name) \(pool): \(allocations.count) allocation(s), \(hex(freeBytes)) bytes free"
    }

    // MARK: - Searching

    /// The index of the first allocation whose start is above `address` (binary search).
    private func firstIndex(startingAbove address: UInt64) -> Int {
        var low = 0
        var high = allocations.count
        while low < high {
            let middle = low + (high - low) / 2
            if allocations[middle].start > address {
                high = middle
            } else {
                low = middle + 1
            }
        }
        return low
    }

    /// The free bytes just before `allocations[index]` (or after the last allocation when
    /// `index == allocations.count`), as inclusive bounds; `nil` when there are none.
    private func gap(before index: Int) -> (first: UInt64, last: UInt64)? {
        let first: UInt64
        if index == 0 {
            first = pool.start
        } else {
            let previousEnd = allocations[index - 1].end
            guard previousEnd < pool.end else { return nil }
            first = previousEnd + 1
        }
        if index == allocations.count { return (first, pool.end) }
        let nextStart = allocations[index].start
        guard nextStart > first else { return nil }
        return (first, nextStart - 1)
    }

    /// Finds where an allocation fits: the insertion index and the start address.
    private func findFit(
        size: UInt64, alignment: UInt64, policy: AllocationPolicy
    ) -> (index: Int, start: UInt64)? {
        switch policy {
        case .firstFit:
            for index in 0...allocations.count {
                guard let (first, last) = gap(before: index) else { continue }
                if let start = Alignment.lowestFit(first: first, last: last, size: size, alignment: alignment) {
                    return (index, start)
                }
            }
        case .lastFit:
            for index in (0...allocations.count).reversed() {
                guard let (first, last) = gap(before: index) else { continue }
                if let start = Alignment.highestFit(first: first, last: last, size: size, alignment: alignment) {
                    return (index, start)
                }
            }
        }
        return nil
    }

    // MARK: - Bookkeeping

    private mutating func insert(_ range: AddressRange, at index: Int) {
        allocations.insert(range, at: index)
        freeBytes -= range.size
    }

    private mutating func remove(at index: Int) {
        freeBytes += allocations.remove(at: index).size
    }
}
