#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The failures of a block backend, each with the operation and the reason.
public enum BlockError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The request reaches past the end of the disk.
    case outOfRange(offset: UInt64, length: UInt64, size: UInt64)
    /// The backend is read-only and the request would change it.
    case readOnly
    /// The backend cannot do this operation (for example discard on a file system without holes).
    case unsupported(String)
    /// The host refused an operation: `call` names it, `errno` says why.
    case host(call: String, errno: Int32)
    /// The image is damaged or not what its format says; the sentence explains where.
    case corrupt(String)
    /// The image is held by another process (the lock is taken).
    case locked(path: String)
    /// Anything else the backend has to say.
    case other(String)

    /// A sentence that explains the failure.
    public var description: String {
        switch self {
        case let .outOfRange(offset, length, size):
            "the request at byte \(offset) for \(length) bytes reaches past the end of the disk (\(size) bytes)"
        case .readOnly:
            "the disk is read-only"
        case let .unsupported(what):
            "the backend cannot \(what)"
        case let .host(call, errno):
            "\(call) failed: \(hostErrorString(errno)) (errno \(errno))"
        case let .corrupt(message):
            "the image is damaged: \(message)"
        case let .locked(path):
            "\(path) is in use by another process (it is locked); a writable disk can be opened by one VM only"
        case let .other(message):
            message
        }
    }
}

/// A disk's contents as a byte-addressed store, independent of the device that presents it
/// (virtio-blk) and of the image format behind it (raw file, qcow2, memory).
///
/// Offsets and lengths are in bytes; the device checks sector alignment and ranges before
/// calling, but every backend checks ranges again and throws ``BlockError/outOfRange``.
/// Buffers are borrowed for the call only: vectored calls let a device read straight into
/// (or write straight from) the guest's memory without a copy.
///
/// Calls may come from several threads (one per queue); implementations serialise what
/// they must.
public protocol BlockBackend: AnyObject, Sendable {
    /// The virtual disk size in bytes.
    var size: UInt64 { get }
    /// Whether writes, discards and write-zeroes are refused.
    var isReadOnly: Bool { get }
    /// Whether ``discard(offset:length:)`` frees space (otherwise it throws ``BlockError/unsupported(_:)``).
    var supportsDiscard: Bool { get }
    /// The alignment (bytes) that buffers and offsets need for the fastest path; 1 when any will do.
    var preferredAlignment: Int { get }

    /// Fills `buffers`, in order, with the bytes starting at `offset`.
    func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError)
    /// Stores the bytes of `buffers`, in order, starting at `offset`.
    func write(from buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError)
    /// Makes every completed write durable.
    func flush() throws(BlockError)
    /// Tells the backend that `length` bytes at `offset` are no longer needed; they read
    /// back as zeroes afterwards.
    func discard(offset: UInt64, length: UInt64) throws(BlockError)
    /// Makes `length` bytes at `offset` read as zeroes; `unmap` allows freeing the space.
    func writeZeroes(offset: UInt64, length: UInt64, unmap: Bool) throws(BlockError)
    /// Releases the image locks (every file of the image), keeping the files open: a live
    /// migration's source lets the destination open the image. Does nothing without files.
    func releaseLocks()
    /// Takes the image locks again after ``releaseLocks()``.
    ///
    /// - Throws: ``BlockError/locked(path:)`` when another process took one meanwhile.
    func retakeLocks() throws(BlockError)
    /// Makes the virtual disk `newSize` bytes long (`vm.resize-disk`); ``size`` follows.
    ///
    /// - Throws: ``BlockError/readOnly``, or ``BlockError/unsupported(_:)`` where the format
    ///   cannot change size that way (a qcow2 image does not shrink).
    func resize(to newSize: UInt64) throws(BlockError)
    /// A queue that runs this backend's reads, writes and flushes asynchronously (io_uring)
    /// for one device queue of `slots` entries, or nil when the backend runs everything
    /// synchronously (its format has no asynchronous path, or io_uring is off or missing).
    ///
    /// - Throws: ``BlockError/host(call:errno:)`` when the ring cannot be made.
    func makeAsyncQueue(slots: Int) throws(BlockError) -> AsyncBlockQueue?
}

extension BlockBackend {
    /// No files, no locks.
    public func releaseLocks() {}
    /// No files, no locks.
    public func retakeLocks() throws(BlockError) {}
    /// A backend without a way to change size refuses.
    public func resize(to newSize: UInt64) throws(BlockError) { throw .unsupported("resizing this kind of disk") }
    /// Synchronous only.
    public func makeAsyncQueue(slots: Int) throws(BlockError) -> AsyncBlockQueue? { nil }

    /// Reads `count` bytes at `offset` into a new array (convenience for tests and tools).
    public func readBytes(count: Int, at offset: UInt64) throws(BlockError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: BlockError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(BlockError) { try read(into: [buffer], at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Writes `bytes` at `offset` (convenience for tests and tools).
    public func write(bytes: [UInt8], at offset: UInt64) throws(BlockError) {
        var failure: BlockError?
        bytes.withUnsafeBytes { buffer in
            do throws(BlockError) { try write(from: [buffer], at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Throws ``BlockError/outOfRange(offset:length:size:)`` unless `[offset, offset + length)` lies on the disk.
    public func checkRange(offset: UInt64, length: UInt64) throws(BlockError) {
        let (end, overflow) = offset.addingReportingOverflow(length)
        if overflow || end > size { throw .outOfRange(offset: offset, length: length, size: size) }
    }
}

/// The total byte count of a buffer list.
@inlinable
func totalLength(_ buffers: [UnsafeMutableRawBufferPointer]) -> Int { buffers.reduce(0) { $0 + $1.count } }
/// The total byte count of a buffer list.
@inlinable
func totalLength(_ buffers: [UnsafeRawBufferPointer]) -> Int { buffers.reduce(0) { $0 + $1.count } }

/// `strerror` as a Swift string.
func hostErrorString(_ number: Int32) -> String { String(cString: strerror(number)) }
