import BlockStorage

extension QcowEngine {
    /// An L2 entry to set once the data it points to is written, and the old mapping to free.
    private struct EntryUpdate {
        let table: L2Table
        let slot: Int
        let entry: UInt64
        let old: ClusterMapping
    }

    /// Writes `scatter` at guest `offset`: in place where the cluster is this image's own,
    /// into a newly allocated cluster otherwise (copying the rest of the cluster from the
    /// backing file, the compressed data or the shared cluster for a partial write). Runs of
    /// contiguous host clusters go out in one vectored write; their L2 entries change only
    /// after the data is written.
    func write(from scatter: Scatter, at offset: UInt64) throws(BlockError) {
        guard let refcounts else { throw .readOnly }
        inflatedEntry = nil
        var done = 0
        var run: (host: UInt64, start: Int, length: Int, updates: [EntryUpdate])?
        var table: L2Table?
        var tableIndex = -1

        func flushRun() throws(BlockError) {
            guard let current = run else { return }
            run = nil
            let source = scatter.slices(from: current.start, count: current.length).map { UnsafeRawBufferPointer($0) }
            try file.write(source, at: current.host)
            for update in current.updates {
                update.table.entries[update.slot] = update.entry
                update.table.dirty = true
            }
            for update in current.updates { try releaseLater(update.old) }
        }
        func append(host: UInt64, start: Int, length: Int, update: EntryUpdate?) throws(BlockError) {
            if let current = run, current.host + UInt64(current.length) == host {
                run!.length += length
                if let update { run!.updates.append(update) }
            } else {
                try flushRun()
                run = (host, start, length, update.map { [$0] } ?? [])
            }
        }

        let mask = UInt64(clusterSize - 1)
        while done < scatter.count {
            let guest = offset + UInt64(done)
            let cluster = guest >> clusterBits
            let inCluster = Int(guest & mask)
            let chunk = min(clusterSize - inCluster, scatter.count - done)
            let index = Int(cluster >> l2Bits)
            if index != tableIndex {
                try flushRun()
                table = try l2TableForWrite(index)
                tableIndex = index
            }
            let current = table!
            let slot = Int(cluster & ((1 << l2Bits) - 1))
            let entry = current.entries[slot]
            let old = try mapping(entry)
            let whole = chunk == clusterSize
            switch old {
            case let .data(host, copied: true):
                try append(host: host + UInt64(inCluster), start: done, length: chunk, update: nil)
            case let .zero(preallocated: host?, copied: true) where whole:
                try append(host: host, start: done, length: chunk,
                           update: EntryUpdate(table: current, slot: slot, entry: host | Self.copiedFlag, old: .unallocated))
            case let .zero(preallocated: host?, copied: true):
                try flushRun()
                try writeMerged(base: [UInt8](repeating: 0, count: clusterSize), scatter: scatter, from: done,
                                count: chunk, at: inCluster, host: host)
                current.entries[slot] = host | Self.copiedFlag
                current.dirty = true
            default:
                let host = try refcounts.allocateCluster()
                let update = EntryUpdate(table: current, slot: slot, entry: host | Self.copiedFlag, old: old)
                if whole {
                    try append(host: host, start: done, length: chunk, update: update)
                } else {
                    try flushRun()
                    let base = try clusterContents(cluster, mapping: old, entry: entry)
                    try writeMerged(base: base, scatter: scatter, from: done, count: chunk, at: inCluster, host: host)
                    current.entries[slot] = update.entry
                    current.dirty = true
                    try releaseLater(old)
                }
            }
            done += chunk
        }
        try flushRun()
    }

    /// Writes a whole cluster at `host`: `base` with `count` bytes of `scatter` from `position` laid over it at `inCluster`.
    private func writeMerged(base: [UInt8], scatter: Scatter, from position: Int, count: Int, at inCluster: Int,
                             host: UInt64) throws(BlockError) {
        var bytes = base
        bytes.withUnsafeMutableBytes { raw in
            scatter.copy(to: UnsafeMutableRawBufferPointer(rebasing: raw[inCluster..<(inCluster + count)]), from: position)
        }
        try file.writeBytes(bytes, at: host)
    }

    /// Makes `[offset, offset + length)` read as zeroes: whole clusters by their L2 entries
    /// (the zero flag, or unallocated where nothing shows through from a backing file),
    /// partial clusters by writing zeroes. `unmap` frees the host clusters; without it a
    /// cluster of this image's own keeps its space as a preallocated zero cluster.
    func writeZeroes(offset: UInt64, length: UInt64, unmap: Bool) throws(BlockError) {
        guard refcounts != nil else { throw .readOnly }
        inflatedEntry = nil
        let mask = UInt64(clusterSize - 1)
        var position = offset
        let end = offset + length
        while position < end {
            let cluster = position >> clusterBits
            let inCluster = position & mask
            let chunk = min(UInt64(clusterSize) - inCluster, end - position)
            let whole = inCluster == 0 && (chunk == UInt64(clusterSize) || position + chunk >= virtualSize)
            if whole {
                try zeroCluster(cluster, unmap: unmap)
            } else if !readsAsZeroes(cluster, mapping: try mapping(ofCluster: cluster).mapping) {
                let zeroes = [UInt8](repeating: 0, count: Int(chunk))
                var failure: BlockError?
                zeroes.withUnsafeBytes { raw in
                    do throws(BlockError) {
                        // SAFETY: the write path only reads through the pointer.
                        try write(from: Scatter([UnsafeMutableRawBufferPointer(mutating: raw)]), at: position)
                    } catch { failure = error }
                }
                if let failure { throw failure }
            }
            position += chunk
        }
    }

    /// Makes guest cluster `cluster` read as zeroes through its L2 entry.
    private func zeroCluster(_ cluster: UInt64, unmap: Bool) throws(BlockError) {
        let index = Int(cluster >> l2Bits)
        let noBackingData = readsAsZeroes(cluster, mapping: .unallocated)
        if try l2Table(index) == nil && noBackingData { return }
        if !hasZeroFlag && !noBackingData {
            // Version 2 has no zero flag: zeroes must be written over the backing file's data.
            let zeroes = [UInt8](repeating: 0, count: Int(min(UInt64(clusterSize), virtualSize - (cluster << clusterBits))))
            var failure: BlockError?
            zeroes.withUnsafeBytes { raw in
                do throws(BlockError) {
                    // SAFETY: the write path only reads through the pointer.
                    try write(from: Scatter([UnsafeMutableRawBufferPointer(mutating: raw)]), at: cluster << clusterBits)
                } catch { failure = error }
            }
            if let failure { throw failure }
            return
        }
        let table = try l2TableForWrite(index)
        let slot = Int(cluster & ((1 << l2Bits) - 1))
        let old = try mapping(table.entries[slot])
        let entry: UInt64
        switch old {
        case .zero(preallocated: nil, _):
            return
        case .zero(preallocated: _?, copied: true) where !unmap:
            return
        case .unallocated where noBackingData:
            return
        case let .data(host, copied: true) where !unmap && hasZeroFlag:
            table.entries[slot] = host | Self.copiedFlag | Self.zeroFlag
            table.dirty = true
            return
        default:
            entry = noBackingData ? 0 : Self.zeroFlag
        }
        table.entries[slot] = entry
        table.dirty = true
        try releaseLater(old)
    }
}
