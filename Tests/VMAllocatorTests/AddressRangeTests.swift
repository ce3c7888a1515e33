import Testing
import VMAllocator

@Suite("AddressRange")
struct AddressRangeTests {
    @Test("bounds, containment and the hexadecimal description")
    func boundsAndDescription() throws {
        let hole = try AddressRange(start: 0xd000_0000, size: 0x2ec0_0000)
        #expect(hole.end == 0xfebf_ffff)
        #expect(hole.description == "[0xd0000000-0xfebfffff]")
        #expect(hole.contains(0xd000_0000))
        #expect(hole.contains(0xfebf_ffff))
        #expect(!hole.contains(0xcfff_ffff))
        #expect(!hole.contains(0xfec0_0000))
        #expect(hole.contains(try AddressRange(start: 0xd000_1000, size: 0x1000)))
        #expect(!hole.contains(try AddressRange(start: 0xfebf_f000, size: 0x2000)))
    }

    @Test("a range may end exactly at UInt64.max but not pass it")
    func topOfAddressSpace() throws {
        let top = try AddressRange(start: UInt64.max - 0xfff, size: 0x1000)
        #expect(top.end == UInt64.max)
        #expect(top.contains(UInt64.max))
        #expect(top.description == "[0xfffffffffffff000-0xffffffffffffffff]")
        let lastByte = try AddressRange(start: UInt64.max, size: 1)
        #expect(lastByte.end == UInt64.max)
        #expect(throws: AllocatorError.rangeOverflow(start: UInt64.max - 0xfff, size: 0x1001)) {
            try AddressRange(start: UInt64.max - 0xfff, size: 0x1001)
        }
        #expect(throws: AllocatorError.rangeOverflow(start: 2, size: UInt64.max)) {
            try AddressRange(start: 2, size: UInt64.max)
        }
        #expect(throws: AllocatorError.zeroSize) { try AddressRange(start: 0x1000, size: 0) }
    }

    @Test("adjacent ranges do not overlap; shared bytes do")
    func overlaps() throws {
        let a = try AddressRange(start: 0x1000, size: 0x1000)
        let before = try AddressRange(start: 0x0, size: 0x1000)
        let after = try AddressRange(start: 0x2000, size: 0x1000)
        let straddling = try AddressRange(start: 0x1fff, size: 2)
        let covering = try AddressRange(start: 0x0, size: 0x10000)
        #expect(!a.overlaps(before) && !before.overlaps(a))
        #expect(!a.overlaps(after) && !after.overlaps(a))
        #expect(a.overlaps(straddling) && straddling.overlaps(after))
        #expect(a.overlaps(covering) && covering.overlaps(a))
        #expect(a.overlaps(a))
        #expect([after, a, before].sorted() == [before, a, after])
    }
}
