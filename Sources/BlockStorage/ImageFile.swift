#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux
import HostSystem
import Synchronization

/// An open image file (a raw disk, a qcow2 container): positioned vectored reads and
/// writes that loop until every byte moved, `fdatasync`, and with `O_DIRECT` an aligned
/// bounce buffer for the requests that are not aligned (read-modify-write for writes).
/// Bytes past the end of the file read as zeroes; writes may extend the file.
///
/// Safe to use from several threads: positioned I/O needs no shared offset, and the
/// read-modify-write cycles of unaligned `O_DIRECT` writes are serialised.
public final class ImageFile: Sendable {
    /// The alignment `O_DIRECT` needs for buffers, offsets and lengths on every common
    /// file system (the page size; 512 suffices on many, 4096 on all).
    public static let directAlignment = 4096
    /// The most buffers one `preadv`/`pwritev` takes (`IOV_MAX`).
    static let maxVectors = 1024

    /// The path the file was opened from (for messages).
    public let path: String
    /// The open file.
    public let descriptor: OwnedFileDescriptor
    /// Whether the file was opened `O_DIRECT`.
    public let isDirect: Bool
    /// Whether the file was opened read-only (writes throw ``BlockError/readOnly``).
    public let isReadOnly: Bool
    private let bounceLock = Mutex(())
    /// The image lock taken at open, for ``releaseLock()`` and ``retakeLock()``.
    private let lock: ImageLock
    private let lockedLength: UInt64

    /// Opens `path`, read-only or read-write, optionally `O_DIRECT`, and with `lock` takes
    /// Cloud Hypervisor's image lock (a write lock when writable, a read lock otherwise).
    ///
    /// - Throws: ``BlockError/host(call:errno:)`` naming the path (and `O_DIRECT` when the
    ///   file system refuses it), ``BlockError/locked(path:)`` when another process holds it.
    public init(path: String, readOnly: Bool, direct: Bool, lock: ImageLock) throws(BlockError) {
        self.path = path
        var flags = readOnly ? O_RDONLY : O_RDWR
        if direct { flags |= clinux_o_direct() }
        do {
            descriptor = try OwnedFileDescriptor(path: path, flags: flags)
        } catch {
            let hint = direct && error.errno == EINVAL ? " with O_DIRECT (the file system does not support direct=on)" : ""
            throw .host(call: "open(\(path))\(hint)", errno: error.errno)
        }
        isDirect = direct
        isReadOnly = readOnly
        self.lock = lock
        // An empty file locks the whole file: a zero-length range means "to the end".
        let end = lseek(descriptor.rawValue, 0, SEEK_END)
        guard end >= 0 else { throw .host(call: "lseek(\(path), SEEK_END)", errno: errno) }
        lockedLength = lock == .byteRange ? UInt64(end) : 0
        try retakeLock()
    }

    /// Releases the image lock (a live migration's source, before the destination opens the
    /// image). The file stays open.
    ///
    /// The corresponding system call is `fcntl(fd, F_OFD_SETLK)` with `F_UNLCK`.
    public func releaseLock() {
        if lock != .none { _ = clinux_ofd_unlock(descriptor.rawValue) }
    }

    /// Takes the image lock of the open again (at open, and after ``releaseLock()`` when a
    /// migration failed and the source goes on).
    ///
    /// - Throws: ``BlockError/locked(path:)`` when another process took it meanwhile.
    public func retakeLock() throws(BlockError) {
        switch lock {
        case .none: break
        case .wholeFile: try lockImageFile(descriptor.rawValue, path: path, exclusive: !isReadOnly)
        case .byteRange: try lockImageFile(descriptor.rawValue, path: path, exclusive: !isReadOnly, length: lockedLength)
        }
    }

    /// The file's current length in bytes (block devices included).
    public func length() throws(BlockError) -> UInt64 {
        let end = lseek(descriptor.rawValue, 0, SEEK_END)
        guard end >= 0 else { throw .host(call: "lseek(\(path), SEEK_END)", errno: errno) }
        return UInt64(end)
    }

    /// Whether the image is a block device (`fstat(2)`), whose length only the host changes.
    public func isBlockDevice() throws(BlockError) -> Bool {
        var info = stat()
        guard fstat(descriptor.rawValue, &info) == 0 else { throw .host(call: "fstat(\(path))", errno: errno) }
        return info.st_mode & S_IFMT == S_IFBLK
    }

    /// Sets the file's length.
    public func truncate(to length: UInt64) throws(BlockError) {
        do { try descriptor.truncate(to: Int64(length)) } catch { throw .host(call: "ftruncate(\(path))", errno: error.errno) }
    }

    /// `fdatasync(2)`: every write so far is durable.
    public func sync() throws(BlockError) {
        while fdatasync(descriptor.rawValue) != 0 {
            if errno != EINTR { throw .host(call: "fdatasync(\(path))", errno: errno) }
        }
    }

    /// Fills `buffers`, in order, from `offset`; bytes past the end of the file read as
    /// zeroes. Returns how many bytes came from the file.
    @discardableResult
    public func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) -> Int {
        if isDirect && !Self.isAligned(buffers.map { UnsafeRawBufferPointer($0) }, offset: offset) {
            return try bouncedRead(into: buffers, at: offset)
        }
        if buffers.count == 1, let base = buffers[0].baseAddress {
            return try transferOne(base, count: buffers[0].count, at: offset, writing: false)
        }
        return try transfer(buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }, at: offset, writing: false)
    }

    /// Writes `buffers`, in order, at `offset`, extending the file as needed.
    public func write(_ buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        if isDirect && !Self.isAligned(buffers, offset: offset) {
            try bouncedWrite(buffers, at: offset)
            return
        }
        if buffers.count == 1, let base = buffers[0].baseAddress {
            // SAFETY: pwrite only reads through this pointer; the caller lends it for this call.
            _ = try transferOne(UnsafeMutableRawPointer(mutating: base), count: buffers[0].count, at: offset, writing: true)
            return
        }
        // SAFETY: pwritev only reads through these pointers; the caller lends them for this call.
        _ = try transfer(buffers.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) },
                         at: offset, writing: true)
    }

    /// Reads `count` bytes at `offset` into a new array. Returns the array and how many of
    /// its bytes came from the file (the rest, past the end of the file, are zeroes).
    public func readBytes(count: Int, at offset: UInt64) throws(BlockError) -> (bytes: [UInt8], valid: Int) {
        var bytes = [UInt8](repeating: 0, count: count)
        var valid = 0
        var failure: BlockError?
        bytes.withUnsafeMutableBytes { raw in
            do throws(BlockError) { valid = try read(into: [raw], at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return (bytes, valid)
    }

    /// Writes `bytes` at `offset`.
    public func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws(BlockError) {
        var failure: BlockError?
        bytes.withUnsafeBytes { raw in
            do throws(BlockError) { try write([raw], at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Whether `buffers` and `offset` meet ``directAlignment`` (what `O_DIRECT` needs).
    public static func isAligned(_ buffers: [UnsafeRawBufferPointer], offset: UInt64) -> Bool {
        let mask = directAlignment - 1
        if Int(offset & UInt64(mask)) != 0 { return false }
        for buffer in buffers where buffer.count > 0 {
            if Int(bitPattern: buffer.baseAddress!) & mask != 0 || buffer.count & mask != 0 { return false }
        }
        return true
    }

    /// `[offset, offset + length)` widened to ``directAlignment`` on both ends.
    public static func alignedSpan(offset: UInt64, length: Int) -> (start: UInt64, count: Int) {
        let alignment = UInt64(directAlignment)
        let start = offset & ~(alignment - 1)
        let end = (offset + UInt64(length) + alignment - 1) & ~(alignment - 1)
        return (start, Int(end - start))
    }

    // MARK: - Internals

    /// One buffer: `pread`/`pwrite` until every byte moved; a read stops at the end of the
    /// file and zero-fills the rest. Returns the bytes moved.
    private func transferOne(_ base: UnsafeMutableRawPointer, count: Int, at offset: UInt64, writing: Bool) throws(BlockError) -> Int {
        var done = 0
        while done < count {
            // SAFETY: [base + done, base + count) lies in the buffer the caller lends for this call.
            let result = writing ? pwrite(descriptor.rawValue, base + done, count - done, off_t(offset) + off_t(done))
                                 : pread(descriptor.rawValue, base + done, count - done, off_t(offset) + off_t(done))
            if result > 0 {
                done += result
            } else if result == 0 {
                if writing { throw .host(call: "pwrite(\(path), offset \(offset + UInt64(done)))", errno: EIO) }
                memset(base + done, 0, count - done)
                return done
            } else if errno != EINTR {
                throw .host(call: "\(writing ? "pwrite" : "pread")(\(path), offset \(offset + UInt64(done)))", errno: errno)
            }
        }
        return done
    }

    /// Runs `preadv`/`pwritev` until every byte moved, at most ``maxVectors`` buffers per
    /// call; a read stops at the end of the file and zero-fills the rest. Returns the bytes moved.
    private func transfer(_ vectors: [iovec], at offset: UInt64, writing: Bool) throws(BlockError) -> Int {
        var vectors = vectors.filter { $0.iov_len > 0 }
        var position = offset
        var first = 0
        var moved = 0
        while first < vectors.count {
            let count = min(Self.maxVectors, vectors.count - first)
            let result = vectors.withUnsafeMutableBufferPointer { list in
                // SAFETY: `list[first..<first+count]` are iovecs over buffers the caller lends for this call.
                writing ? pwritev(descriptor.rawValue, list.baseAddress! + first, Int32(count), off_t(position))
                        : preadv(descriptor.rawValue, list.baseAddress! + first, Int32(count), off_t(position))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw .host(call: "\(writing ? "pwritev" : "preadv")(\(path), offset \(position))", errno: errno)
            }
            if result == 0 {
                if writing { throw .host(call: "pwritev(\(path), offset \(position))", errno: EIO) }
                // SAFETY: the remaining iovecs cover caller-lent buffers; past the end of the file they read as zeroes.
                for index in first..<vectors.count { memset(vectors[index].iov_base, 0, vectors[index].iov_len) }
                return moved
            }
            position += UInt64(result)
            moved += result
            var left = result
            while left > 0 && first < vectors.count {
                if left >= vectors[first].iov_len {
                    left -= vectors[first].iov_len
                    first += 1
                } else {
                    // SAFETY: advancing inside the same caller-lent buffer.
                    vectors[first].iov_base = vectors[first].iov_base! + left
                    vectors[first].iov_len -= left
                    left = 0
                }
            }
        }
        return moved
    }

    private func bouncedRead(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) -> Int {
        let length = buffers.reduce(0) { $0 + $1.count }
        let span = Self.alignedSpan(offset: offset, length: length)
        let bounce = try AlignedBuffer(count: span.count, alignment: Self.directAlignment)
        let got = try transfer([iovec(iov_base: bounce.buffer.baseAddress, iov_len: span.count)], at: span.start, writing: false)
        var position = Int(offset - span.start)
        for buffer in buffers where buffer.count > 0 {
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bounce.buffer[position..<(position + buffer.count)]))
            position += buffer.count
        }
        return max(0, min(length, got - Int(offset - span.start)))
    }

    private func bouncedWrite(_ buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) {
        let length = buffers.reduce(0) { $0 + $1.count }
        let span = Self.alignedSpan(offset: offset, length: length)
        let bounce = try AlignedBuffer(count: span.count, alignment: Self.directAlignment)
        try bounceLock.withLock { _ throws(BlockError) in
            _ = try transfer([iovec(iov_base: bounce.buffer.baseAddress, iov_len: span.count)], at: span.start, writing: false)
            var position = Int(offset - span.start)
            for buffer in buffers where buffer.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: bounce.buffer[position..<(position + buffer.count)]).copyMemory(from: buffer)
                position += buffer.count
            }
            _ = try transfer([iovec(iov_base: bounce.buffer.baseAddress, iov_len: span.count)], at: span.start, writing: true)
        }
    }
}

/// Aligned, zero-filled scratch memory (an `O_DIRECT` bounce buffer), freed with the object.
public final class AlignedBuffer {
    /// The memory.
    public let buffer: UnsafeMutableRawBufferPointer

    /// Allocates `count` bytes aligned to `alignment` (at least `alignment` bytes are reserved).
    public init(count: Int, alignment: Int) throws(BlockError) {
        var pointer: UnsafeMutableRawPointer?
        let result = posix_memalign(&pointer, alignment, max(count, alignment))
        guard result == 0, let pointer else { throw .host(call: "posix_memalign(\(count))", errno: result) }
        memset(pointer, 0, max(count, alignment))
        buffer = UnsafeMutableRawBufferPointer(start: pointer, count: count)
    }

    deinit { free(buffer.baseAddress) }
}
