/// One contiguous piece of a guest request inside the image file: `buffers` (slices of the
/// guest's buffers, in order) go to or come from the file at `offset`.
public struct HostExtent: @unchecked Sendable {
    /// The byte offset in the image file.
    public var offset: UInt64
    /// The caller's buffers for this piece, in order.
    public var buffers: [UnsafeMutableRawBufferPointer]
    /// The piece's length in bytes (the sum of `buffers`).
    public var length: Int

    /// A piece of `buffers` at file `offset`.
    public init(offset: UInt64, buffers: [UnsafeMutableRawBufferPointer]) {
        self.offset = offset
        self.buffers = buffers
        length = buffers.reduce(0) { $0 + $1.count }
    }
}

/// An image format whose guest requests become file extents (qcow2): the mapping (tables,
/// allocation, copy-on-write, compressed and backing data) runs synchronously in the format,
/// and an ``AsyncBlockQueue`` moves the data of the extents through io_uring.
///
/// Every successful ``mapRead(into:at:)`` or ``mapWrite(from:at:)`` that returns extents
/// counts one request in flight until ``finishedExtents()``: while any is counted the format
/// keeps the clusters it stops using (discard, overwritten copies) from being reused, so a
/// late read or write of the ring never reaches a cluster handed to other data.
public protocol AsyncExtentMapper: AnyObject, Sendable {
    /// Resolves a read of `buffers` at guest `offset`: the bytes that are not plain file data
    /// (zeroes, backing file, compressed clusters) are filled now; the returned extents are
    /// left for the caller to read.
    func mapRead(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) -> [HostExtent]
    /// Resolves a write of `buffers` at guest `offset`: when every cluster is the image's own
    /// and allocated, the extents to write; otherwise the whole write runs now (allocation,
    /// copy-on-write, metadata) and the result is empty.
    func mapWrite(from buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) -> [HostExtent]
    /// Ends the count one mapping with extents started (its extents are all done).
    func finishedExtents()
    /// Makes every completed write durable, metadata included.
    func flush() throws(BlockError)
}
