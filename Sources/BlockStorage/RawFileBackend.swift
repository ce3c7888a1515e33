#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux
import HostSystem
import Synchronization

/// A raw disk image: a regular file or a block device whose bytes are the disk's bytes.
///
/// Reads and writes are `preadv`/`pwritev` straight from the caller's buffers. With
/// ``Options/direct`` the file is opened `O_DIRECT` (bypassing the host page cache); requests
/// whose buffers or offsets are not aligned then go through an aligned bounce buffer.
/// The image is locked with an open-file-description lock (a write lock for a writable
/// disk, a read lock for a read-only one), so two VMs cannot both open it for writing,
/// as Cloud Hypervisor does.
public final class RawFileBackend: BlockBackend {
    /// How to open the image.
    public struct Options: Sendable, Equatable {
        /// Open read-only; writes are refused with ``BlockError/readOnly``.
        public var readOnly = false
        /// Open with `O_DIRECT`.
        public var direct = false
        /// The image lock (Cloud Hypervisor's default: a byte-range lock over the image).
        public var lock = ImageLock.byteRange
        /// Offer asynchronous queues (``makeAsyncQueue(slots:)``) over io_uring.
        public var ioUring = false
        /// The default options: writable, cached, locked, synchronous.
        public init(readOnly: Bool = false, direct: Bool = false, lock: ImageLock = .byteRange, ioUring: Bool = false) {
            self.readOnly = readOnly
            self.direct = direct
            self.lock = lock
            self.ioUring = ioUring
        }
    }

    /// The alignment `O_DIRECT` needs (``ImageFile/directAlignment``).
    public static let directAlignment = ImageFile.directAlignment

    /// The path the image was opened from (for messages).
    public let path: String
    /// The open image and its I/O.
    public let image: ImageFile
    /// The open image's descriptor.
    public var file: OwnedFileDescriptor { image.descriptor }
    /// The disk size: the file's size when it was opened, or as ``resize(to:)`` set it.
    public var size: UInt64 { currentSize.load(ordering: .acquiring) }
    private let currentSize: Atomic<UInt64>
    /// Whether ``makeAsyncQueue(slots:)`` makes io_uring queues.
    public let usesIoUring: Bool
    /// Whether writes are refused.
    public var isReadOnly: Bool { image.isReadOnly }
    /// Whether the file was opened `O_DIRECT`.
    public var isDirect: Bool { image.isDirect }
    /// Discard punches holes in the file.
    public var supportsDiscard: Bool { true }
    /// ``directAlignment`` with `O_DIRECT`, 1 otherwise.
    public var preferredAlignment: Int { isDirect ? Self.directAlignment : 1 }

    /// Opens the image at `path`.
    ///
    /// - Throws: ``BlockError/locked(path:)`` when another open file holds a conflicting
    ///   lock; ``BlockError/host(call:errno:)`` when the file cannot be opened (the call
    ///   names the path), including `O_DIRECT` on a file system without it (tmpfs).
    public init(path: String, options: Options = Options()) throws(BlockError) {
        self.path = path
        image = try ImageFile(path: path, readOnly: options.readOnly, direct: options.direct, lock: options.lock)
        currentSize = Atomic(try image.length())
        usesIoUring = options.ioUring
    }

    /// An io_uring queue over the image when the backend was opened with
    /// ``Options/ioUring``; nil otherwise.
    public func makeAsyncQueue(slots: Int) throws(BlockError) -> AsyncBlockQueue? {
        guard usesIoUring else { return nil }
        return try AsyncBlockQueue(file: image, slots: slots) { self.size }
    }

    /// Truncates or extends the file to `newSize` bytes (Cloud Hypervisor's raw resize: a
    /// shrink drops the end of the disk). A block device cannot be resized from here: it must
    /// already have the new size (resized on the host with LVM or losetup).
    public func resize(to newSize: UInt64) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        if try image.isBlockDevice() {
            let actual = try image.length()
            guard actual == newSize else {
                throw .other("\(path) is a block device of \(actual) bytes: resize it on the host (LVM, losetup) to \(newSize) bytes first")
            }
        } else {
            try image.truncate(to: newSize)
        }
        currentSize.store(newSize, ordering: .releasing)
    }

    /// Reads with `preadv`, through a bounce buffer when `O_DIRECT` needs alignment.
    public func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) {
        let length = totalLength(buffers)
        try checkRange(offset: offset, length: UInt64(length))
        if length == 0 { return }
        try image.read(into: buffers, at: offset)
    }

    /// Writes with `pwritev`, through a read-modify-write bounce buffer when `O_DIRECT` needs alignment.
    public func write(from buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        let length = totalLength(buffers)
        try checkRange(offset: offset, length: UInt64(length))
        if length == 0 { return }
        if isDirect && !ImageFile.isAligned(buffers, offset: offset) {
            // A disk whose size is not a multiple of the alignment: never write past its end.
            let span = ImageFile.alignedSpan(offset: offset, length: length)
            if span.start + UInt64(span.count) > size {
                throw BlockError.other("\(path): an O_DIRECT write that ends in the last partial block of the image (size \(size) is not a multiple of \(Self.directAlignment))")
            }
        }
        try image.write(buffers, at: offset)
    }

    /// `fdatasync(2)`.
    public func flush() throws(BlockError) {
        if isReadOnly { return }
        try image.sync()
    }

    /// Releases the image lock, keeping the file open.
    public func releaseLocks() { image.releaseLock() }

    /// Takes the image lock again.
    public func retakeLocks() throws(BlockError) { try image.retakeLock() }

    /// Punches a hole (`fallocate` with `PUNCH_HOLE | KEEP_SIZE`).
    public func discard(offset: UInt64, length: UInt64) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        try checkRange(offset: offset, length: length)
        if length == 0 { return }
        try allocate(mode: Self.punchHole | Self.keepSize, offset: offset, length: length, what: "discard")
    }

    /// `fallocate` with `ZERO_RANGE` (or `PUNCH_HOLE` when unmapping is allowed); falls back
    /// to writing zeroes where the file system has neither.
    public func writeZeroes(offset: UInt64, length: UInt64, unmap: Bool) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        try checkRange(offset: offset, length: length)
        if length == 0 { return }
        let mode = unmap ? Self.punchHole | Self.keepSize : Self.zeroRange | Self.keepSize
        do {
            try allocate(mode: mode, offset: offset, length: length, what: "write zeroes")
        } catch .unsupported {
            try writeZeroesByHand(offset: offset, length: length)
        }
    }

    // MARK: - Internals

    static let keepSize: Int32 = 0x01
    static let punchHole: Int32 = 0x02
    static let zeroRange: Int32 = 0x10

    private func allocate(mode: Int32, offset: UInt64, length: UInt64, what: String) throws(BlockError) {
        while clinux_fallocate(file.rawValue, mode, Int64(offset), Int64(length)) != 0 {
            let number = errno
            if number == EINTR { continue }
            if number == EOPNOTSUPP || number == ENOSYS || number == ENODEV {
                throw .unsupported("\(what) on \(path): the file system does not support fallocate mode 0x\(String(mode, radix: 16))")
            }
            throw .host(call: "fallocate(\(path), \(what))", errno: number)
        }
    }

    private func writeZeroesByHand(offset: UInt64, length: UInt64) throws(BlockError) {
        let chunk = 1 << 20
        let zeroes = try AlignedBuffer(count: min(chunk, Int(length)), alignment: Self.directAlignment)
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(UInt64(zeroes.buffer.count), length - done))
            try write(from: [UnsafeRawBufferPointer(rebasing: zeroes.buffer[0..<count])], at: offset + done)
            done += UInt64(count)
        }
    }
}
