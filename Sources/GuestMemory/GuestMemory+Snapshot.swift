import CLinux
import HostSystem

// Guest RAM to and from a snapshot's memory file (Cloud Hypervisor's `memory-ranges`): the
// regions' bytes one after another, sparse, described by a `MemoryRangeTable`.
extension GuestMemory {
    /// The granularity of the zero-page check when saving: 4 KiB, the guest page size.
    public static let snapshotPageSize = 4096

    /// The most bytes written or read with one system call while saving or restoring.
    static let snapshotIOChunk = 8 << 20

    /// Writes every region's bytes into `file`, one region after another from offset 0, and
    /// returns the table that describes them (keep it beside the file, as Cloud Hypervisor
    /// keeps it in `state.json`).
    ///
    /// The file is sparse: it is first truncated to 0 and extended to the total size, then
    /// only the 4 KiB pages that hold a non-zero byte are written (runs of them with one
    /// `pwrite` each), so all-zero pages stay holes that occupy no disk space. Pause the
    /// vCPUs and devices first: pages the guest changes during the save may be torn. The
    /// file is not `fsync`ed.
    ///
    /// - Throws: `.snapshotIO` naming the call that failed.
    @discardableResult
    public func saveSnapshot(to file: OwnedFileDescriptor) throws(GuestMemoryError) -> MemoryRangeTable {
        let table = rangeTable
        let pageSize = Self.snapshotPageSize
        let zeroPage = UnsafeMutableRawPointer.allocate(byteCount: pageSize, alignment: pageSize)
        defer { zeroPage.deallocate() }
        // SAFETY: zeroPage was just allocated with pageSize bytes.
        _ = memset(zeroPage, 0, pageSize)
        do {
            try file.truncate(to: 0)
            try file.truncate(to: Int64(table.totalLength ?? 0))
            for (span, fileOffset) in zip(spans, table.fileOffsets) {
                var runStart = -1
                var offset = 0
                while offset < span.size {
                    let length = min(pageSize, span.size - offset)
                    // SAFETY: [offset, offset + length) lies inside the region's live mapping,
                    // and zeroPage holds pageSize >= length bytes.
                    let isZero = memcmp(span.host + offset, zeroPage, length) == 0
                    if isZero || offset - runStart >= Self.snapshotIOChunk, runStart >= 0 {
                        try writeRun(span, from: runStart, to: offset, fileOffset: fileOffset, file: file)
                        runStart = -1
                    }
                    if !isZero && runStart < 0 { runStart = offset }
                    offset += length
                }
                if runStart >= 0 { try writeRun(span, from: runStart, to: span.size, fileOffset: fileOffset, file: file) }
            }
        } catch {
            throw .snapshotIO(error)
        }
        return table
    }

    /// Writes bytes `[start, end)` of a region at their place in the memory file.
    private func writeRun(_ span: Span, from start: Int, to end: Int, fileOffset: UInt64, file: OwnedFileDescriptor) throws(SystemError) {
        // SAFETY: start < end <= span.size, inside the region's live mapping.
        let bytes = UnsafeRawBufferPointer(start: span.host + start, count: end - start)
        try file.writeFully(bytes, at: Int64(fileOffset) + Int64(start))
    }

    /// Reads a memory file written by `saveSnapshot(to:)` into guest memory, before the vCPUs
    /// run (Cloud Hypervisor's `memory_restore_mode=copy`).
    ///
    /// `table` must describe exactly this memory's regions and the file must be exactly as
    /// long as the table says. Only the file's data extents are read (found with
    /// `lseek(SEEK_DATA/SEEK_HOLE)`); the guest pages under holes are made zero without
    /// touching them where the mapping allows (`MADV_DONTNEED` for private anonymous memory,
    /// `MADV_REMOVE` for shared memory), so a mostly-empty guest restores quickly and stays
    /// small. With `prefault`, every page is then populated writable (`MADV_POPULATE_WRITE`),
    /// so the guest takes no page faults later.
    ///
    /// Nothing is marked dirty: dirty bits say what changed since the last copy was taken,
    /// and after a restore the memory equals the snapshot it came from; a later live
    /// migration starts with a full pass anyway.
    ///
    /// - Throws: `.snapshotMismatch` (missing, extra or different range, a file shorter or
    ///   longer than the table), `.readOnlyRegion` for a region that cannot be written,
    ///   `.snapshotIO` naming the call that failed.
    public func restoreSnapshot(from file: OwnedFileDescriptor, table: MemoryRangeTable, prefault: Bool = false) throws(GuestMemoryError) {
        try checkSnapshot(file: file, table: table)
        do {
            for (index, fileOffset) in table.fileOffsets.enumerated() {
                try restoreRegion(index, from: file, fileOffset: Int64(fileOffset))
            }
            if prefault {
                for region in regions { try Self.populateWritable(region.mapping) }
            }
        } catch {
            throw .snapshotIO(error)
        }
    }

    /// The checks both restore modes make before touching memory: the table matches the
    /// regions, the file has the table's size, and no region is read-only.
    func checkSnapshot(file: OwnedFileDescriptor, table: MemoryRangeTable) throws(GuestMemoryError) {
        try checkMatches(table)
        let fileSize: Int64
        do { fileSize = try file.size() } catch { throw .snapshotIO(error) }
        let total = table.totalLength ?? UInt64.max
        if fileSize < 0 || UInt64(fileSize) < total {
            throw .snapshotMismatch("the memory file holds \(fileSize) bytes but its table describes \(total) bytes of guest memory: "
                + "the file is shorter than the table says (truncated or from another snapshot)")
        }
        if UInt64(fileSize) > total {
            throw .snapshotMismatch("the memory file holds \(fileSize) bytes but its table describes only \(total) bytes of guest "
                + "memory: the file is longer than the table says (from another snapshot?)")
        }
        if let region = regions.first(where: \.isReadOnly) {
            throw .readOnlyRegion(address: region.start, length: Int(clamping: region.size))
        }
    }

    /// Reads one region's data extents and zeroes its holes.
    private func restoreRegion(_ index: Int, from file: OwnedFileDescriptor, fileOffset base: Int64) throws(SystemError) {
        let span = spans[index]
        let end = base + Int64(span.size)
        var position = base
        while position < end {
            let dataStart = min(try file.nextData(atOrAfter: position) ?? end, end)
            if dataStart > position {
                try zeroHostRange(index, offset: Int(position - base), length: Int(dataStart - position))
            }
            if dataStart >= end { break }
            let dataEnd = min(try file.nextHole(atOrAfter: dataStart), end)
            var offset = dataStart
            while offset < dataEnd {
                let count = Int(min(dataEnd - offset, Int64(Self.snapshotIOChunk)))
                // SAFETY: [offset - base, offset - base + count) lies inside the region's live,
                // writable mapping (base <= offset, offset + count <= end = base + size).
                let buffer = UnsafeMutableRawBufferPointer(start: span.host + Int(offset - base), count: count)
                let read = try file.readFully(into: buffer, at: offset)
                guard read == count else {
                    throw SystemError(call: "pread(memory file, \(count) bytes at \(offset)): the file ended early", errno: EIO)
                }
                offset += Int64(count)
            }
            position = dataEnd
        }
    }

    /// Makes `length` bytes of region `index` from `offset` read as zero, without allocating
    /// memory where the mapping allows it.
    func zeroHostRange(_ index: Int, offset: Int, length: Int) throws(SystemError) {
        let span = spans[index]
        let mapping = regions[index].mapping
        let page = MemoryMapping.pageSize
        let firstWhole = (offset + page - 1) / page * page
        let endWhole = (offset + length) / page * page
        let isPrivate = !mapping.options.contains(.shared) && !mapping.options.contains(.hugePages)
        let advice: Int32? = isPrivate ? (mapping.file == nil ? MADV_DONTNEED : nil) : MADV_REMOVE
        guard firstWhole < endWhole, let advice else {
            // SAFETY: [offset, offset + length) lies inside the region's live, writable mapping.
            _ = memset(span.host + offset, 0, length)
            return
        }
        // SAFETY: the unaligned edges lie inside [offset, offset + length), inside the mapping.
        _ = memset(span.host + offset, 0, firstWhole - offset)
        _ = memset(span.host + endWhole, 0, offset + length - endWhole)
        do {
            try mapping.advise(offset: firstWhole, length: endWhole - firstWhole, advice: advice)
        } catch where error.errno == EINVAL || error.errno == EOPNOTSUPP {
            // A mapping that cannot drop pages this way (a file system without hole punching).
            // SAFETY: [firstWhole, endWhole) lies inside the region's live, writable mapping.
            _ = memset(span.host + firstWhole, 0, endWhole - firstWhole)
        }
    }

    /// Populates every page of `mapping` writable (`MADV_POPULATE_WRITE`, Linux 5.14), or
    /// touches each page by hand on older kernels.
    static func populateWritable(_ mapping: MemoryMapping) throws(SystemError) {
        do {
            try mapping.advise(offset: 0, length: mapping.size, advice: MADV_POPULATE_WRITE)
        } catch where error.errno == EINVAL {
            let page = MemoryMapping.pageSize
            for offset in stride(from: 0, to: mapping.size, by: page) {
                // SAFETY: offset < mapping.size, inside the live, writable mapping; the byte is
                // written back unchanged while the vCPUs do not run.
                let byte = mapping.baseAddress.load(fromByteOffset: offset, as: UInt8.self)
                mapping.baseAddress.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self)
            }
        }
    }
}
