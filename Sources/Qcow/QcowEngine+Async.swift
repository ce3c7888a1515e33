import BlockStorage

// The mapping half of the io_uring path: guest requests turned into file extents whose data
// the caller moves, the rest done here synchronously.
extension QcowEngine {
    /// The file extents of a read of `scatter` at guest `offset`; zero, unallocated (backing
    /// file) and compressed clusters are filled now.
    func mapRead(into scatter: Scatter, at offset: UInt64) throws(BlockError) -> [HostExtent] {
        var extents: [HostExtent] = []
        try read(into: scatter, at: offset) { host, start, length throws(BlockError) in
            extents.append(HostExtent(offset: host, buffers: scatter.slices(from: start, count: length)))
        }
        return extents
    }

    /// The file extents of a write of `scatter` at guest `offset` when every cluster it
    /// touches is allocated, the image's own (refcount 1) and under an L2 table of its own;
    /// nil when some cluster needs allocation or copy-on-write (the caller then writes synchronously).
    func writeExtents(from scatter: Scatter, at offset: UInt64) throws(BlockError) -> [HostExtent]? {
        guard refcounts != nil else { throw .readOnly }
        var extents: [HostExtent] = []
        var run: (host: UInt64, start: Int, length: Int)?
        let mask = UInt64(clusterSize - 1)
        var done = 0
        while done < scatter.count {
            let guest = offset + UInt64(done)
            let cluster = guest >> clusterBits
            let inCluster = Int(guest & mask)
            let chunk = min(clusterSize - inCluster, scatter.count - done)
            let index = Int(cluster >> l2Bits)
            guard index < l1.count, l1[index] & Self.copiedFlag != 0,
                  case let .data(host, copied: true) = try mapping(ofCluster: cluster).mapping else { return nil }
            let start = host + UInt64(inCluster)
            if let current = run, current.host + UInt64(current.length) == start {
                run!.length += chunk
            } else {
                if let current = run {
                    extents.append(HostExtent(offset: current.host, buffers: scatter.slices(from: current.start, count: current.length)))
                }
                run = (start, done, chunk)
            }
            done += chunk
        }
        if let current = run {
            extents.append(HostExtent(offset: current.host, buffers: scatter.slices(from: current.start, count: current.length)))
        }
        return extents
    }
}
