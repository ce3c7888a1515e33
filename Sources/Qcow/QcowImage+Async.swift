import BlockStorage

// QcowImage on io_uring: the mapping stays here, under the image's mutex; an AsyncBlockQueue
// moves the data of allocated clusters.
extension QcowImage: AsyncExtentMapper {
    /// An io_uring queue over the image when it was opened with ``Options/ioUring``; nil otherwise.
    public func makeAsyncQueue(slots: Int) throws(BlockError) -> AsyncBlockQueue? {
        guard usesIoUring else { return nil }
        let file = try locked { engine throws(BlockError) in engine.file }
        return try AsyncBlockQueue(file: file, slots: slots, mapper: self) { self.size }
    }

    /// Fills zero, backing and compressed clusters now and returns the allocated ones' extents.
    public func mapRead(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) -> [HostExtent] {
        let scatter = Scatter(buffers)
        try checkRange(offset: offset, length: UInt64(scatter.count))
        if scatter.count == 0 { return [] }
        return try locked { engine throws(BlockError) in
            let extents = try engine.mapRead(into: scatter, at: offset)
            if !extents.isEmpty { engine.asyncInFlight += 1 }
            return extents
        }
    }

    /// The extents of a write over allocated clusters; any other write runs now, whole.
    public func mapWrite(from buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) -> [HostExtent] {
        if isReadOnly { throw .readOnly }
        // SAFETY: the write path only reads through these pointers, which the caller lends for the request.
        let scatter = Scatter(buffers.map { UnsafeMutableRawBufferPointer(mutating: $0) })
        try checkRange(offset: offset, length: UInt64(scatter.count))
        if scatter.count == 0 { return [] }
        return try locked { engine throws(BlockError) in
            guard let extents = try engine.writeExtents(from: scatter, at: offset) else {
                try engine.write(from: scatter, at: offset)
                return []
            }
            if !extents.isEmpty { engine.asyncInFlight += 1 }
            return extents
        }
    }

    /// One request's extents are done: clusters freed meanwhile may be reused once none is left.
    public func finishedExtents() {
        _ = try? locked { engine throws(BlockError) in engine.asyncInFlight = max(0, engine.asyncInFlight - 1) }
    }
}
