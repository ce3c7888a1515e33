// What a live migration sends: the pages that hold data (its first round) and the pages written
// since the last round (the dirty bitmaps), as Cloud Hypervisor's `MemoryRangeTable`s.
import CLinux

extension MemoryRangeTable {
    /// The runs of set bits of `bitmap` (bit `i` of word `i / 64` is page `i`) as ranges of
    /// `pageSize`-byte pages from `start`, adjacent pages merged, at most `pageCount` pages.
    public static func ranges(fromBitmap bitmap: [UInt64], start: UInt64, pageSize: UInt64, pageCount: Int) -> [MemoryRange] {
        var ranges: [MemoryRange] = []
        var runStart = -1
        for page in 0...pageCount {
            let set = page < pageCount && (bitmap.count > page / 64) && bitmap[page / 64] & (1 << UInt64(page % 64)) != 0
            if set, runStart < 0 { runStart = page }
            if !set, runStart >= 0 {
                ranges.append(MemoryRange(gpa: start + UInt64(runStart) * pageSize, length: UInt64(page - runStart) * pageSize))
                runStart = -1
            }
        }
        return ranges
    }

    /// The sum of the lengths (0 on overflow, which no real table reaches).
    public var byteCount: UInt64 { totalLength ?? 0 }
}

extension GuestMemory {
    /// The 4 KiB pages that hold a non-zero byte, merged into ranges: a migration's first
    /// round, since the destination's fresh memory reads as zeroes already.
    public func populatedRanges() -> MemoryRangeTable {
        let pageSize = Self.snapshotPageSize
        let zeroPage = UnsafeMutableRawPointer.allocate(byteCount: pageSize, alignment: pageSize)
        defer { zeroPage.deallocate() }
        // SAFETY: zeroPage was just allocated with pageSize bytes.
        _ = memset(zeroPage, 0, pageSize)
        var ranges: [MemoryRange] = []
        for (region, span) in zip(regions, spans) {
            var runStart = -1
            var offset = 0
            while offset <= span.size {
                var isData = false
                if offset < span.size {
                    // SAFETY: [offset, offset + pageSize) lies inside the region's live mapping
                    // (region sizes are multiples of the page size).
                    isData = memcmp(span.host + offset, zeroPage, min(pageSize, span.size - offset)) != 0
                }
                if isData, runStart < 0 { runStart = offset }
                if !isData, runStart >= 0 {
                    ranges.append(MemoryRange(gpa: region.start.rawValue + UInt64(runStart), length: UInt64(offset - runStart)))
                    runStart = -1
                }
                offset += pageSize
            }
        }
        return MemoryRangeTable(ranges)
    }

    /// The pages marked dirty in every region since the last call, merged into ranges, and
    /// the bitmaps cleared (a page written meanwhile is in this table or the next).
    public func takeDirtyRanges() -> MemoryRangeTable {
        var ranges: [MemoryRange] = []
        for region in regions {
            ranges += MemoryRangeTable.ranges(fromBitmap: region.takeDirtyBitmap(), start: region.start.rawValue,
                                              pageSize: GuestMemoryRegion.dirtyPageSize, pageCount: region.pageCount)
        }
        return MemoryRangeTable(ranges)
    }

    /// The host memory behind `range`, which must lie inside one region: where a migration
    /// reads a range to send and writes a range it received.
    ///
    /// - Throws: `.outOfRange`, `.crossesRegionBoundary`, `.invalidLength` for a range the
    ///   guest's memory does not hold.
    public func hostBuffer(for range: MemoryRange) throws(GuestMemoryError) -> UnsafeMutableRawBufferPointer {
        guard range.length <= UInt64(Int.max) else { throw .invalidLength(address: GuestAddress(range.gpa), length: Int.max) }
        let pointer = try hostAddress(for: GuestAddress(range.gpa), length: Int(range.length))
        return UnsafeMutableRawBufferPointer(start: pointer, count: Int(range.length))
    }
}
