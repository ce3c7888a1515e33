import BlockStorage

extension QcowEngine {
    /// Fills `scatter` with the guest bytes from `offset`: allocated clusters straight from the
    /// file (one vectored read per run of contiguous host clusters), zero clusters as zeroes,
    /// unallocated ones from the backing file (or zeroes), compressed ones inflated.
    func read(into scatter: Scatter, at offset: UInt64) throws(BlockError) {
        try read(into: scatter, at: offset) { host, start, length throws(BlockError) in
            try file.read(into: scatter.slices(from: start, count: length), at: host)
        }
    }

    /// ``read(into:at:)`` that hands each run of contiguous allocated host bytes to `dataRun`
    /// (file offset, position in `scatter`, length) instead of reading it; everything else
    /// is filled here.
    func read(into scatter: Scatter, at offset: UInt64,
              dataRun: (_ host: UInt64, _ start: Int, _ length: Int) throws(BlockError) -> Void) throws(BlockError) {
        var done = 0
        var run: (host: UInt64, start: Int, length: Int)?
        func flushRun() throws(BlockError) {
            guard let current = run else { return }
            try dataRun(current.host, current.start, current.length)
            run = nil
        }
        let mask = UInt64(clusterSize - 1)
        while done < scatter.count {
            let guest = offset + UInt64(done)
            let inCluster = Int(guest & mask)
            let chunk = min(clusterSize - inCluster, scatter.count - done)
            let (mapped, entry) = try mapping(ofCluster: guest >> clusterBits)
            switch mapped {
            case let .data(host, _):
                let start = host + UInt64(inCluster)
                if let current = run, current.host + UInt64(current.length) == start {
                    run!.length += chunk
                } else {
                    try flushRun()
                    run = (start, done, chunk)
                }
            case .zero:
                try flushRun()
                scatter.zero(from: done, count: chunk)
            case .unallocated:
                try flushRun()
                try readBacking(into: scatter, from: done, count: chunk, guestOffset: guest)
            case let .compressed(host, sectors):
                try flushRun()
                try inflate(entry: entry, offset: host, sectors: sectors)
                inflated.withUnsafeBytes { source in
                    scatter.copy(from: UnsafeRawBufferPointer(rebasing: source[inCluster..<(inCluster + chunk)]), to: done)
                }
            }
            done += chunk
        }
        try flushRun()
    }

    /// Reads `count` bytes of the backing disk at `guestOffset` into `scatter` at `position`;
    /// what lies past the backing disk's end reads as zeroes.
    func readBacking(into scatter: Scatter, from position: Int, count: Int, guestOffset: UInt64) throws(BlockError) {
        guard let backing, guestOffset < backing.size else {
            scatter.zero(from: position, count: count)
            return
        }
        let inside = Int(min(UInt64(count), backing.size - guestOffset))
        try backing.read(into: scatter.slices(from: position, count: inside), at: guestOffset)
        if inside < count { scatter.zero(from: position + inside, count: count - inside) }
    }

    /// The full contents of guest cluster `cluster` as currently mapped (for copy-on-write).
    func clusterContents(_ cluster: UInt64, mapping: ClusterMapping, entry: UInt64) throws(BlockError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: clusterSize)
        switch mapping {
        case .zero:
            break
        case .unallocated:
            var failure: BlockError?
            bytes.withUnsafeMutableBytes { raw in
                do throws(BlockError) {
                    try readBacking(into: Scatter([raw]), from: 0, count: clusterSize, guestOffset: cluster << clusterBits)
                } catch { failure = error }
            }
            if let failure { throw failure }
        case let .data(host, _):
            bytes = try file.readBytes(count: clusterSize, at: host).bytes
        case let .compressed(host, sectors):
            try inflate(entry: entry, offset: host, sectors: sectors)
            bytes = inflated
        }
        return bytes
    }

    /// Whether guest cluster `cluster`, mapped as `mapping`, reads as zeroes without looking at its data.
    func readsAsZeroes(_ cluster: UInt64, mapping: ClusterMapping) -> Bool {
        switch mapping {
        case .zero: return true
        case .unallocated: return backing.map { cluster << clusterBits >= $0.size } ?? true
        default: return false
        }
    }
}
