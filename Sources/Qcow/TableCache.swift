/// A metadata table held in memory: an L2 table or a refcount block, one cluster each.
protocol CachedTable: AnyObject {
    /// Where the table lives in the image file.
    var offset: UInt64 { get }
    /// Whether the copy in memory differs from the file.
    var dirty: Bool { get set }
    /// The cache clock at the last use (for least-recently-used eviction).
    var lastUse: UInt64 { get set }
}

/// An L2 table: one cluster of 64-bit entries, decoded to host byte order.
final class L2Table: CachedTable {
    let offset: UInt64
    var entries: [UInt64]
    var dirty = false
    var lastUse: UInt64 = 0

    init(offset: UInt64, entries: [UInt64]) {
        self.offset = offset
        self.entries = entries
    }
}

/// A refcount block: one cluster of refcounts, kept as the big-endian bytes of the file
/// (widths from 1 to 64 bits are packed differently; ``RefcountStore`` decodes them).
final class RefcountBlock: CachedTable {
    let offset: UInt64
    var bytes: [UInt8]
    var dirty = false
    var lastUse: UInt64 = 0

    init(offset: UInt64, bytes: [UInt8]) {
        self.offset = offset
        self.bytes = bytes
    }
}

/// A bounded cache of metadata tables keyed by their file offset. The owner decides what
/// evicting a dirty table takes (write ordering), so this only picks the victim.
final class TableCache<Table: CachedTable> {
    private(set) var tables: [UInt64: Table] = [:]
    /// The most tables held at once.
    let capacity: Int
    private var clock: UInt64 = 0

    init(capacity: Int) { self.capacity = max(2, capacity) }

    /// The table at `offset`, if cached (and marks it used).
    func get(_ offset: UInt64) -> Table? {
        guard let table = tables[offset] else { return nil }
        clock += 1
        table.lastUse = clock
        return table
    }

    /// Adds `table` (the caller made room first).
    func insert(_ table: Table) {
        clock += 1
        table.lastUse = clock
        tables[table.offset] = table
    }

    /// Whether inserting one more table needs an eviction first.
    var isFull: Bool { tables.count >= capacity }

    /// The least recently used table.
    func leastRecentlyUsed() -> Table? { tables.values.min { $0.lastUse < $1.lastUse } }

    /// Drops the table at `offset` from the cache (the caller wrote it back if needed).
    func remove(_ offset: UInt64) { tables[offset] = nil }

    /// The dirty tables, in file order.
    var dirtyTables: [Table] { tables.values.filter(\.dirty).sorted { $0.offset < $1.offset } }

    /// Drops every table.
    func removeAll() { tables.removeAll() }
}
