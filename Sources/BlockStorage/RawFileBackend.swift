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
        /// Take the image lock (on by default).
        public var lock = true
        /// The default options: writable, cached, locked.
        public init(readOnly: Bool = false, direct: Bool = false, lock: Bool = true) {
            self.readOnly = readOnly
            self.direct = direct
            self.lock = lock
        }
    }

    /// The alignment `O_DIRECT` needs for buffers, offsets and lengths on every common
    /// file system (the page size; 512 suffices on many, 4096 on all).
    public static let directAlignment = 4096
    /// The most buffers one `preadv`/`pwritev` takes (`IOV_MAX`).
    static let maxVectors = 1024

    /// The path the image was opened from (for messages).
    public let path: String
    /// The open image.
    public let file: OwnedFileDescriptor
    /// The disk size: the file's size when it was opened.
    public let size: UInt64
    /// Whether writes are refused.
    public let isReadOnly: Bool
    /// Whether the file was opened `O_DIRECT`.
    public let isDirect: Bool
    /// Discard punches holes in the file.
    public var supportsDiscard: Bool { true }
    /// ``directAlignment`` with `O_DIRECT`, 1 otherwise.
    public var preferredAlignment: Int { isDirect ? Self.directAlignment : 1 }
    /// Serialises read-modify-write cycles of unaligned `O_DIRECT` writes.
    private let bounceLock = Mutex(())

    /// Opens the image at `path`.
    ///
    /// - Throws: ``BlockError/locked(path:)`` when another open file holds a conflicting
    ///   lock; ``BlockError/host(call:errno:)`` when the file cannot be opened (the call
    ///   names the path), including `O_DIRECT` on a file system without it (tmpfs).
    public init(path: String, options: Options = Options()) throws(BlockError) {
        self.path = path
        var flags = options.readOnly ? O_RDONLY : O_RDWR
        if options.direct { flags |= clinux_o_direct() }
        do {
            file = try OwnedFileDescriptor(path: path, flags: flags)
        } catch {
            let hint = options.direct && error.errno == EINVAL ? " with O_DIRECT (the file system does not support direct=on)" : ""
            throw .host(call: "open(\(path))\(hint)", errno: error.errno)
        }
        isReadOnly = options.readOnly
        isDirect = options.direct
        let end = lseek(file.rawValue, 0, SEEK_END)
        guard end >= 0 else { throw .host(call: "lseek(\(path), SEEK_END)", errno: errno) }
        size = UInt64(end)
        if options.lock { try lockImageFile(file.rawValue, path: path, exclusive: !options.readOnly) }
    }

    /// Reads with `preadv`, through a bounce buffer when `O_DIRECT` needs alignment.
    public func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) {
        let length = totalLength(buffers)
        try checkRange(offset: offset, length: UInt64(length))
        if length == 0 { return }
        if isDirect && !isAligned(buffers.map { UnsafeRawBufferPointer($0) }, offset: offset) {
            try readBounced(into: buffers, at: offset, length: length)
            return
        }
        if buffers.count == 1, let base = buffers[0].baseAddress {
            try transferOne(base, count: length, at: offset, writing: false)
            return
        }
        try transfer(buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }, at: offset, writing: false)
    }

    /// Writes with `pwritev`, through a read-modify-write bounce buffer when `O_DIRECT` needs alignment.
    public func write(from buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        let length = totalLength(buffers)
        try checkRange(offset: offset, length: UInt64(length))
        if length == 0 { return }
        if isDirect && !isAligned(buffers, offset: offset) {
            try writeBounced(from: buffers, at: offset, length: length)
            return
        }
        if buffers.count == 1, let base = buffers[0].baseAddress {
            try transferOne(UnsafeMutableRawPointer(mutating: base), count: length, at: offset, writing: true)
            return
        }
        try transfer(buffers.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) },
                     at: offset, writing: true)
    }

    /// `fdatasync(2)`.
    public func flush() throws(BlockError) {
        if isReadOnly { return }
        while fdatasync(file.rawValue) != 0 {
            if errno != EINTR { throw .host(call: "fdatasync(\(path))", errno: errno) }
        }
    }

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

    private func isAligned(_ buffers: [UnsafeRawBufferPointer], offset: UInt64) -> Bool {
        let mask = Self.directAlignment - 1
        if Int(offset & UInt64(mask)) != 0 { return false }
        for buffer in buffers {
            guard let base = buffer.baseAddress else { continue }
            if Int(bitPattern: base) & mask != 0 || buffer.count & mask != 0 { return false }
        }
        return true
    }

    /// One buffer: `pread`/`pwrite` until every byte moved (short transfers retried; end of
    /// file inside the disk reads as zeroes).
    private func transferOne(_ base: UnsafeMutableRawPointer, count: Int, at offset: UInt64, writing: Bool) throws(BlockError) {
        var done = 0
        while done < count {
            // SAFETY: [base + done, base + count) lies in the buffer the caller lends for this call.
            let result = writing ? pwrite(file.rawValue, base + done, count - done, off_t(offset) + off_t(done))
                                 : pread(file.rawValue, base + done, count - done, off_t(offset) + off_t(done))
            if result > 0 {
                done += result
            } else if result == 0 {
                if writing { throw .host(call: "pwrite(\(path), offset \(offset + UInt64(done)))", errno: EIO) }
                memset(base + done, 0, count - done)
                return
            } else if errno != EINTR {
                throw .host(call: "\(writing ? "pwrite" : "pread")(\(path), offset \(offset + UInt64(done)))", errno: errno)
            }
        }
    }

    /// Runs `preadv`/`pwritev` until every byte moved, at most ``maxVectors`` buffers per call.
    private func transfer(_ vectors: [iovec], at offset: UInt64, writing: Bool) throws(BlockError) {
        var vectors = vectors.filter { $0.iov_len > 0 }
        var position = offset
        var first = 0
        while first < vectors.count {
            let count = min(Self.maxVectors, vectors.count - first)
            let result = vectors.withUnsafeMutableBufferPointer { list in
                // SAFETY: `list[first..<first+count]` are iovecs over buffers the caller lends for this call.
                writing ? pwritev(file.rawValue, list.baseAddress! + first, Int32(count), off_t(position))
                        : preadv(file.rawValue, list.baseAddress! + first, Int32(count), off_t(position))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw .host(call: "\(writing ? "pwritev" : "preadv")(\(path), offset \(position))", errno: errno)
            }
            if result == 0 {
                if writing { throw .host(call: "pwritev(\(path), offset \(position))", errno: EIO) }
                // End of file inside the disk's size (the file shrank): the rest reads as zeroes.
                for index in first..<vectors.count { memset(vectors[index].iov_base, 0, vectors[index].iov_len) }
                return
            }
            position += UInt64(result)
            var moved = result
            while moved > 0 && first < vectors.count {
                if moved >= vectors[first].iov_len {
                    moved -= vectors[first].iov_len
                    first += 1
                } else {
                    // SAFETY: advancing inside the same caller-lent buffer.
                    vectors[first].iov_base = vectors[first].iov_base! + moved
                    vectors[first].iov_len -= moved
                    moved = 0
                }
            }
        }
    }

    /// The aligned span covering `[offset, offset + length)`.
    private func alignedSpan(offset: UInt64, length: Int) -> (start: UInt64, count: Int) {
        let alignment = UInt64(Self.directAlignment)
        let start = offset & ~(alignment - 1)
        let end = (offset + UInt64(length) + alignment - 1) & ~(alignment - 1)
        return (start, Int(min(end, max(size, start)) - start))
    }

    private func readBounced(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64, length: Int) throws(BlockError) {
        let span = alignedSpan(offset: offset, length: length)
        let bounce = try AlignedBuffer(count: roundUp(span.count), alignment: Self.directAlignment)
        try transfer([iovec(iov_base: bounce.buffer.baseAddress, iov_len: roundUp(span.count))], at: span.start, writing: false)
        var position = Int(offset - span.start)
        for buffer in buffers where buffer.count > 0 {
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bounce.buffer[position..<(position + buffer.count)]))
            position += buffer.count
        }
    }

    private func writeBounced(from buffers: [UnsafeRawBufferPointer], at offset: UInt64, length: Int) throws(BlockError) {
        let span = alignedSpan(offset: offset, length: length)
        let count = roundUp(span.count)
        let bounce = try AlignedBuffer(count: count, alignment: Self.directAlignment)
        try bounceLock.withLock { _ throws(BlockError) in
            try transfer([iovec(iov_base: bounce.buffer.baseAddress, iov_len: count)], at: span.start, writing: false)
            var position = Int(offset - span.start)
            for buffer in buffers where buffer.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: bounce.buffer[position..<(position + buffer.count)]).copyMemory(from: buffer)
                position += buffer.count
            }
            // A disk whose size is not a multiple of the alignment: never write past its end.
            let writable = Int(min(UInt64(count), size - span.start))
            if writable % Self.directAlignment == 0 {
                try transfer([iovec(iov_base: bounce.buffer.baseAddress, iov_len: writable)], at: span.start, writing: true)
            } else {
                throw BlockError.other("\(path): an O_DIRECT write that ends in the last partial block of the image (size \(size) is not a multiple of \(Self.directAlignment))")
            }
        }
    }

    private func roundUp(_ count: Int) -> Int {
        (count + Self.directAlignment - 1) & ~(Self.directAlignment - 1)
    }
}

/// Page-aligned scratch memory for `O_DIRECT` bounce buffers, freed with the object.
final class AlignedBuffer {
    let buffer: UnsafeMutableRawBufferPointer

    init(count: Int, alignment: Int) throws(BlockError) {
        var pointer: UnsafeMutableRawPointer?
        let result = posix_memalign(&pointer, alignment, max(count, alignment))
        guard result == 0, let pointer else { throw .host(call: "posix_memalign(\(count))", errno: result) }
        memset(pointer, 0, max(count, alignment))
        buffer = UnsafeMutableRawBufferPointer(start: pointer, count: count)
    }

    deinit { free(buffer.baseAddress) }
}
