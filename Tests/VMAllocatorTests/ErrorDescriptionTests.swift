import Testing
import VMAllocator

@Suite("AllocatorError descriptions")
struct ErrorDescriptionTests {
    @Test("every case reads as a sentence with hexadecimal addresses and the pool name")
    func descriptions() throws {
        let hole = try AddressRange(start: 0xd000_0000, size: 0x2ec0_0000)
        let existing = try AddressRange(start: 0xd000_0000, size: 0x1000)
        let requested = try AddressRange(start: 0xd000_0800, size: 0x1000)
        let cases: [(AllocatorError, String)] = [
            (.exhausted(size: 0x1000, alignment: 0x1000, pool: "MMIO space", poolRange: hole),
             "MMIO space: cannot allocate 0x1000 bytes aligned to 0x1000: no free range left in [0xd0000000-0xfebfffff]"),
            (.overlap(requested: requested, existing: existing, pool: "MMIO space"),
             "MMIO space: cannot allocate [0xd0000800-0xd00017ff]: it overlaps the existing allocation [0xd0000000-0xd0000fff]"),
            (.outOfPool(requested: existing, pool: try AddressRange(start: 0, size: 0x10000), poolName: "PIO space"),
             "PIO space: cannot allocate [0xd0000000-0xd0000fff]: it is not inside the pool [0x0-0xffff]"),
            (.invalidAlignment(3), "invalid alignment 0x3: an alignment must be a non-zero power of two"),
            (.zeroSize, "invalid size 0: an address range must be at least 1 byte long"),
            (.rangeOverflow(start: 0xffff_ffff_ffff_f000, size: 0x2000),
             "a range of 0x2000 bytes starting at 0xfffffffffffff000 would run past the top of the 64-bit address space (0xffffffffffffffff)"),
            (.notAllocated(0xd000_0000, pool: "MMIO space"),
             "MMIO space: cannot free the range at 0xd0000000: it does not match any allocation (both start and size must match)"),
            (.invalidPool(name: "RAM", base: 0x1000, size: 0), "RAM: invalid pool at 0x1000: a pool must hold at least 1 byte"),
            (.invalidPool(name: "RAM", base: 0x1000, size: UInt64.max),
             "RAM: invalid pool of 0xffffffffffffffff bytes at 0x1000: it would run past the top of the 64-bit address space (0xffffffffffffffff)"),
            (.idsExhausted(pool: "legacy IRQs", range: 0...23), "legacy IRQs: cannot allocate an id: all 24 ids in 0...23 are in use"),
            (.idOutOfRange(24, pool: "legacy IRQs", range: 0...23), "legacy IRQs: id 24 is outside the managed range 0...23"),
            (.alreadyAllocated(4, pool: "legacy IRQs"), "legacy IRQs: cannot allocate id 4: it is already in use"),
            (.idNotAllocated(7, pool: "PCI slots"), "PCI slots: cannot free id 7: it is not allocated"),
        ]
        for (error, expected) in cases {
            #expect(error.description == expected)
            #expect("\(error)" == expected)
        }
    }

    @Test("errors thrown by an allocator carry its own name and bounds")
    func thrownErrorNamesPool() throws {
        var mmio = try AddressAllocator(name: "MMIO space", base: 0xd000_0000, size: 0x2ec0_0000)
        _ = try mmio.allocate(size: 0x2ec0_0000, alignment: 1)
        let error = #expect(throws: AllocatorError.self) { try mmio.allocate(size: 0x1000, alignment: 0x1000) }
        #expect(error?.description
            == "MMIO space: cannot allocate 0x1000 bytes aligned to 0x1000: no free range left in [0xd0000000-0xfebfffff]")
    }
}
