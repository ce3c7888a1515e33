import Testing
import VMAllocator

/// A small pool used by most tests: `[0x1000-0x10fff]`.
private func smallPool() throws -> AddressAllocator {
    try AddressAllocator(name: "test pool", base: 0x1000, size: 0x10000)
}

@Suite("AddressAllocator")
struct AddressAllocatorTests {
    @Test("first fit returns the lowest aligned address and fills earlier holes")
    func alignedFirstFit() throws {
        var allocator = try smallPool()
        let byte = try allocator.allocate(size: 0x10, alignment: 1)
        #expect(byte == (try AddressRange(start: 0x1000, size: 0x10)))
        let page = try allocator.allocate(size: 0x100, alignment: 0x1000)
        #expect(page.start == 0x2000)
        let small = try allocator.allocate(size: 0x10, alignment: 0x10)
        #expect(small.start == 0x1010)
        let odd = try allocator.allocate(size: 3, alignment: 8)
        #expect(odd.start == 0x1020)
        #expect(allocator.allocations == [byte, small, odd, page])
        #expect(allocator.freeBytes == 0x10000 - 0x10 - 0x100 - 0x10 - 3)
    }

    @Test("last fit allocates from the top of the pool, first fit from the bottom")
    func lastFit() throws {
        var bars = try AddressAllocator(name: "64-bit PCI BARs", base: 0x1_0000_0000, size: 0x1_0000_0000)
        let first = try bars.allocate(size: 0x1000, alignment: 0x1000, policy: .lastFit)
        #expect(first == (try AddressRange(start: 0x1_ffff_f000, size: 0x1000)))
        let second = try bars.allocate(size: 0x10000, alignment: 0x10000, policy: .lastFit)
        #expect(second.start == 0x1_fffe_0000)
        let third = try bars.allocate(size: 0x1000, alignment: 0x1000, policy: .lastFit)
        #expect(third.start == 0x1_ffff_e000)  // fills the alignment gap below the first BAR
        let low = try bars.allocate(size: 0x1000, alignment: 0x1000)
        #expect(low.start == 0x1_0000_0000)
        #expect(bars.allocations == [low, second, third, first])
    }

    @Test("last fit fills the highest hole that fits")
    func lastFitFillsHighestHole() throws {
        var allocator = try smallPool()
        for index in 0..<16 { try allocator.allocate(at: 0x1000 + UInt64(index) * 0x1000, size: 0x1000) }
        for start: UInt64 in [0x3000, 0x7000, 0x8000, 0xc000] { try allocator.free(at: start) }
        let page = try allocator.allocate(size: 0x1000, alignment: 0x1000, policy: .lastFit)
        #expect(page.start == 0xc000)
        let pair = try allocator.allocate(size: 0x2000, alignment: 0x1000, policy: .lastFit)
        #expect(pair.start == 0x7000)
        let last = try allocator.allocate(size: 0x800, alignment: 0x800, policy: .lastFit)
        #expect(last.start == 0x3800)
    }

    @Test("a fixed allocation takes exactly the requested range")
    func fixedAllocation() throws {
        var allocator = try smallPool()
        let range = try allocator.allocate(at: 0x5000, size: 0x123)
        #expect(range == (try AddressRange(start: 0x5000, size: 0x123)))
        let before = try allocator.allocate(at: 0x4000, size: 0x1000)  // touches from below
        let after = try allocator.allocate(at: 0x5123, size: 1)  // touches from above
        let first = try allocator.allocate(at: 0x1000, size: 1)
        let last = try allocator.allocate(at: 0x10fff, size: 1)
        #expect(allocator.allocations == [first, before, range, after, last])
        // First fit now skips the fixed first byte.
        #expect(try allocator.allocate(size: 1, alignment: 1).start == 0x1001)
    }

    @Test("a fixed allocation that overlaps names the existing range")
    func overlapNamesExistingRange() throws {
        var allocator = try smallPool()
        let existing = try allocator.allocate(at: 0x2000, size: 0x1000)
        let higher = try allocator.allocate(at: 0x4000, size: 0x1000)

        let fromAbove = try AddressRange(start: 0x2800, size: 0x1000)
        #expect(throws: AllocatorError.overlap(requested: fromAbove, existing: existing, pool: "test pool")) {
            try allocator.allocate(at: 0x2800, size: 0x1000)
        }
        let fromBelow = try AddressRange(start: 0x1800, size: 0x1000)
        #expect(throws: AllocatorError.overlap(requested: fromBelow, existing: existing, pool: "test pool")) {
            try allocator.allocate(at: 0x1800, size: 0x1000)
        }
        // A request covering both allocations names the lower one.
        let covering = try AddressRange(start: 0x1000, size: 0x8000)
        #expect(throws: AllocatorError.overlap(requested: covering, existing: existing, pool: "test pool")) {
            try allocator.allocate(at: 0x1000, size: 0x8000)
        }
        let inside = try AddressRange(start: 0x4010, size: 0x10)
        #expect(throws: AllocatorError.overlap(requested: inside, existing: higher, pool: "test pool")) {
            try allocator.allocate(at: 0x4010, size: 0x10)
        }
        #expect(allocator.allocations == [existing, higher])
    }

    @Test("a fixed allocation outside the pool is rejected with both ranges")
    func outsidePool() throws {
        var allocator = try smallPool()
        let pool = allocator.pool
        let below = try AddressRange(start: 0x0, size: 0x1000)
        #expect(throws: AllocatorError.outOfPool(requested: below, pool: pool, poolName: "test pool")) {
            try allocator.allocate(at: 0x0, size: 0x1000)
        }
        let crossingStart = try AddressRange(start: 0xfff, size: 2)
        #expect(throws: AllocatorError.outOfPool(requested: crossingStart, pool: pool, poolName: "test pool")) {
            try allocator.allocate(at: 0xfff, size: 2)
        }
        let crossingEnd = try AddressRange(start: 0x10fff, size: 2)
        #expect(throws: AllocatorError.outOfPool(requested: crossingEnd, pool: pool, poolName: "test pool")) {
            try allocator.allocate(at: 0x10fff, size: 2)
        }
        #expect(throws: AllocatorError.rangeOverflow(start: 0xffff_ffff_ffff_0000, size: 0x10001)) {
            try allocator.allocate(at: 0xffff_ffff_ffff_0000, size: 0x10001)
        }
        #expect(allocator.allocations.isEmpty)
    }

    @Test("exhaustion: full pool, oversized request, unsatisfiable alignment")
    func exhaustion() throws {
        var allocator = try AddressAllocator(name: "PIO space", base: 0x1000, size: 0x4000)
        for index in 0..<4 {
            #expect(try allocator.allocate(size: 0x1000, alignment: 0x1000).start == 0x1000 + UInt64(index) * 0x1000)
        }
        #expect(allocator.freeBytes == 0)
        let error = #expect(throws: AllocatorError.self) { try allocator.allocate(size: 1, alignment: 1) }
        #expect(error == .exhausted(size: 1, alignment: 1, pool: "PIO space", poolRange: allocator.pool))

        var empty = try AddressAllocator(name: "PIO space", base: 0x1000, size: 0x2000)
        #expect(throws: AllocatorError.exhausted(size: 0x2001, alignment: 1, pool: "PIO space", poolRange: empty.pool)) {
            try empty.allocate(size: 0x2001, alignment: 1)
        }
        // No multiple of 0x4000 lies in [0x1000-0x2fff].
        for policy in [AllocationPolicy.firstFit, .lastFit] {
            #expect(throws: AllocatorError.exhausted(size: 1, alignment: 0x4000, pool: "PIO space", poolRange: empty.pool)) {
                try empty.allocate(size: 1, alignment: 0x4000, policy: policy)
            }
        }
    }

    @Test("freeing makes the space available again, lowest first")
    func freeThenReuse() throws {
        var allocator = try smallPool()
        let a = try allocator.allocate(size: 0x1000, alignment: 0x1000)
        let b = try allocator.allocate(size: 0x1000, alignment: 0x1000)
        let c = try allocator.allocate(size: 0x1000, alignment: 0x1000)
        try allocator.free(b)
        #expect(allocator.allocations == [a, c])
        #expect(allocator.freeBytes == 0x10000 - 0x2000)
        #expect(try allocator.allocate(size: 0x1000, alignment: 0x1000) == b)
        try allocator.free(at: a.start)
        try allocator.free(c)
        try allocator.free(b)
        #expect(allocator.allocations.isEmpty)
        #expect(allocator.freeBytes == 0x10000)
        #expect(allocator.freeRanges == [allocator.pool])
    }

    @Test("freeing something that is not exactly an allocation fails and changes nothing")
    func freeOfNonAllocation() throws {
        var allocator = try smallPool()
        let page = try allocator.allocate(at: 0x3000, size: 0x1000)
        #expect(throws: AllocatorError.notAllocated(0x5000, pool: "test pool")) {
            try allocator.free(try AddressRange(start: 0x5000, size: 0x1000))
        }
        // Right start, wrong size.
        #expect(throws: AllocatorError.notAllocated(0x3000, pool: "test pool")) {
            try allocator.free(try AddressRange(start: 0x3000, size: 0x800))
        }
        // An address inside the allocation is not its start.
        #expect(throws: AllocatorError.notAllocated(0x3800, pool: "test pool")) { try allocator.free(at: 0x3800) }
        #expect(throws: AllocatorError.notAllocated(0x0, pool: "test pool")) { try allocator.free(at: 0x0) }
        #expect(allocator.allocations == [page])
        try allocator.free(page)
        #expect(throws: AllocatorError.notAllocated(0x3000, pool: "test pool")) { try allocator.free(page) }
    }

    @Test("alignment must be a non-zero power of two", arguments: [0, 3, 6, 0x1001, UInt64.max] as [UInt64])
    func invalidAlignment(alignment: UInt64) throws {
        var allocator = try smallPool()
        #expect(throws: AllocatorError.invalidAlignment(alignment)) {
            try allocator.allocate(size: 0x10, alignment: alignment)
        }
    }

    @Test("a zero-byte allocation is rejected")
    func zeroSize() throws {
        var allocator = try smallPool()
        #expect(throws: AllocatorError.zeroSize) { try allocator.allocate(size: 0, alignment: 1) }
        #expect(throws: AllocatorError.zeroSize) { try allocator.allocate(size: 0, alignment: 0x1000, policy: .lastFit) }
        #expect(throws: AllocatorError.zeroSize) { try allocator.allocate(at: 0x1000, size: 0) }
    }

    @Test("a pool must be non-empty and may end at, but not pass, UInt64.max")
    func poolBounds() throws {
        #expect(throws: AllocatorError.invalidPool(name: "empty", base: 0x1000, size: 0)) {
            try AddressAllocator(name: "empty", base: 0x1000, size: 0)
        }
        #expect(throws: AllocatorError.invalidPool(name: "wrapping", base: 0x1000, size: UInt64.max)) {
            try AddressAllocator(name: "wrapping", base: 0x1000, size: UInt64.max)
        }
        let widest = try AddressAllocator(name: "everything", base: 1, size: UInt64.max)
        #expect(widest.pool.end == UInt64.max)
        #expect(widest.freeBytes == UInt64.max)
        let fromRange = AddressAllocator(name: "MMIO space", pool: try AddressRange(start: 0xd000_0000, size: 0x1000))
        #expect(fromRange.description == "MMIO space [0xd0000000-0xd0000fff]: 0 allocation(s), 0x1000 bytes free")
    }

    @Test("a pool ending at UInt64.max allocates up to its last byte")
    func poolEndingAtTop() throws {
        var allocator = try AddressAllocator(name: "top", base: UInt64.max - 0xffff, size: 0x10000)
        let top = try allocator.allocate(size: 0x1000, alignment: 0x1000, policy: .lastFit)
        #expect(top == (try AddressRange(start: 0xffff_ffff_ffff_f000, size: 0x1000)))
        #expect(top.end == UInt64.max)
        #expect(throws: AllocatorError.overlap(
            requested: try AddressRange(start: UInt64.max, size: 1), existing: top, pool: "top")
        ) {
            try allocator.allocate(at: UInt64.max, size: 1)
        }
        // Fill the rest first fit; the last page lands just below `top`.
        for _ in 0..<15 { _ = try allocator.allocate(size: 0x1000, alignment: 0x1000) }
        #expect(allocator.allocations.last == top)
        #expect(allocator.allocations[14].end == top.start - 1)
        #expect(allocator.freeBytes == 0)
        #expect(allocator.freeRanges.isEmpty)
        #expect(throws: AllocatorError.exhausted(size: 1, alignment: 1, pool: "top", poolRange: allocator.pool)) {
            try allocator.allocate(size: 1, alignment: 1)
        }
        try allocator.free(top)
        #expect(try allocator.allocate(at: UInt64.max, size: 1).end == UInt64.max)
        #expect(try allocator.allocate(size: 0xfff, alignment: 1).start == 0xffff_ffff_ffff_f000)
    }

    @Test("alignment rounding near UInt64.max reports exhaustion instead of trapping")
    func roundingNearTopDoesNotTrap() throws {
        var allocator = try AddressAllocator(name: "top", base: UInt64.max - 0xff, size: 0x100)
        for policy in [AllocationPolicy.firstFit, .lastFit] {
            for alignment: UInt64 in [0x1000, 1 << 32, 1 << 63] {
                #expect(throws: AllocatorError.exhausted(size: 0x10, alignment: alignment, pool: "top", poolRange: allocator.pool)) {
                    try allocator.allocate(size: 0x10, alignment: alignment, policy: policy)
                }
            }
        }
        #expect(throws: AllocatorError.exhausted(size: UInt64.max, alignment: 1, pool: "top", poolRange: allocator.pool)) {
            try allocator.allocate(size: UInt64.max, alignment: 1, policy: .lastFit)
        }
        #expect(try allocator.allocate(size: 0x100, alignment: 0x100).start == UInt64.max - 0xff)
    }

    @Test("fragmented free space is filled first fit, lowest hole first")
    func fragmentation() throws {
        var allocator = try smallPool()
        var pages: [AddressRange] = []
        for _ in 0..<8 { pages.append(try allocator.allocate(size: 0x1000, alignment: 0x1000)) }
        for index in [1, 3, 4, 6] { try allocator.free(pages[index]) }
        #expect(allocator.freeRanges == [
            try AddressRange(start: 0x2000, size: 0x1000),
            try AddressRange(start: 0x4000, size: 0x2000),
            try AddressRange(start: 0x7000, size: 0x1000),
            try AddressRange(start: 0x9000, size: 0x8000),
        ])
        #expect(try allocator.allocate(size: 0x2000, alignment: 0x1000).start == 0x4000)  // skips the 1-page hole
        #expect(try allocator.allocate(size: 0x800, alignment: 0x800).start == 0x2000)
        #expect(try allocator.allocate(size: 0x800, alignment: 0x800).start == 0x2800)
        #expect(try allocator.allocate(size: 0x1000, alignment: 0x1000).start == 0x7000)
        #expect(try allocator.allocate(size: 0x1000, alignment: 0x1000).start == 0x9000)
        #expect(allocator.freeBytes == 0x7000)
    }

    @Test("looking up the allocation that covers an address")
    func allocationContaining() throws {
        var allocator = try smallPool()
        let a = try allocator.allocate(at: 0x2000, size: 0x100)
        let b = try allocator.allocate(at: 0x2100, size: 0x100)
        #expect(allocator.allocation(containing: 0x2000) == a)
        #expect(allocator.allocation(containing: 0x20ff) == a)
        #expect(allocator.allocation(containing: 0x2100) == b)
        #expect(allocator.allocation(containing: 0x2200) == nil)
        #expect(allocator.allocation(containing: 0x1fff) == nil)
        #expect(allocator.allocation(containing: 0) == nil)
    }

    @Test("allocators are values: a copy evolves independently")
    func valueSemantics() throws {
        var original = try smallPool()
        _ = try original.allocate(size: 0x1000, alignment: 0x1000)
        var copy = original
        _ = try copy.allocate(size: 0x1000, alignment: 0x1000)
        #expect(original.allocations.count == 1)
        #expect(copy.allocations.count == 2)
        #expect(original.freeBytes == copy.freeBytes + 0x1000)
    }

    @Test("the README example behaves as documented")
    func readmeExample() throws {
        var mmio = try AddressAllocator(name: "MMIO space", base: 0xd000_0000, size: 0x2ec0_0000)
        let ioapic = try mmio.allocate(at: 0xfec0_0000 - 0x1000, size: 0x1000)
        let bar = try mmio.allocate(size: 0x4000, alignment: 0x4000)
        let top = try mmio.allocate(size: 0x10_0000, alignment: 0x10_0000, policy: .lastFit)
        #expect("\(bar) \(top)" == "[0xd0000000-0xd0003fff] [0xfea00000-0xfeafffff]")
        try mmio.free(bar)
        let error = #expect(throws: AllocatorError.self) { try mmio.allocate(at: ioapic.start, size: 0x10) }
        #expect(error?.description == "MMIO space: cannot allocate [0xfebff000-0xfebff00f]: "
            + "it overlaps the existing allocation [0xfebff000-0xfebfffff]")
    }
}
