#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BlockStorage
import CLinux
import HostSystem

/// The qcow2 container file: positioned vectored reads and writes that loop until done,
/// `fdatasync`, and, with `O_DIRECT`, an aligned bounce buffer for the requests (metadata
/// entries, partial clusters) that are not aligned.
///
/// Not thread-safe by itself: the image's lock serialises every use.
final class HostFile {
    /// The alignment `O_DIRECT` needs on every common file system.
    static let directAlignment = 4096
    /// The most buffers one `preadv`/`pwritev` takes (`IOV_MAX`).
    static let maxVectors = 1024

    let path: String
    let descriptor: OwnedFileDescriptor
    let isDirect: Bool
    let isReadOnly: Bool

    /// Opens `path`, read-only or read-write, optionally `O_DIRECT`, and takes the image lock.
    init(path: String, readOnly: Bool, direct: Bool, lock: Bool) throws(BlockError) {
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
        if lock { try lockImageFile(descriptor.rawValue, path: path, exclusive: !readOnly) }
    }

    /// The file's current length in bytes.
    func length() throws(BlockError) -> UInt64 {
        do { return UInt64(try descriptor.size()) } catch { throw .host(call: "fstat(\(path))", errno: error.errno) }
    }

    /// Sets the file's length.
    func truncate(to length: UInt64) throws(BlockError) {
        do { try descriptor.truncate(to: Int64(length)) } catch { throw .host(call: "ftruncate(\(path))", errno: error.errno) }
    }

    /// `fdatasync(2)`: every write so far is durable.
    func sync() throws(BlockError) {
        while fdatasync(descriptor.rawValue) != 0 {
            if errno != EINTR { throw .host(call: "fdatasync(\(path))", errno: errno) }
        }
    }

    /// Fills `buffers` from `offset`; bytes past the end of the file read as zeroes.
    /// Returns how many bytes came from the file.
    @discardableResult
    func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) -> Int {
        if isDirect && !Self.isAligned(buffers.map { UnsafeRawBufferPointer($0) }, offset: offset) {
            return try bouncedRead(into: buffers, at: offset)
        }
        return try transfer(buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }, at: offset, writing: false)
    }

    /// Writes `buffers` at `offset`, extending the file as needed.
    func write(_ buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        if isDirect && !Self.isAligned(buffers, offset: offset) {
            try bouncedWrite(buffers, at: offset)
            return
        }
        // SAFETY: pwritev only reads through these pointers; the caller lends them for this call.
        _ = try transfer(buffers.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) },
                         at: offset, writing: true)
    }

    /// Reads `count` bytes at `offset` into a new array. Returns the array and how many of
    /// its bytes came from the file (the rest, past the end of the file, are zeroes).
    func readBytes(count: Int, at offset: UInt64) throws(BlockError) -> (bytes: [UInt8], valid: Int) {
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
    func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws(BlockError) {
        var failure: BlockError?
        bytes.withUnsafeBytes { raw in
            do throws(BlockError) { try write([raw], at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    // MARK: - Internals

    private static func isAligned(_ buffers: [UnsafeRawBufferPointer], offset: UInt64) -> Bool {
        let mask = directAlignment - 1
        if Int(offset & UInt64(mask)) != 0 { return false }
        for buffer in buffers where buffer.count > 0 {
            if Int(bitPattern: buffer.baseAddress!) & mask != 0 || buffer.count & mask != 0 { return false }
        }
        return true
    }

    /// Runs `preadv`/`pwritev` until every byte moved; a read stops at the end of the file and
    /// zero-fills the rest. Returns the bytes moved.
    private func transfer(_ vectors: [iovec], at offset: UInt64, writing: Bool) throws(BlockError) -> Int {
        var vectors = vectors.filter { $0.iov_len > 0 }
        var position = offset
        var first = 0
        var moved = 0
        while first < vectors.count {
            let count = min(Self.maxVectors, vectors.count - first)
            let result = vectors.withUnsafeMutableBufferPointer { list in
                // SAFETY: `list[first..<first+count]` are iovecs over buffers lent for this call.
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

    private func alignedSpan(offset: UInt64, length: Int) -> (start: UInt64, count: Int) {
        let alignment = UInt64(Self.directAlignment)
        let start = offset & ~(alignment - 1)
        let end = (offset + UInt64(length) + alignment - 1) & ~(alignment - 1)
        return (start, Int(end - start))
    }

    private func bouncedRead(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) -> Int {
        let length = buffers.reduce(0) { $0 + $1.count }
        let span = alignedSpan(offset: offset, length: length)
        let bounce = try PageBuffer(count: span.count)
        let got = try transfer([iovec(iov_base: bounce.bytes.baseAddress, iov_len: span.count)], at: span.start, writing: false)
        var position = Int(offset - span.start)
        for buffer in buffers where buffer.count > 0 {
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bounce.bytes[position..<(position + buffer.count)]))
            position += buffer.count
        }
        return max(0, min(length, got - Int(offset - span.start)))
    }

    private func bouncedWrite(_ buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) {
        let length = buffers.reduce(0) { $0 + $1.count }
        let span = alignedSpan(offset: offset, length: length)
        let bounce = try PageBuffer(count: span.count)
        _ = try transfer([iovec(iov_base: bounce.bytes.baseAddress, iov_len: span.count)], at: span.start, writing: false)
        var position = Int(offset - span.start)
        for buffer in buffers where buffer.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: bounce.bytes[position..<(position + buffer.count)]).copyMemory(from: buffer)
            position += buffer.count
        }
        _ = try transfer([iovec(iov_base: bounce.bytes.baseAddress, iov_len: span.count)], at: span.start, writing: true)
    }
}

/// Page-aligned, zero-filled scratch memory, freed with the object.
final class PageBuffer {
    let bytes: UnsafeMutableRawBufferPointer

    init(count: Int) throws(BlockError) {
        var pointer: UnsafeMutableRawPointer?
        let size = max(count, HostFile.directAlignment)
        let result = posix_memalign(&pointer, HostFile.directAlignment, size)
        guard result == 0, let pointer else { throw .host(call: "posix_memalign(\(count))", errno: result) }
        memset(pointer, 0, size)
        bytes = UnsafeMutableRawBufferPointer(start: pointer, count: count)
    }

    deinit { free(bytes.baseAddress) }
}
