import BlockStorage

/// What a guest cluster maps to, decoded from its L2 entry.
enum ClusterMapping: Equatable {
    /// No data here: the backing file's bytes, or zeroes without one.
    case unallocated
    /// Reads as zeroes (version 3 zero flag); `preallocated` is a host cluster kept for it.
    case zero(preallocated: UInt64?, copied: Bool)
    /// A host cluster; `copied` says its refcount is exactly one (writable in place).
    case data(UInt64, copied: Bool)
    /// Deflate data at `offset` in `sectors` 512-byte sectors (the first one partly).
    case compressed(offset: UInt64, sectors: UInt64)
}

/// The qcow2 engine behind ``QcowImage``: tables, caches, the mapping from guest to host
/// clusters, and the ordering of metadata writes. Not thread-safe: the image's mutex
/// serialises every call.
///
/// Crash safety: guest data is written to its (new) cluster first; refcount increments are
/// written and synced before any L2 entry that uses them; L2 tables are written and synced
/// before the L1 entries that point to new ones; clusters that stop being referenced are
/// freed (refcount decremented) only after the L2 tables that dropped them are synced. A kill
/// at any point therefore leaves at worst leaked clusters. Lazy refcounts are never used, so
/// the dirty bit is never set.
final class QcowEngine {
    static let copiedFlag: UInt64 = 1 << 63
    static let compressedFlag: UInt64 = 1 << 62
    static let zeroFlag: UInt64 = 1
    static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    static let l1ReservedMask: UInt64 = 0x7F00_0000_0000_01FF
    static let l2ReservedMask: UInt64 = 0x3F00_0000_0000_01FE
    /// Pending frees kept before a metadata flush applies them.
    static let maxPendingFrees = 4096

    let path: String
    let file: ImageFile
    private(set) var header: QcowHeader
    let clusterBits: UInt64
    let clusterSize: Int
    /// log2 of the entries per L2 table.
    let l2Bits: UInt64
    let isReadOnly: Bool
    /// Version 3 images have the zero flag.
    let hasZeroFlag: Bool
    /// The disk below this image, read where clusters are unallocated.
    let backing: (any BlockBackend)?

    private(set) var virtualSize: UInt64
    var l1: [UInt64]
    private(set) var l1Offset: UInt64
    private(set) var l1Clusters: UInt64
    var dirtyL1: Set<Int> = []
    let l2Cache: TableCache<L2Table>
    /// Refcounts (loaded for writable images and for checks).
    private(set) var refcounts: RefcountStore?
    /// Host ranges to dereference once the L2 tables that dropped them are durable.
    var pendingFrees: [(offset: UInt64, length: UInt64)] = []
    /// Requests whose extents are on an io_uring (``QcowImage/mapRead(into:at:)``): while
    /// any is, ``pendingFrees`` stay pending, so no cluster they read or write is reused.
    var asyncInFlight = 0

    // Compressed-cluster scratch: the last cluster inflated, by its L2 entry.
    private var inflater: Inflater?
    var inflated: [UInt8] = []
    var inflatedEntry: UInt64?

    /// Opens the image file and its tables; `openBacking` opens the backing file the header names.
    init(path: String, readOnly: Bool, direct: Bool, lock: ImageLock,
         openBacking: (QcowHeader) throws(BlockError) -> (any BlockBackend)?) throws(BlockError) {
        self.path = path
        file = try ImageFile(path: path, readOnly: readOnly, direct: direct, lock: lock)
        let fileLength = try file.length()
        let prefix = try file.readBytes(count: Int(min(fileLength, 4096)), at: 0).bytes
        let needed = QcowHeader.bytesNeeded(prefix: prefix, fileLength: fileLength)
        let first = needed > prefix.count ? try file.readBytes(count: needed, at: 0).bytes : prefix
        header = try QcowHeader.parse(first, fileLength: fileLength)
        clusterBits = UInt64(header.clusterBits)
        clusterSize = header.clusterSize
        l2Bits = clusterBits - 3
        isReadOnly = readOnly
        hasZeroFlag = header.version >= 3
        virtualSize = header.size
        if !readOnly {
            if header.incompatibleFeatures & QcowHeader.dirtyBit != 0 {
                throw .unsupported("open \(path) for writing: its dirty bit is set (it was left open with lazy refcounts, so its refcounts may be stale); repair it with qemu-img check -r all, or open it read-only")
            }
            if header.incompatibleFeatures & QcowHeader.corruptBit != 0 {
                throw .corrupt("\(path) is marked corrupt (incompatible feature bit 1); repair it with qemu-img check -r all before writing, or open it read-only")
            }
            if header.snapshotCount > 0 {
                throw .unsupported("write to \(path): it has \(header.snapshotCount) internal snapshot(s); open it read-only")
            }
        }
        l1Offset = header.l1TableOffset
        l1Clusters = divideRoundingUp(UInt64(header.l1Size) * 8, UInt64(clusterSize))
        let l1Bytes = try file.readBytes(count: Int(header.l1Size) * 8, at: header.l1TableOffset).bytes
        l1 = decodeTable(l1Bytes, count: Int(header.l1Size))
        l2Cache = TableCache(capacity: min(max((32 << 20) / clusterSize, 16), 2048))
        backing = try openBacking(header)
        if !readOnly {
            let store = try RefcountStore(file: file, header: header, fileLength: fileLength,
                                          cacheBlocks: min(max((4 << 20) / clusterSize, 8), 1024))
            refcounts = store
            store.isMetadata = { [unowned self] cluster in isMetadata(cluster) }
            if header.version >= 3 && header.autoclearFeatures != 0 {
                // Bitmaps and other auto-clear data are not kept up to date by this engine.
                try file.writeBytes([UInt8](repeating: 0, count: 8), at: 88)
                try file.sync()
                header.autoclearFeatures = 0
            }
        }
    }

    /// Loads the refcounts for a check of a read-only image.
    func loadRefcounts() throws(BlockError) -> RefcountStore {
        if let refcounts { return refcounts }
        return try RefcountStore(file: file, header: header, fileLength: try file.length(), cacheBlocks: 64)
    }

    // MARK: - Tables

    /// The guest bytes one L2 table covers.
    var l2Coverage: UInt64 { UInt64(clusterSize) << l2Bits }

    /// The L2 table of L1 entry `index`, or nil when that range is unallocated.
    func l2Table(_ index: Int) throws(BlockError) -> L2Table? {
        guard index < l1.count else { return nil }
        let entry = l1[index]
        guard entry & Self.l1ReservedMask == 0 else {
            throw .corrupt("L1 entry \(index) (0x\(String(entry, radix: 16))) has reserved bits set")
        }
        let offset = entry & Self.offsetMask
        if offset == 0 { return nil }
        guard offset & UInt64(clusterSize - 1) == 0 else {
            throw .corrupt("L1 entry \(index) points to offset \(offset), which is not aligned to a cluster")
        }
        if let table = l2Cache.get(offset) { return table }
        let (bytes, valid) = try file.readBytes(count: clusterSize, at: offset)
        guard valid == clusterSize else {
            throw .corrupt("the L2 table of L1 entry \(index) at offset \(offset) reaches past the end of the file")
        }
        let table = L2Table(offset: offset, entries: decodeTable(bytes, count: clusterSize / 8))
        try insertL2(table)
        return table
    }

    /// The L2 table of L1 entry `index` for changing: allocated when missing, checked to be
    /// this image's own (refcount 1) when its L1 entry lacks the copied flag.
    func l2TableForWrite(_ index: Int) throws(BlockError) -> L2Table {
        guard let refcounts else { throw .readOnly }
        guard index < l1.count else { throw .outOfRange(offset: UInt64(index) * l2Coverage, length: 0, size: virtualSize) }
        if let table = try l2Table(index) {
            if l1[index] & Self.copiedFlag == 0 {
                let count = try refcounts.refcount(of: table.offset >> clusterBits)
                guard count == 1 else {
                    throw .unsupported("write through the L2 table at offset \(table.offset): it is shared (refcount \(count))")
                }
                l1[index] |= Self.copiedFlag
                dirtyL1.insert(index)
            }
            return table
        }
        let offset = try refcounts.allocateCluster()
        let table = L2Table(offset: offset, entries: [UInt64](repeating: 0, count: clusterSize / 8))
        table.dirty = true
        l1[index] = offset | Self.copiedFlag
        dirtyL1.insert(index)
        try insertL2(table)
        return table
    }

    private func insertL2(_ table: L2Table) throws(BlockError) {
        while l2Cache.isFull, let victim = l2Cache.leastRecentlyUsed() {
            if victim.dirty { try flushMetadata() }
            l2Cache.remove(victim.offset)
        }
        l2Cache.insert(table)
    }

    /// Decodes L2 entry `entry`.
    func mapping(_ entry: UInt64) throws(BlockError) -> ClusterMapping {
        if entry & Self.compressedFlag != 0 {
            let shift = 62 - (clusterBits - 8)
            let offset = entry & ((1 << shift) - 1)
            let sectors = ((entry >> shift) & ((1 << (clusterBits - 8)) - 1)) + 1
            guard offset < 1 << 56, entry & Self.copiedFlag == 0 else {
                throw .corrupt("the compressed cluster entry 0x\(String(entry, radix: 16)) has reserved bits set")
            }
            return .compressed(offset: offset, sectors: sectors)
        }
        guard entry & Self.l2ReservedMask == 0 else {
            throw .corrupt("the L2 entry 0x\(String(entry, radix: 16)) has reserved bits set")
        }
        let offset = entry & Self.offsetMask
        let copied = entry & Self.copiedFlag != 0
        if entry & Self.zeroFlag != 0 {
            guard hasZeroFlag else { throw .corrupt("the L2 entry 0x\(String(entry, radix: 16)) has the zero flag in a version 2 image") }
            return .zero(preallocated: offset == 0 ? nil : offset, copied: copied)
        }
        if offset == 0 {
            guard !copied else { throw .corrupt("an L2 entry has the copied flag but no offset (only valid with an external data file)") }
            return .unallocated
        }
        guard offset & UInt64(clusterSize - 1) == 0 else {
            throw .corrupt("the L2 entry 0x\(String(entry, radix: 16)) points to offset \(offset), which is not aligned to a cluster")
        }
        return .data(offset, copied: copied)
    }

    /// The mapping of guest cluster `cluster`, with its raw L2 entry (0 where no L2 table exists).
    func mapping(ofCluster cluster: UInt64) throws(BlockError) -> (mapping: ClusterMapping, entry: UInt64) {
        guard let table = try l2Table(Int(cluster >> l2Bits)) else { return (.unallocated, 0) }
        let entry = table.entries[Int(cluster & ((1 << l2Bits) - 1))]
        return (try mapping(entry), entry)
    }

    /// Whether `cluster` (an index) holds the header, the L1 table, the refcount table or blocks, or a cached L2 table.
    private func isMetadata(_ cluster: UInt64) -> Bool {
        if cluster == 0 { return true }
        if cluster >= l1Offset >> clusterBits && cluster < (l1Offset >> clusterBits) + l1Clusters { return true }
        let offset = cluster << clusterBits
        if l2Cache.tables[offset] != nil { return true }
        guard let refcounts else { return false }
        for table in [(refcounts.tableOffset, refcounts.tableClusters), refcounts.diskTable] {
            if cluster >= table.0 >> clusterBits && cluster < (table.0 >> clusterBits) + table.1 { return true }
        }
        return refcounts.table.contains { $0 & ~RefcountStore.reservedMask == offset }
    }

    // MARK: - Compressed clusters

    /// Inflates the compressed cluster of L2 entry `entry` into ``inflated``.
    func inflate(entry: UInt64, offset: UInt64, sectors: UInt64) throws(BlockError) {
        if inflatedEntry == entry { return }
        if inflater == nil { inflater = try Inflater() }
        let length = Int(sectors * 512 - (offset & 511))
        let (input, valid) = try file.readBytes(count: length, at: offset)
        guard valid > 0 else { throw .corrupt("the compressed cluster at offset \(offset) lies past the end of the file") }
        if inflated.count != clusterSize { inflated = [UInt8](repeating: 0, count: clusterSize) }
        let ok = input.withUnsafeBytes { source in
            inflated.withUnsafeMutableBytes { target in
                inflater!.inflate(UnsafeRawBufferPointer(rebasing: source[0..<valid]), into: target)
            }
        }
        guard ok else {
            inflatedEntry = nil
            throw .corrupt("the compressed cluster at offset \(offset) (\(length) bytes) does not inflate to a full \(clusterSize)-byte cluster")
        }
        inflatedEntry = entry
    }

    // MARK: - Flushing metadata

    /// Writes every dirty table in crash-safe order, then applies the pending frees:
    /// refcount blocks (and table) → sync → L2 tables → sync → L1 entries → sync → frees
    /// (the frees wait for a flush with no request on an io_uring).
    func flushMetadata() throws(BlockError) {
        guard let refcounts else { return }
        try refcounts.writeDirty()
        let dirtyTables = l2Cache.dirtyTables
        if dirtyTables.isEmpty && dirtyL1.isEmpty && pendingFrees.isEmpty { return }
        for table in dirtyTables {
            try file.writeBytes(encodeTable(table.entries[...], byteCount: clusterSize), at: table.offset)
            table.dirty = false
        }
        if !dirtyL1.isEmpty {
            if !dirtyTables.isEmpty { try file.sync() }
            let indices = dirtyL1.sorted()
            let low = indices.first!, high = indices.last!
            try file.writeBytes(encodeTable(l1[low...high], byteCount: (high - low + 1) * 8), at: l1Offset + UInt64(low) * 8)
            dirtyL1.removeAll()
        }
        try file.sync()
        if !pendingFrees.isEmpty && asyncInFlight == 0 {
            for range in pendingFrees { try refcounts.free(offset: range.offset, length: range.length) }
            pendingFrees.removeAll()
            try refcounts.writeDirtyBlocks()
        }
    }

    /// Queues the host clusters behind `mapping` to be freed after the next metadata flush.
    func releaseLater(_ mapping: ClusterMapping) throws(BlockError) {
        switch mapping {
        case .unallocated, .zero(preallocated: nil, _):
            return
        case let .zero(preallocated: offset?, _), let .data(offset, _):
            pendingFrees.append((offset, UInt64(clusterSize)))
        case let .compressed(offset, sectors):
            pendingFrees.append((offset & ~511, sectors * 512))
        }
        if pendingFrees.count >= Self.maxPendingFrees && asyncInFlight == 0 { try flushMetadata() }
    }

    /// Flushes metadata and makes everything durable (`fdatasync`).
    func flush() throws(BlockError) {
        if isReadOnly { return }
        try flushMetadata()
        try file.sync()
    }

    // MARK: - Resizing

    /// Grows the virtual disk to `newSize` bytes, moving the L1 table when it needs more entries.
    func resize(to newSize: UInt64) throws(BlockError) {
        guard let refcounts else { throw .readOnly }
        guard newSize >= virtualSize else {
            throw .unsupported("shrink a qcow2 image (from \(virtualSize) to \(newSize) bytes)")
        }
        guard newSize % 512 == 0 else { throw .other("the new size \(newSize) of \(path) is not a multiple of 512 bytes") }
        let needed = divideRoundingUp(newSize, l2Coverage)
        guard needed <= QcowHeader.maxL1Bytes / 8 else {
            throw .unsupported("grow \(path) to \(newSize) bytes: the L1 table would exceed 32 MiB with \(clusterSize)-byte clusters")
        }
        try flushMetadata()
        var fields = [UInt8](repeating: 0, count: 24)
        fields.setBigEndian64(newSize, at: 0)
        if needed > UInt64(l1.count) {
            let clusters = divideRoundingUp(needed * 8, UInt64(clusterSize))
            let offset = try refcounts.allocateRun(count: clusters)
            l1.append(contentsOf: repeatElement(0, count: Int(needed) - l1.count))
            try file.writeBytes(encodeTable(l1[...], byteCount: Int(clusters) * clusterSize), at: offset)
            try refcounts.writeDirty()
            try file.sync()
            fields.setBigEndian32(UInt32(needed), at: 12)
            fields.setBigEndian64(offset, at: 16)
            try file.writeBytes(fields, at: 24)
            try file.sync()
            let old = (l1Offset, l1Clusters)
            l1Offset = offset
            l1Clusters = clusters
            header.l1Size = UInt32(needed)
            header.l1TableOffset = offset
            if old.0 != 0 && old.1 > 0 { try refcounts.free(offset: old.0, length: old.1 << clusterBits) }
            try refcounts.writeDirtyBlocks()
        } else {
            try file.writeBytes(Array(fields[0..<8]), at: 24)
            try file.sync()
        }
        virtualSize = newSize
        header.size = newSize
    }
}
