import Testing
import HostSystem
@testable import GuestMemory

#if canImport(Glibc)
import Glibc
#endif

/// Regions at 0x0 (64 KiB) and 0x10000 (64 KiB, contiguous), then a gap, then 0x100000 (64 KiB).
func makeMemory(dirtyTracking: Bool = false) throws -> GuestMemory {
    try GuestMemory.anonymous(
        [(GuestAddress(0x10000), 0x10000), (GuestAddress(0), 0x10000), (GuestAddress(0x100000), 0x10000)],
        dirtyTracking: dirtyTracking)
}

@Suite("GuestAddress")
struct GuestAddressTests {
    @Test func descriptionIsHex() {
        #expect(GuestAddress(0x1000).description == "0x1000")
        #expect(GuestAddress.zero.description == "0x0")
        #expect(GuestAddress(UInt64.max).description == "0xffffffffffffffff")
    }

    @Test func checkedArithmeticCatchesOverflow() throws {
        #expect(GuestAddress(0x1000).checkedAdd(0x10) == GuestAddress(0x1010))
        #expect(GuestAddress(UInt64.max).checkedAdd(1) == nil)
        #expect(GuestAddress(UInt64.max - 1).checkedAdd(1) == GuestAddress(UInt64.max))
        #expect(throws: GuestMemoryError.addressOverflow(address: GuestAddress(UInt64.max - 3), length: 8)) {
            _ = try GuestAddress(UInt64.max - 3).adding(8)
        }
        #expect(try GuestAddress(1).adding(2) == GuestAddress(3))
        #expect(GuestAddress(5).checkedSubtract(6) == nil)
        #expect(GuestAddress(0x3000).offset(from: GuestAddress(0x1000)) == 0x2000)
        #expect(GuestAddress(0x1000).checkedOffset(from: GuestAddress(0x3000)) == nil)
    }

    @Test func alignment() {
        #expect(GuestAddress(0x2000).isAligned(to: 0x1000))
        #expect(!GuestAddress(0x2001).isAligned(to: 2))
        #expect(GuestAddress(0x2001).alignedUp(to: 0x1000) == GuestAddress(0x3000))
        #expect(GuestAddress(0x3000).alignedUp(to: 0x1000) == GuestAddress(0x3000))
        #expect(GuestAddress(0x2fff).alignedDown(to: 0x1000) == GuestAddress(0x2000))
        #expect(GuestAddress(UInt64.max).alignedUp(to: 0x1000) == nil)
    }

    @Test func ordersByValue() {
        #expect(GuestAddress(1) < GuestAddress(2))
        #expect([GuestAddress(9), GuestAddress(3)].sorted() == [GuestAddress(3), GuestAddress(9)])
    }
}

@Suite("Construction")
struct ConstructionTests {
    @Test func sortsRegionsAndReportsLayout() throws {
        let memory = try makeMemory()
        #expect(memory.regions.map(\.start) == [GuestAddress(0), GuestAddress(0x10000), GuestAddress(0x100000)])
        #expect(memory.totalSize == 0x30000)
        #expect(memory.lastAddress == GuestAddress(0x10ffff))
        #expect(memory.endAddress == GuestAddress(0x110000))
        #expect(memory.regions[1].end == GuestAddress(0x20000))
    }

    @Test func refusesOverlappingRegions() throws {
        #expect(throws: GuestMemoryError.overlappingRegions(GuestAddress(0x0), GuestAddress(0xf000))) {
            _ = try GuestMemory.anonymous([(GuestAddress(0xf000), 0x2000), (GuestAddress(0), 0x10000)])
        }
        let region = try GuestMemoryRegion(start: GuestAddress(0x4000), size: 0x1000)
        #expect(throws: GuestMemoryError.overlappingRegions(GuestAddress(0x4000), GuestAddress(0x4000))) {
            _ = try GuestMemory(regions: [region, region])
        }
    }

    @Test func refusesEmptyRegionAndEmptyList() {
        #expect(throws: GuestMemoryError.emptyRegion(GuestAddress(0x2000))) {
            _ = try GuestMemory.anonymous([(GuestAddress(0), 0x1000), (GuestAddress(0x2000), 0)])
        }
        #expect(throws: GuestMemoryError.noRegions) { _ = try GuestMemory(regions: []) }
        #expect(throws: GuestMemoryError.noRegions) { _ = try GuestMemory.anonymous([]) }
    }

    @Test func refusesRegionEndingPastTheAddressSpace() {
        #expect(throws: GuestMemoryError.addressOverflow(address: GuestAddress(UInt64.max - 0xfff), length: 0x1000)) {
            _ = try GuestMemoryRegion(start: GuestAddress(UInt64.max - 0xfff), size: 0x1000)
        }
    }

    @Test func mappingFailureKeepsTheSystemError() {
        // 2^62 bytes of address space cannot be reserved on any current host.
        do {
            _ = try GuestMemory.anonymous([(GuestAddress(0), 1 << 62)])
            Issue.record("mapping 2^62 bytes unexpectedly succeeded")
        } catch {
            guard case .mappingFailed(let cause) = error else {
                Issue.record("expected .mappingFailed, got \(error)")
                return
            }
            #expect(cause.call.contains("mmap"))
            #expect(error.description.contains("could not set up host memory"))
        }
    }
}

@Suite("Lookup")
struct LookupTests {
    @Test func regionContainingOnBoundaries() throws {
        let memory = try makeMemory()
        #expect(memory.region(containing: GuestAddress(0))?.start == GuestAddress(0))
        #expect(memory.region(containing: GuestAddress(0xffff))?.start == GuestAddress(0))
        #expect(memory.region(containing: GuestAddress(0x10000))?.start == GuestAddress(0x10000))
        #expect(memory.region(containing: GuestAddress(0x1ffff))?.start == GuestAddress(0x10000))
        #expect(memory.region(containing: GuestAddress(0x20000)) == nil)
        #expect(memory.region(containing: GuestAddress(0xfffff)) == nil)
        #expect(memory.region(containing: GuestAddress(0x100000))?.start == GuestAddress(0x100000))
        #expect(memory.region(containing: GuestAddress(0x10ffff))?.start == GuestAddress(0x100000))
        #expect(memory.region(containing: GuestAddress(0x110000)) == nil)
        #expect(memory.region(containing: GuestAddress(UInt64.max)) == nil)
        #expect(memory.regionIndex(containing: GuestAddress(0x100123)) == 2)
    }

    @Test func regionLookupBelowTheFirstRegion() throws {
        let memory = try GuestMemory.anonymous([(GuestAddress(0x4000), 0x1000)])
        #expect(memory.region(containing: GuestAddress(0x3fff)) == nil)
        #expect(!memory.isValidRange(GuestAddress(0x3fff), length: 2))
        #expect(memory.regions[0].contains(GuestAddress(0x4fff)))
        #expect(!memory.regions[0].contains(GuestAddress(0x5000)))
        #expect(memory.regions[0].offset(of: GuestAddress(0x4010)) == 0x10)
    }

    @Test func validRanges() throws {
        let memory = try makeMemory()
        #expect(memory.isValidRange(GuestAddress(0xfff0), length: 0x20))      // contiguous crossing
        #expect(!memory.isValidRange(GuestAddress(0x1fff0), length: 0x20))    // into the gap
        #expect(memory.isValidRange(GuestAddress(0x100000), length: 0x10000)) // whole last region
        #expect(!memory.isValidRange(GuestAddress(0x100000), length: 0x10001))
        #expect(!memory.isValidRange(GuestAddress(0), length: -1))
    }

    @Test func hostAddressLookups() throws {
        let memory = try makeMemory()
        let base = memory.regions[1].hostAddress
        #expect(try memory.hostAddress(for: GuestAddress(0x10000), length: 0x10000) == base)
        #expect(try memory.hostAddress(for: GuestAddress(0x10123), length: 4) == base + 0x123)
        #expect(memory.regions[1].hostAddress(for: GuestAddress(0x10010)) == base + 0x10)
        #expect(memory.regions[1].hostAddress(for: GuestAddress(0x20000)) == nil)
        #expect(throws: GuestMemoryError.crossesRegionBoundary(address: GuestAddress(0xfffc), length: 8)) {
            _ = try memory.hostAddress(for: GuestAddress(0xfffc), length: 8)
        }
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x20000), length: 1)) {
            _ = try memory.hostAddress(for: GuestAddress(0x20000), length: 1)
        }
        // Writing through the host pointer is visible to guest reads.
        try memory.hostAddress(for: GuestAddress(0x100010), length: 2).storeBytes(of: 0xbeef as UInt16, as: UInt16.self)
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x100010)) == 0xbeef)
    }

    @Test func hostBuffersSplitAtRegionBoundaries() throws {
        let memory = try makeMemory()
        let buffers = try memory.hostBuffers(for: GuestAddress(0xff00), length: 0x200)
        #expect(buffers.count == 2)
        #expect(buffers[0].baseAddress == memory.regions[0].hostAddress + 0xff00)
        #expect(buffers[0].count == 0x100)
        #expect(buffers[1].baseAddress == memory.regions[1].hostAddress)
        #expect(buffers[1].count == 0x100)
        #expect(try memory.hostBuffers(for: GuestAddress(0x20000), length: 0).isEmpty)
    }
}

@Suite("Reads and writes")
struct AccessTests {
    @Test func littleEndianRoundTripsOfEachWidth() throws {
        let memory = try makeMemory()
        try memory.write(UInt8(0xab), at: GuestAddress(0x100))
        try memory.write(UInt16(0x1234), at: GuestAddress(0x200))
        try memory.write(UInt32(0xdead_beef), at: GuestAddress(0x301))  // unaligned is fine here
        try memory.write(UInt64(0x0102_0304_0506_0708), at: GuestAddress(0x400))
        try memory.write(Int32(-2), at: GuestAddress(0x500))
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x100)) == 0xab)
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x200)) == 0x1234)
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x301)) == 0xdead_beef)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x400)) == 0x0102_0304_0506_0708)
        #expect(try memory.read(Int32.self, at: GuestAddress(0x500)) == -2)
        // Byte order in memory is little-endian.
        #expect(try memory.readBytes(count: 2, at: GuestAddress(0x200)) == [0x34, 0x12])
        #expect(try memory.readBytes(count: 8, at: GuestAddress(0x400)) == [8, 7, 6, 5, 4, 3, 2, 1])
    }

    @Test func crossBoundaryWriteAndReadAcrossContiguousRegions() throws {
        let memory = try makeMemory()
        let bytes = (0..<32).map { UInt8($0) }
        try memory.write(bytes: bytes, at: GuestAddress(0xfff0))
        #expect(try memory.readBytes(count: 32, at: GuestAddress(0xfff0)) == bytes)
        // Each half landed in its own mapping.
        #expect(memory.regions[0].hostAddress.load(fromByteOffset: 0xffff, as: UInt8.self) == 15)
        #expect(memory.regions[1].hostAddress.load(fromByteOffset: 0, as: UInt8.self) == 16)
        // An integer straddling the boundary.
        try memory.write(UInt64(0x1122_3344_5566_7788), at: GuestAddress(0xfffc))
        #expect(try memory.read(UInt64.self, at: GuestAddress(0xfffc)) == 0x1122_3344_5566_7788)
        var buffer = [UInt8](repeating: 0, count: 8)
        try buffer.withUnsafeMutableBytes { try memory.read(into: $0, at: GuestAddress(0xfffc)) }
        #expect(buffer == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
    }

    @Test func accessSpanningTheGapIsRefusedAndWritesNothing() throws {
        let memory = try makeMemory()
        let ones = [UInt8](repeating: 0xff, count: 0x20)
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x1fff0), length: 0x20)) {
            try memory.write(bytes: ones, at: GuestAddress(0x1fff0))
        }
        #expect(try memory.readBytes(count: 0x10, at: GuestAddress(0x1fff0)) == [UInt8](repeating: 0, count: 0x10))
        // A range that starts in region 0, crosses into region 1 and then runs into the gap.
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0xfff0), length: 0x10020)) {
            try memory.fill(0xee, count: 0x10020, at: GuestAddress(0xfff0))
        }
        #expect(try memory.read(UInt8.self, at: GuestAddress(0xfff0)) == 0)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x1ffff)) == 0)
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x1fffe), length: 4)) {
            try memory.write(UInt32(0xffff_ffff), at: GuestAddress(0x1fffe))
        }
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x1fffe)) == 0)
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x20000), length: 4)) {
            _ = try memory.read(UInt32.self, at: GuestAddress(0x20000))
        }
    }

    @Test func pastTheEndIsRefused() throws {
        let memory = try makeMemory()
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x10fffe), length: 4)) {
            _ = try memory.readBytes(count: 4, at: GuestAddress(0x10fffe))
        }
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x10fffc), length: 8)) {
            try memory.write(UInt64(1), at: GuestAddress(0x10fffc))
        }
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x10fffc)) == 0)
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x200000), length: 1)) {
            _ = try memory.read(UInt8.self, at: GuestAddress(0x200000))
        }
        // The very last byte is fine.
        try memory.write(UInt8(7), at: GuestAddress(0x10ffff))
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x10ffff)) == 7)
    }

    @Test func addressOverflowNearTheTopIsCaught() throws {
        let memory = try makeMemory()
        #expect(throws: GuestMemoryError.addressOverflow(address: GuestAddress(UInt64.max - 3), length: 8)) {
            _ = try memory.read(UInt64.self, at: GuestAddress(UInt64.max - 3))
        }
        #expect(throws: GuestMemoryError.addressOverflow(address: GuestAddress(UInt64.max), length: Int.max)) {
            try memory.fill(0, count: Int.max, at: GuestAddress(UInt64.max))
        }
        // Ranges whose last byte is UInt64.max do not overflow; they are simply not backed.
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(UInt64.max), length: 1)) {
            _ = try memory.read(UInt8.self, at: GuestAddress(UInt64.max))
        }
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(UInt64.max - 7), length: 8)) {
            _ = try memory.read(UInt64.self, at: GuestAddress(UInt64.max - 7))
        }
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(UInt64.max), length: 0)) {
            _ = try memory.readBytes(count: 0, at: GuestAddress(UInt64.max))
        }
        // A huge length from a small address: out of range, and nothing allocated for it.
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0), length: Int.max)) {
            _ = try memory.readBytes(count: Int.max, at: GuestAddress(0))
        }
    }

    @Test func regionAtTheTopOfTheAddressSpace() throws {
        // The region ends at UInt64.max (exclusive), so its last byte is UInt64.max - 1.
        let memory = try GuestMemory.anonymous([(GuestAddress(UInt64.max - 0xfff), 0xfff)])
        #expect(memory.lastAddress == GuestAddress(UInt64.max - 1))
        try memory.write(UInt64(0x0123_4567_89ab_cdef), at: GuestAddress(UInt64.max - 8))
        #expect(try memory.read(UInt64.self, at: GuestAddress(UInt64.max - 8)) == 0x0123_4567_89ab_cdef)
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(UInt64.max - 7), length: 8)) {
            try memory.write(UInt64(1), at: GuestAddress(UInt64.max - 7))
        }
        #expect(throws: GuestMemoryError.addressOverflow(address: GuestAddress(UInt64.max - 6), length: 8)) {
            try memory.write(UInt64(1), at: GuestAddress(UInt64.max - 6))
        }
        #expect(try memory.read(UInt8.self, at: GuestAddress(UInt64.max - 1)) == 0x01)
    }

    @Test func zeroLengthAccesses() throws {
        let memory = try makeMemory()
        #expect(try memory.readBytes(count: 0, at: GuestAddress(0x1234)).isEmpty)
        #expect(try memory.readBytes(count: 0, at: GuestAddress(0x20000)).isEmpty)   // end of a region
        #expect(try memory.readBytes(count: 0, at: GuestAddress(0x110000)).isEmpty)  // end of memory
        try memory.write(bytes: [UInt8](), at: GuestAddress(0x110000))
        try memory.fill(1, count: 0, at: GuestAddress(0x10000))
        try memory.read(into: UnsafeMutableRawBufferPointer(start: nil, count: 0), at: GuestAddress(0))
        #expect(try memory.hostAddress(for: GuestAddress(0x110000), length: 0) == memory.regions[2].hostAddress + 0x10000)
        // Inside a gap or beyond the end, even a zero-length access names a bad address.
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x30000), length: 0)) {
            _ = try memory.readBytes(count: 0, at: GuestAddress(0x30000))
        }
        #expect(!memory.isValidRange(GuestAddress(0x110001), length: 0))
    }

    @Test func negativeLengthIsRefused() throws {
        let memory = try makeMemory()
        #expect(throws: GuestMemoryError.invalidLength(address: GuestAddress(0x10), length: -1)) {
            _ = try memory.readBytes(count: -1, at: GuestAddress(0x10))
        }
        #expect(throws: GuestMemoryError.invalidLength(address: GuestAddress(0x10), length: -5)) {
            try memory.fill(0, count: -5, at: GuestAddress(0x10))
        }
    }

    @Test func fillAndCopy() throws {
        let memory = try makeMemory()
        try memory.fill(0x5a, count: 0x20, at: GuestAddress(0xfff0))
        #expect(try memory.readBytes(count: 0x22, at: GuestAddress(0xffef)) == [0] + [UInt8](repeating: 0x5a, count: 0x20) + [0])
        try memory.copy(from: GuestAddress(0xfff0), to: GuestAddress(0x100000), count: 0x20)
        #expect(try memory.readBytes(count: 0x20, at: GuestAddress(0x100000)) == [UInt8](repeating: 0x5a, count: 0x20))
        // Overlapping copy within guest memory behaves like memmove.
        try memory.write(bytes: [1, 2, 3, 4, 5] as [UInt8], at: GuestAddress(0x500))
        try memory.copy(from: GuestAddress(0x500), to: GuestAddress(0x502), count: 5)
        #expect(try memory.readBytes(count: 7, at: GuestAddress(0x500)) == [1, 2, 1, 2, 3, 4, 5])
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x10fff0), length: 0x20)) {
            try memory.copy(from: GuestAddress(0), to: GuestAddress(0x10fff0), count: 0x20)
        }
    }

    @Test func nonContiguousCollectionsAreWritten() throws {
        let memory = try makeMemory()
        try memory.write(bytes: (1...6).lazy.map { UInt8($0 * 2) }, at: GuestAddress(0x700))
        try memory.write(bytes: [9, 8, 7, 6][1...], at: GuestAddress(0x800))
        #expect(try memory.readBytes(count: 6, at: GuestAddress(0x700)) == [2, 4, 6, 8, 10, 12])
        #expect(try memory.readBytes(count: 3, at: GuestAddress(0x800)) == [8, 7, 6])
    }

    @Test func readOnlyRegionRefusesWrites() throws {
        let ram = try GuestMemoryRegion(start: GuestAddress(0), size: 0x1000)
        let rom = try GuestMemoryRegion(start: GuestAddress(0x1000), size: 0x1000, options: [.readOnly])
        let memory = try GuestMemory(regions: [rom, ram])
        #expect(rom.isReadOnly)
        #expect(throws: GuestMemoryError.readOnlyRegion(address: GuestAddress(0xffe), length: 4)) {
            try memory.write(UInt32(0xffff_ffff), at: GuestAddress(0xffe))
        }
        #expect(try memory.read(UInt16.self, at: GuestAddress(0xffe)) == 0)  // nothing written in RAM either
        #expect(throws: GuestMemoryError.readOnlyRegion(address: GuestAddress(0x1000), length: 2)) {
            try memory.storeRelease(UInt16(1), at: GuestAddress(0x1000))
        }
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x1000)) == 0)
    }
}

@Suite("Acquire and release")
struct AtomicTests {
    @Test func roundTripsOfEachWidth() throws {
        let memory = try makeMemory()
        try memory.storeRelease(UInt8(0x7f), at: GuestAddress(0x1001))
        try memory.storeRelease(UInt16(0xa1b2), at: GuestAddress(0x1002))
        try memory.storeRelease(UInt32(0xc3d4_e5f6), at: GuestAddress(0x1004))
        try memory.storeRelease(UInt64(0x0011_2233_4455_6677), at: GuestAddress(0x1008))
        #expect(try memory.loadAcquire(UInt8.self, at: GuestAddress(0x1001)) == 0x7f)
        #expect(try memory.loadAcquire(UInt16.self, at: GuestAddress(0x1002)) == 0xa1b2)
        #expect(try memory.loadAcquire(UInt32.self, at: GuestAddress(0x1004)) == 0xc3d4_e5f6)
        #expect(try memory.loadAcquire(UInt64.self, at: GuestAddress(0x1008)) == 0x0011_2233_4455_6677)
        // The same little-endian bytes as plain accesses.
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x1002)) == 0xa1b2)
        #expect(try memory.readBytes(count: 2, at: GuestAddress(0x1002)) == [0xb2, 0xa1])
    }

    @Test func misalignedAccessesAreRefused() throws {
        let memory = try makeMemory()
        #expect(throws: GuestMemoryError.misaligned(address: GuestAddress(0x1001), alignment: 2)) {
            _ = try memory.loadAcquire(UInt16.self, at: GuestAddress(0x1001))
        }
        #expect(throws: GuestMemoryError.misaligned(address: GuestAddress(0x1002), alignment: 4)) {
            try memory.storeRelease(UInt32(1), at: GuestAddress(0x1002))
        }
        #expect(throws: GuestMemoryError.misaligned(address: GuestAddress(0x1004), alignment: 8)) {
            _ = try memory.loadAcquire(UInt64.self, at: GuestAddress(0x1004))
        }
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x1000)) == 0)
    }

    @Test func hostMisalignmentFromAnOddRegionStartIsRefused() throws {
        // Guest 0x20004 is 4-aligned, but this region starts at an odd guest address, so the
        // host address behind it is not.
        let memory = try GuestMemory.anonymous([(GuestAddress(0x20001), 0x1000)])
        #expect(throws: GuestMemoryError.misaligned(address: GuestAddress(0x20004), alignment: 4)) {
            _ = try memory.loadAcquire(UInt32.self, at: GuestAddress(0x20004))
        }
        #expect(try memory.loadAcquire(UInt8.self, at: GuestAddress(0x20004)) == 0)
    }

    @Test func outOfRangeAndCrossRegionAtomicsAreRefused() throws {
        let memory = try makeMemory()
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x20000), length: 2)) {
            _ = try memory.loadAcquire(UInt16.self, at: GuestAddress(0x20000))
        }
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x110000), length: 8)) {
            try memory.storeRelease(UInt64(1), at: GuestAddress(0x110000))
        }
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(UInt64.max - 7), length: 8)) {
            _ = try memory.loadAcquire(UInt64.self, at: GuestAddress(UInt64.max - 7))
        }
        // Contiguous regions whose boundary is not 8-aligned: backed, but by two regions.
        let split = try GuestMemory.anonymous([(GuestAddress(0), 0x1004), (GuestAddress(0x1004), 0x1000)])
        #expect(throws: GuestMemoryError.crossesRegionBoundary(address: GuestAddress(0x1000), length: 8)) {
            try split.storeRelease(UInt64(1), at: GuestAddress(0x1000))
        }
        #expect(try split.read(UInt64.self, at: GuestAddress(0x1000)) == 0)
    }
}

@Suite("Dirty tracking")
struct DirtyTrackingTests {
    @Test func writesMarkExactlyTheTouchedPages() throws {
        let memory = try makeMemory(dirtyTracking: true)
        try memory.write(UInt8(1), at: GuestAddress(0x1fff))                  // region 0, page 1
        try memory.write(bytes: [UInt8](repeating: 1, count: 0x1002), at: GuestAddress(0x2fff)) // pages 2, 3, 4
        try memory.write(UInt32(1), at: GuestAddress(0xfffe))                 // region 0 page 15 + region 1 page 0
        try memory.fill(3, count: 1, at: GuestAddress(0x105000))              // region 2, page 5
        try memory.storeRelease(UInt16(9), at: GuestAddress(0x1a000))         // region 1, page 10
        let r0 = memory.regions[0], r1 = memory.regions[1], r2 = memory.regions[2]
        #expect((0..<r0.pageCount).filter { r0.isDirty(page: $0) } == [1, 2, 3, 4, 15])
        #expect((0..<r1.pageCount).filter { r1.isDirty(page: $0) } == [0, 10])
        #expect((0..<r2.pageCount).filter { r2.isDirty(page: $0) } == [5])
        #expect(memory.dirtyPageCount == 8)
        // Reads and refused writes mark nothing.
        _ = try memory.readBytes(count: 0x100, at: GuestAddress(0x8000))
        #expect(throws: GuestMemoryError.self) { try memory.write(UInt64(1), at: GuestAddress(0x1fffc)) }
        #expect(memory.dirtyPageCount == 8)
    }

    @Test("an integer written inside one region across a page boundary marks both pages; an unaligned one reads back")
    func integerAcrossAPageInsideARegion() throws {
        let memory = try makeMemory(dirtyTracking: true)
        try memory.write(UInt64(0x0102_0304_0506_0708), at: GuestAddress(0x6ffd))  // region 0, pages 6 and 7
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x6ffd)) == 0x0102_0304_0506_0708)
        #expect(try memory.readBytes(count: 8, at: GuestAddress(0x6ffd)) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x6fff)) == 0x0304_0506)
        let r0 = memory.regions[0]
        #expect((0..<r0.pageCount).filter { r0.isDirty(page: $0) } == [6, 7])
        // The last bytes of the last region: in range; one byte further: refused, nothing written.
        try memory.write(UInt16(0xBEEF), at: GuestAddress(0x10fffe))
        #expect(try memory.read(UInt16.self, at: GuestAddress(0x10fffe)) == 0xBEEF)
        #expect(throws: GuestMemoryError.self) { try memory.write(UInt16(1), at: GuestAddress(0x10ffff)) }
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x10ffff)) == 0xBE)
    }

    @Test func trackingOffMarksNothingUntilEnabled() throws {
        let memory = try makeMemory()
        #expect(!memory.dirtyTracking)
        try memory.write(UInt64(1), at: GuestAddress(0x3000))
        #expect(memory.dirtyPageCount == 0)
        memory.enableDirtyTracking()
        try memory.write(UInt64(1), at: GuestAddress(0x3000))
        memory.markDirty(GuestAddress(0x107ff0), length: 0x20)  // a write made through a host pointer
        #expect(memory.regions[0].isDirty(page: 3))
        #expect(memory.regions[2].isDirty(page: 7) && memory.regions[2].isDirty(page: 8))
        #expect(memory.dirtyPageCount == 3)
        memory.disableDirtyTracking()
        try memory.write(UInt64(1), at: GuestAddress(0x9000))
        #expect(memory.dirtyPageCount == 3)
    }

    @Test func takeDirtyBitmapReturnsAndClears() throws {
        let memory = try makeMemory(dirtyTracking: true)
        try memory.write(UInt8(1), at: GuestAddress(0x0))
        try memory.write(UInt8(1), at: GuestAddress(0x5000))
        let region = memory.regions[0]
        #expect(region.dirtyBitmapWordCount == 1)
        #expect(region.takeDirtyBitmap() == [0b10_0001])
        #expect(region.takeDirtyBitmap() == [0])
        #expect(region.dirtyPageCount == 0)
        try memory.write(UInt8(1), at: GuestAddress(0x10000))
        #expect(memory.takeDirtyBitmaps() == [[0], [1], [0]])
        #expect(memory.dirtyPageCount == 0)
    }

    @Test func mergeDirtyOrsAndIgnoresBitsPastTheRegion() throws {
        // 0x43000 bytes = 67 pages: two bitmap words, the second with three valid bits.
        let region = try GuestMemoryRegion(start: GuestAddress(0x100000), size: 0x43000)
        #expect(region.pageCount == 67)
        #expect(region.dirtyBitmapWordCount == 2)
        region.markDirty(offset: 0x1000, length: 1)
        region.mergeDirty(bitmap: [0b1001, ~0, 0xff])
        #expect(region.dirtyBitmap() == [0b1011, 0b111])
        #expect(region.dirtyPageCount == 6)
        #expect(!region.isDirty(page: 67) && !region.isDirty(page: -1))
        region.clearDirty()
        #expect(region.dirtyPageCount == 0)
    }

    @Test func markDirtyClampsAndSpansWords() throws {
        let region = try GuestMemoryRegion(start: GuestAddress(0), size: 0x100000)  // 256 pages, 4 words
        region.markDirty(offset: 0x3f000, length: 0x42000)  // pages 63...128
        #expect(region.dirtyBitmap() == [1 << 63, ~0, 1, 0])
        region.markDirty(offset: 0xff800, length: UInt64.max)  // clamped to the last page
        region.markDirty(offset: 0x200000, length: 0x1000)     // outside: ignored
        region.markDirty(offset: 0x5000, length: 0)            // empty: ignored
        #expect(region.dirtyBitmap() == [1 << 63, ~0, 1, 1 << 63])
    }

    @Test func concurrentMarkingLosesNoPages() async throws {
        let memory = try GuestMemory.anonymous([(GuestAddress(0), 0x400000)], dirtyTracking: true)  // 1024 pages
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    for page in stride(from: worker, to: 1024, by: 4) {
                        try? memory.write(UInt8(1), at: GuestAddress(UInt64(page) * 0x1000 + 8))
                    }
                }
            }
        }
        #expect(memory.dirtyPageCount == 1024)
        #expect(memory.regions[0].takeDirtyBitmap().allSatisfy { $0 == ~0 })
    }
}

@Suite("File-backed memory")
struct FileBackedTests {
    @Test func sharedFileMappingSeesGuestWrites() throws {
        let path = "/tmp/guest-memory-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let file = try OwnedFileDescriptor(path: path, flags: O_RDWR | O_CREAT | O_EXCL)
        defer { unlink(path) }
        try file.truncate(to: 0x10000)
        let mapping = try MemoryMapping(file: file, size: 0x10000, options: [.shared])
        let memory = try GuestMemory(regions: [GuestMemoryRegion(start: GuestAddress(0x80000000), mapping: mapping)])
        try memory.write(bytes: Array("hello, guest".utf8), at: GuestAddress(0x80001000))
        try memory.write(UInt32(0xcafe_f00d), at: GuestAddress(0x8000fffc))
        var head = [UInt8](repeating: 0, count: 12)
        let n = try head.withUnsafeMutableBytes { try file.read(into: $0, at: 0x1000) }
        #expect(n == 12)
        #expect(String(decoding: head, as: UTF8.self) == "hello, guest")
        var tail = [UInt8](repeating: 0, count: 4)
        _ = try tail.withUnsafeMutableBytes { try file.read(into: $0, at: 0xfffc) }
        #expect(tail == [0x0d, 0xf0, 0xfe, 0xca])
    }
}

@Suite("Error descriptions")
struct ErrorDescriptionTests {
    @Test func everyCaseNamesItsAddressesInHex() {
        let cases: [(GuestMemoryError, [String])] = [
            (.outOfRange(address: GuestAddress(0x1fff0), length: 0x20), ["[0x1fff0, 0x20010)", "32 bytes"]),
            (.outOfRange(address: GuestAddress(0x30000), length: 0), ["0x30000"]),
            (.addressOverflow(address: GuestAddress(UInt64.max - 3), length: 8), ["0xfffffffffffffffc", "overflows"]),
            (.overlappingRegions(GuestAddress(0), GuestAddress(0xf000)), ["0x0", "0xf000", "overlap"]),
            (.emptyRegion(GuestAddress(0x2000)), ["0x2000", "size 0"]),
            (.misaligned(address: GuestAddress(0x1001), alignment: 2), ["0x1001", "2 bytes"]),
            (.crossesRegionBoundary(address: GuestAddress(0xfffc), length: 8), ["[0xfffc, 0x10004)"]),
            (.readOnlyRegion(address: GuestAddress(0x1000), length: 2), ["[0x1000, 0x1002)", "read-only"]),
            (.invalidLength(address: GuestAddress(0x10), length: -1), ["0x10", "-1"]),
            (.mappingFailed(SystemError(call: "mmap(4096 bytes)", errno: ENOMEM)), ["mmap(4096 bytes)", "errno"]),
            (.noRegions, ["at least one region"]),
        ]
        for (error, fragments) in cases {
            for fragment in fragments {
                #expect(error.description.contains(fragment), "\(error.description) lacks \(fragment)")
            }
        }
        // The end of a range at the very top is printed without overflowing.
        #expect(GuestMemoryError.outOfRange(address: GuestAddress(UInt64.max), length: 1).description
            .contains("0x10000000000000000"))
    }
}

@Suite("Hot-added regions")
struct AppendTests {
    @Test func appendedRegionIsReachableThroughTheSameObject() throws {
        let memory = try GuestMemory.anonymous([(GuestAddress(0), 0x10000)], spareRegions: 2)
        #expect(memory.spareRegions == 2)
        #expect(throws: GuestMemoryError.outOfRange(address: GuestAddress(0x100000), length: 4)) {
            try memory.write(UInt32(0xdead_beef), at: GuestAddress(0x100000))
        }
        try memory.append(try GuestMemoryRegion(start: GuestAddress(0x100000), size: 0x10000))
        try memory.write(UInt32(0xdead_beef), at: GuestAddress(0x100000))
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x100000)) == 0xdead_beef)
        #expect(memory.regions.map(\.start) == [GuestAddress(0), GuestAddress(0x100000)])
        #expect(memory.totalSize == 0x20000 && memory.lastAddress == GuestAddress(0x10ffff))
        #expect(memory.spareRegions == 1)
        // A contiguous appended region joins the previous one for spanning accesses.
        try memory.append(try GuestMemoryRegion(start: GuestAddress(0x110000), size: 0x1000))
        try memory.write(bytes: [1, 2, 3, 4], at: GuestAddress(0x10fffe))
        #expect(try memory.readBytes(count: 4, at: GuestAddress(0x10fffe)) == [1, 2, 3, 4])
    }

    @Test func refusesARegionBelowTheLastOrBeyondTheRoom() throws {
        let memory = try GuestMemory.anonymous([(GuestAddress(0x10000), 0x10000)], spareRegions: 1)
        #expect(throws: GuestMemoryError.overlappingRegions(GuestAddress(0x10000), GuestAddress(0))) {
            try memory.append(try GuestMemoryRegion(start: GuestAddress(0), size: 0x1000))
        }
        try memory.append(try GuestMemoryRegion(start: GuestAddress(0x20000), size: 0x1000))
        #expect(throws: GuestMemoryError.noSpareRegion(GuestAddress(0x30000), capacity: 2)) {
            try memory.append(try GuestMemoryRegion(start: GuestAddress(0x30000), size: 0x1000))
        }
        let fixed = try makeMemory()
        #expect(fixed.spareRegions == 0)
        #expect(throws: GuestMemoryError.noSpareRegion(GuestAddress(0x200000), capacity: 3)) {
            try fixed.append(try GuestMemoryRegion(start: GuestAddress(0x200000), size: 0x1000))
        }
    }

    @Test func dirtyTrackingCoversAppendedRegions() throws {
        let memory = try GuestMemory.anonymous([(GuestAddress(0), 0x10000)], dirtyTracking: true, spareRegions: 1)
        try memory.append(try GuestMemoryRegion(start: GuestAddress(0x100000), size: 0x10000))
        try memory.write(UInt8(7), at: GuestAddress(0x101000))
        #expect(memory.takeDirtyBitmaps() == [[0], [0b10]])
    }
}
