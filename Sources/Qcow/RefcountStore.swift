import BlockStorage

/// The refcount table and refcount blocks of an image, and cluster allocation over them.
///
/// Changes stay in memory until ``writeDirty()``: increments may reach the file at any time
/// (a block evicted early only ever over-counts, which is a leak, never corruption), while
/// decrements are applied only by the engine after the L2 tables that stopped referencing
/// the clusters are durable. New refcount blocks and a grown refcount table are placed at
/// the end of the used area ("end"), beyond which every cluster is free.
final class RefcountStore {
    let file: ImageFile
    let clusterBits: Int
    let clusterSize: Int
    /// log2 of the refcount width in bits (0...6).
    let order: Int
    /// Refcounts per block.
    let perBlock: UInt64
    /// The largest refcount the width holds.
    let maxValue: UInt64

    /// The refcount table in memory; its count is the table's capacity in entries.
    private(set) var table: [UInt64]
    /// Where the table in memory lives (or will live, after a move not yet written).
    private(set) var tableOffset: UInt64
    /// How many clusters the table in memory occupies.
    private(set) var tableClusters: UInt64
    /// The table the header points to on disk.
    private(set) var diskTable: (offset: UInt64, clusters: UInt64)
    private var dirtyEntries: Set<Int> = []
    private let blocks: TableCache<RefcountBlock>
    /// The first cluster index from which every cluster is free.
    private(set) var end: UInt64
    /// Where the next search for a free cluster starts.
    private var freeHint: UInt64 = 0
    /// Whether `cluster` holds metadata the engine knows about (a guard against handing out
    /// the header or a table whose refcount a damaged image left at 0).
    var isMetadata: (UInt64) -> Bool = { _ in false }

    /// The entry bits that must be zero in a refcount table entry.
    static let reservedMask: UInt64 = 0x1FF

    /// Loads the refcount table of `header` and finds the end of the used area.
    init(file: ImageFile, header: QcowHeader, fileLength: UInt64, cacheBlocks: Int) throws(BlockError) {
        self.file = file
        clusterBits = Int(header.clusterBits)
        clusterSize = header.clusterSize
        order = Int(header.refcountOrder)
        perBlock = UInt64((clusterSize * 8) >> order)
        maxValue = order == 6 ? UInt64.max : (UInt64(1) << (UInt64(1) << UInt64(order))) - 1
        blocks = TableCache(capacity: cacheBlocks)
        tableOffset = header.refcountTableOffset
        tableClusters = UInt64(header.refcountTableClusters)
        diskTable = (tableOffset, tableClusters)
        let byteCount = Int(tableClusters) * clusterSize
        let (bytes, _) = try file.readBytes(count: byteCount, at: tableOffset)
        table = decodeTable(bytes, count: byteCount / 8)
        let size = UInt64(clusterSize)
        var last: Int?
        var highest = divideRoundingUp(fileLength, size)
        for (index, entry) in table.enumerated() where entry != 0 {
            guard entry & Self.reservedMask == 0, entry % size == 0 else {
                throw .corrupt("refcount table entry \(index) (0x\(String(entry, radix: 16))) is not a cluster-aligned offset")
            }
            guard entry < fileLength, fileLength - entry >= size else {
                throw .corrupt("refcount block \(index) at offset \(entry) lies past the end of the file (\(fileLength) bytes)")
            }
            last = index
            highest = max(highest, entry / size + 1)
        }
        end = max(highest, (tableOffset + UInt64(byteCount)) / size)
        // Refcounts may describe clusters past the end of the file (allocated, never written).
        var index = last
        while let current = index {
            let block = try loadBlock(current)
            if let used = (0..<Int(perBlock)).last(where: { get(block, $0) != 0 }) {
                end = max(end, UInt64(current) * perBlock + UInt64(used) + 1)
                break
            }
            index = table[..<current].lastIndex { $0 != 0 }
        }
    }

    /// Whether anything waits to be written.
    var isDirty: Bool { !dirtyEntries.isEmpty || diskTable.offset != tableOffset || blocks.tables.values.contains { $0.dirty } }

    /// The clusters of every refcount block the table points to.
    var blockClusters: [UInt64] { table.filter { $0 != 0 }.map { $0 >> UInt64(clusterBits) } }

    // MARK: - Reading and changing refcounts

    /// The refcount of the cluster at index `cluster` (0 where no block covers it).
    func refcount(of cluster: UInt64) throws(BlockError) -> UInt64 {
        let index = cluster / perBlock
        guard index < UInt64(table.count), table[Int(index)] != 0 else { return 0 }
        return get(try loadBlock(Int(index)), Int(cluster % perBlock))
    }

    /// Adds one reference to `cluster`, creating its refcount block (and growing the table) first if needed.
    func increment(_ cluster: UInt64) throws(BlockError) {
        let index = cluster / perBlock
        try ensureCapacity(for: index)
        if table[Int(index)] == 0 {
            let blockCluster = end
            end += 1
            let block = RefcountBlock(offset: blockCluster << UInt64(clusterBits), bytes: [UInt8](repeating: 0, count: clusterSize))
            block.dirty = true
            try insertBlock(block)
            table[Int(index)] = block.offset
            dirtyEntries.insert(Int(index))
            try increment(blockCluster)
        }
        let block = try loadBlock(Int(index))
        let slot = Int(cluster % perBlock)
        let value = get(block, slot)
        guard value < maxValue else {
            throw .corrupt("the refcount of cluster \(cluster) would overflow its \(1 << order)-bit field")
        }
        set(block, slot, value + 1)
    }

    /// Drops one reference to `cluster`.
    func decrement(_ cluster: UInt64) throws(BlockError) {
        let index = cluster / perBlock
        guard index < UInt64(table.count), table[Int(index)] != 0 else {
            throw .corrupt("cluster \(cluster) is freed but no refcount block covers it (its refcount is already 0)")
        }
        let block = try loadBlock(Int(index))
        let slot = Int(cluster % perBlock)
        let value = get(block, slot)
        guard value > 0 else { throw .corrupt("cluster \(cluster) is freed but its refcount is already 0") }
        set(block, slot, value - 1)
        if value == 1 { freeHint = min(freeHint, cluster) }
    }

    /// Drops one reference from every cluster overlapping `[offset, offset + length)`.
    func free(offset: UInt64, length: UInt64) throws(BlockError) {
        guard length > 0 else { return }
        let first = offset >> UInt64(clusterBits), last = (offset + length - 1) >> UInt64(clusterBits)
        for cluster in first...last { try decrement(cluster) }
    }

    /// Allocates one free cluster (refcount 0 → 1) and returns its byte offset.
    func allocateCluster() throws(BlockError) -> UInt64 {
        var cluster = try findFree()
        if cluster >= end {
            cluster = end
            end += 1
        } else if isMetadata(cluster) {
            throw .corrupt("cluster \(cluster) holds image metadata but its refcount is 0; repair the image with qemu-img check -r all")
        }
        try increment(cluster)
        freeHint = cluster + 1
        return cluster << UInt64(clusterBits)
    }

    /// Allocates `count` contiguous clusters at the end of the used area; returns the first one's byte offset.
    func allocateRun(count: UInt64) throws(BlockError) -> UInt64 {
        let start = end
        end += count
        for cluster in start..<(start + count) { try increment(cluster) }
        return start << UInt64(clusterBits)
    }

    // MARK: - Writing back

    /// Writes every dirty refcount block, then (after `fdatasync`) new table entries, or the
    /// whole moved table followed by the header fields that point to it. When anything was
    /// written it ends with `fdatasync`, so refcounts are durable before any L2 entry that
    /// needs them.
    func writeDirty() throws(BlockError) {
        guard isDirty else { return }
        try writeDirtyBlocks()
        try file.sync()
        if diskTable.offset != tableOffset {
            let bytes = encodeTable(table[...], byteCount: Int(tableClusters) * clusterSize)
            try file.writeBytes(bytes, at: tableOffset)
            try file.sync()
            var fields = [UInt8](repeating: 0, count: 12)
            fields.setBigEndian64(tableOffset, at: 0)
            fields.setBigEndian32(UInt32(tableClusters), at: 8)
            try file.writeBytes(fields, at: 48)
            try file.sync()
            let old = diskTable
            diskTable = (tableOffset, tableClusters)
            dirtyEntries.removeAll()
            // Nothing on disk points to the old table any more.
            try free(offset: old.offset, length: old.clusters << UInt64(clusterBits))
            try writeDirtyBlocks()
        } else if !dirtyEntries.isEmpty {
            for index in dirtyEntries.sorted() {
                var entry = [UInt8](repeating: 0, count: 8)
                entry.setBigEndian64(table[index], at: 0)
                try file.writeBytes(entry, at: tableOffset + UInt64(index) * 8)
            }
            dirtyEntries.removeAll()
            try file.sync()
        }
    }

    /// Writes dirty refcount blocks without syncing (safe at any time: see the type's notes).
    func writeDirtyBlocks() throws(BlockError) {
        for block in blocks.dirtyTables {
            try file.writeBytes(block.bytes, at: block.offset)
            block.dirty = false
        }
    }

    // MARK: - Internals

    /// The first free cluster at or after the hint (`end` when none below it is free).
    private func findFree() throws(BlockError) -> UInt64 {
        var cluster = freeHint
        while cluster < end {
            let index = cluster / perBlock
            if index >= UInt64(table.count) || table[Int(index)] == 0 { return cluster }
            let block = try loadBlock(Int(index))
            let base = index * perBlock
            let last = min(base + perBlock, end)
            while cluster < last {
                if get(block, Int(cluster - base)) == 0 { return cluster }
                cluster += 1
            }
        }
        return end
    }

    /// Grows the table in memory (placed anew at the end of the used area) so that it has an entry `index`.
    private func ensureCapacity(for index: UInt64) throws(BlockError) {
        if index < UInt64(table.count) { return }
        let perCluster = UInt64(clusterSize / 8)
        var entries = max(UInt64(table.count) * 2, index + 1)
        var clusters: UInt64
        repeat {
            entries = alignUp(entries, perCluster)
            clusters = entries / perCluster
            // The table and the blocks describing it go at the end: they must be covered too.
            let lastRange = (end + clusters + 8) / perBlock
            if lastRange < entries { break }
            entries *= 2
        } while true
        guard clusters * UInt64(clusterSize) <= QcowHeader.maxRefcountTableBytes else {
            throw .unsupported("grow the refcount table past 8 MiB (the image file would exceed what \(clusterSize)-byte clusters can describe)")
        }
        let previous = (offset: tableOffset, clusters: tableClusters)
        let start = end
        end += clusters
        table.append(contentsOf: repeatElement(0, count: Int(entries) - table.count))
        tableOffset = start << UInt64(clusterBits)
        tableClusters = clusters
        if previous.offset != diskTable.offset {
            // A table moved earlier but never written: nothing refers to it.
            try free(offset: previous.offset, length: previous.clusters << UInt64(clusterBits))
        }
        for cluster in start..<(start + clusters) { try increment(cluster) }
    }

    private func loadBlock(_ index: Int) throws(BlockError) -> RefcountBlock {
        let offset = table[index] & ~Self.reservedMask
        if let block = blocks.get(offset) { return block }
        let (bytes, valid) = try file.readBytes(count: clusterSize, at: offset)
        guard valid == clusterSize else {
            throw .corrupt("refcount block \(index) at offset \(offset) is cut short by the end of the file")
        }
        let block = RefcountBlock(offset: offset, bytes: bytes)
        try insertBlock(block)
        return block
    }

    private func insertBlock(_ block: RefcountBlock) throws(BlockError) {
        while blocks.isFull, let victim = blocks.leastRecentlyUsed() {
            if victim.dirty { try file.writeBytes(victim.bytes, at: victim.offset) }
            blocks.remove(victim.offset)
        }
        blocks.insert(block)
    }

    private func get(_ block: RefcountBlock, _ slot: Int) -> UInt64 {
        switch order {
        case 4: return UInt64(block.bytes.bigEndian16(at: slot * 2))
        case 3: return UInt64(block.bytes[slot])
        case 5: return UInt64(block.bytes.bigEndian32(at: slot * 4))
        case 6: return block.bytes.bigEndian64(at: slot * 8)
        default:
            let width = 1 << order, perByte = 8 >> order
            let shift = (slot % perByte) * width
            return UInt64(block.bytes[slot / perByte] >> UInt8(shift)) & ((1 << UInt64(width)) - 1)
        }
    }

    private func set(_ block: RefcountBlock, _ slot: Int, _ value: UInt64) {
        switch order {
        case 4: block.bytes.setBigEndian16(UInt16(value), at: slot * 2)
        case 3: block.bytes[slot] = UInt8(value)
        case 5: block.bytes.setBigEndian32(UInt32(value), at: slot * 4)
        case 6: block.bytes.setBigEndian64(value, at: slot * 8)
        default:
            let width = 1 << order, perByte = 8 >> order
            let shift = (slot % perByte) * width
            let mask = UInt8((1 << width) - 1) << UInt8(shift)
            let byte = slot / perByte
            block.bytes[byte] = (block.bytes[byte] & ~mask) | (UInt8(value) << UInt8(shift))
        }
        block.dirty = true
    }
}
