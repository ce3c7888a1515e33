import BlockStorage

/// What ``QcowImage/check()`` found: clusters whose refcount is higher than their
/// references (leaks: wasted space, harmless) and lower (errors: corruption, data may be
/// overwritten), and copied flags that disagree with refcounts (errors).
public struct QcowCheckReport: Sendable, Equatable {
    /// Corruptions found.
    public var errors = 0
    /// Leaked clusters found.
    public var leaks = 0
    /// Clusters referenced by the image's metadata and data.
    public var referencedClusters = 0
    /// Sentences describing the first findings (at most ``maxMessages``).
    public var messages: [String] = []
    /// The most messages kept.
    public static let maxMessages = 50

    /// No errors and no leaks.
    public var isClean: Bool { errors == 0 && leaks == 0 }

    mutating func error(_ text: String) {
        errors += 1
        if messages.count < Self.maxMessages { messages.append("ERROR: " + text) }
    }

    mutating func leak(_ text: String) {
        leaks += 1
        if messages.count < Self.maxMessages { messages.append("Leaked: " + text) }
    }
}

/// A summary of an image: ``QcowImage/info()``.
public struct QcowInfo: Sendable, Equatable {
    /// The virtual disk size in bytes.
    public var virtualSize: UInt64
    /// The cluster size in bytes.
    public var clusterSize: Int
    /// Format version (2 or 3).
    public var version: UInt32
    /// Refcount width in bits.
    public var refcountBits: Int
    /// The backing file name as stored, if any.
    public var backingFile: String?
    /// The backing file format recorded in the header, if any.
    public var backingFormat: String?
    /// Internal snapshots.
    public var snapshots: UInt32
    /// Guest clusters with data in this image (standard and compressed).
    public var allocatedClusters: Int
    /// Of those, the compressed ones.
    public var compressedClusters: Int
    /// Guest clusters marked as reading zeroes.
    public var zeroClusters: Int
    /// L2 tables in use.
    public var l2Tables: Int
    /// The image file's length in bytes.
    public var fileLength: UInt64
}

extension QcowImage {
    /// Walks the active L1 and L2 tables and summarises the image.
    public func info() throws(BlockError) -> QcowInfo {
        try locked { engine throws(BlockError) in try engine.info() }
    }

    /// Recounts every reference (header, tables, refcount blocks, L2 tables, data and
    /// compressed clusters, internal snapshots) and compares with the stored refcounts, like
    /// `qemu-img check` does (without repairing). Bitmap data is not counted (it shows as leaks).
    public func check() throws(BlockError) -> QcowCheckReport {
        try locked { engine throws(BlockError) in try engine.check() }
    }
}

extension QcowEngine {
    func info() throws(BlockError) -> QcowInfo {
        var info = QcowInfo(virtualSize: virtualSize, clusterSize: clusterSize, version: header.version,
                            refcountBits: 1 << Int(header.refcountOrder), backingFile: header.backingFile,
                            backingFormat: header.backingFormat, snapshots: header.snapshotCount, allocatedClusters: 0,
                            compressedClusters: 0, zeroClusters: 0, l2Tables: 0, fileLength: try file.length())
        for index in 0..<l1.count {
            guard let table = try l2Table(index) else { continue }
            info.l2Tables += 1
            for entry in table.entries {
                switch try mapping(entry) {
                case .data: info.allocatedClusters += 1
                case .compressed:
                    info.allocatedClusters += 1
                    info.compressedClusters += 1
                case .zero: info.zeroClusters += 1
                case .unallocated: break
                }
            }
        }
        return info
    }

    func check() throws(BlockError) -> QcowCheckReport {
        if !isReadOnly { try flushMetadata() }
        let store = try loadRefcounts()
        let size = UInt64(clusterSize)
        let clusters = divideRoundingUp(try file.length(), size)
        guard clusters <= 1 << 28 else {
            throw .unsupported("check an image of \(clusters) clusters (more than 2^28)")
        }
        var report = QcowCheckReport()
        var references = [UInt32](repeating: 0, count: Int(clusters))
        func reference(_ offset: UInt64, _ length: UInt64, _ what: String) {
            guard length > 0 else { return }
            let first = offset / size, last = (offset + length - 1) / size
            if last >= clusters {
                report.error("\(what) at offset \(offset) lies past the end of the image")
                return
            }
            for cluster in first...last { references[Int(cluster)] &+= 1 }
        }
        func walk(l1Offset: UInt64, entries: [UInt64], active: Bool, _ label: String) throws(BlockError) {
            reference(l1Offset, UInt64(entries.count) * 8, "\(label) L1 table")
            for (index, entry) in entries.enumerated() {
                let l2Offset = entry & Self.offsetMask
                if l2Offset == 0 { continue }
                reference(l2Offset, size, "\(label) L2 table \(index)")
                if active {
                    let count = try store.refcount(of: l2Offset / size)
                    if (entry & Self.copiedFlag != 0) != (count == 1) {
                        report.error("L1 entry \(index): copied flag \(entry >> 63) but the L2 table's refcount is \(count)")
                    }
                }
                let table: [UInt64]
                if active, let cached = try l2Table(index) {
                    table = cached.entries
                } else {
                    let (bytes, valid) = try file.readBytes(count: clusterSize, at: l2Offset)
                    guard valid == clusterSize else {
                        report.error("\(label) L2 table \(index) at offset \(l2Offset) is cut short by the end of the file")
                        continue
                    }
                    table = decodeTable(bytes, count: clusterSize / 8)
                }
                for (slot, raw) in table.enumerated() {
                    let mapped: ClusterMapping
                    do { mapped = try mapping(raw) } catch {
                        report.error("\(label) L2 table \(index) entry \(slot): \(error)")
                        continue
                    }
                    switch mapped {
                    case let .data(host, copied), let .zero(preallocated: host?, copied):
                        reference(host, size, "\(label) data cluster")
                        if active {
                            let count = try store.refcount(of: host / size)
                            if copied != (count == 1) {
                                report.error("cluster at offset \(host): copied flag \(copied ? 1 : 0) but refcount \(count)")
                            }
                        }
                    case let .compressed(host, sectors):
                        reference(host & ~511, sectors * 512, "\(label) compressed cluster")
                    case .zero, .unallocated:
                        break
                    }
                }
            }
        }

        reference(0, size, "the header")
        reference(store.diskTable.offset, store.diskTable.clusters * size, "the refcount table")
        for block in store.blockClusters { reference(block * size, size, "a refcount block") }
        try walk(l1Offset: l1Offset, entries: l1, active: true, "active")
        try walkSnapshots { offset, entries, name throws(BlockError) in
            try walk(l1Offset: offset, entries: entries, active: false, "snapshot \(name)")
        } table: { offset, length in
            reference(offset, length, "the snapshot table")
        } failure: { message in
            report.error(message)
        }
        func compare(_ cluster: UInt64, stored: UInt64, counted: UInt64) {
            if counted > 0 { report.referencedClusters += 1 }
            if stored > counted {
                report.leak("cluster \(cluster) refcount=\(stored) reference=\(counted)")
            } else if stored < counted {
                report.error("cluster \(cluster) refcount=\(stored) reference=\(counted)")
            }
        }
        // Every stored refcount (blocks lie inside the file, so this is bounded by its size) ...
        var covered = [Bool](repeating: false, count: Int(clusters))
        for (index, entry) in store.table.enumerated() where entry != 0 {
            for slot in 0..<store.perBlock {
                let cluster = UInt64(index) * store.perBlock + slot
                let stored = try store.refcount(of: cluster)
                let counted = cluster < clusters ? UInt64(references[Int(cluster)]) : 0
                if cluster < clusters { covered[Int(cluster)] = true }
                compare(cluster, stored: stored, counted: counted)
            }
        }
        // ... and the clusters no refcount block covers (refcount 0).
        for cluster in 0..<Int(clusters) where !covered[cluster] {
            compare(UInt64(cluster), stored: 0, counted: UInt64(references[cluster]))
        }
        return report
    }

    /// Calls `body` with each internal snapshot's L1 table, `table` with the snapshot table's extent.
    private func walkSnapshots(_ body: (UInt64, [UInt64], String) throws(BlockError) -> Void,
                               table: (UInt64, UInt64) -> Void, failure: (String) -> Void) throws(BlockError) {
        guard header.snapshotCount > 0 else { return }
        var position = header.snapshotsOffset
        let fileLength = try file.length()
        for number in 0..<Int(header.snapshotCount) {
            let (fixed, valid) = try file.readBytes(count: 40, at: position)
            guard valid == 40 else { return failure("snapshot \(number)'s table entry lies past the end of the file") }
            let l1Offset = fixed.bigEndian64(at: 0)
            let l1Size = UInt64(fixed.bigEndian32(at: 8))
            let idLength = UInt64(fixed.bigEndian16(at: 12)), nameLength = UInt64(fixed.bigEndian16(at: 14))
            let extra = UInt64(fixed.bigEndian32(at: 36))
            guard extra <= 1 << 16 else { return failure("snapshot \(number) has \(extra) bytes of extra data") }
            position += alignUp(40 + extra + idLength + nameLength, 8)
            let (l1End, overflow) = l1Offset.addingReportingOverflow(l1Size * 8)
            guard l1Size * 8 <= QcowHeader.maxL1Bytes, l1Offset % UInt64(clusterSize) == 0, !overflow, l1End <= fileLength else {
                failure("snapshot \(number)'s L1 table (\(l1Size) entries at \(l1Offset)) is invalid")
                continue
            }
            let bytes = try file.readBytes(count: Int(l1Size) * 8, at: l1Offset).bytes
            try body(l1Offset, decodeTable(bytes, count: Int(l1Size)), "\(number)")
        }
        table(header.snapshotsOffset, position - header.snapshotsOffset)
    }
}
