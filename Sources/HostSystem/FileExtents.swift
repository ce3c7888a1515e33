import CLinux
#if canImport(Glibc)
import Glibc
#endif

// Positional I/O that loops over short transfers, and the data/hole map of sparse files:
// what a guest memory snapshot needs to write only the pages that hold data and to read
// back only the extents that do.
extension OwnedFileDescriptor {
    /// Writes all of `buffer` at `offset`, looping over short writes (`pwrite(2)`, `EINTR`
    /// retried).
    public func writeFully(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws(SystemError) {
        var done = 0
        while done < buffer.count {
            // SAFETY: done < buffer.count, so the slice stays inside the caller's buffer.
            let slice = UnsafeRawBufferPointer(rebasing: buffer[done...])
            let written = try write(slice, at: offset + Int64(done))
            if written == 0 { throw SystemError(call: "pwrite(\(buffer.count - done) bytes at \(offset + Int64(done)))", errno: EIO) }
            done += written
        }
    }

    /// Reads into `buffer` at `offset` until it is full or the file ends, looping over short
    /// reads (`pread(2)`, `EINTR` retried). Returns how many bytes were read: less than
    /// `buffer.count` only at the end of the file.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(SystemError) -> Int {
        var done = 0
        while done < buffer.count {
            // SAFETY: done < buffer.count, so the slice stays inside the caller's buffer.
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
            let count = try read(into: slice, at: offset + Int64(done))
            if count == 0 { break }
            done += count
        }
        return done
    }

    /// The first offset at or after `offset` that holds data, or `nil` when only a hole
    /// follows up to the end of the file (or `offset` is at or past the end).
    ///
    /// The corresponding system call is `lseek(2)` with `SEEK_DATA`. File systems without
    /// hole tracking report the whole file as data, which is correct, only slower.
    public func nextData(atOrAfter offset: Int64) throws(SystemError) -> Int64? {
        let result = clinux_seek_data(raw, offset)
        if result >= 0 { return Int64(result) }
        let error = SystemError.current("lseek(\(self), \(offset), SEEK_DATA)")
        if error.errno == ENXIO { return nil }
        throw error
    }

    /// The first offset at or after `offset` inside a hole; the end of the file counts as
    /// one, so this is the end of the data extent that starts at `offset`.
    ///
    /// The corresponding system call is `lseek(2)` with `SEEK_HOLE`.
    public func nextHole(atOrAfter offset: Int64) throws(SystemError) -> Int64 {
        let result = clinux_seek_hole(raw, offset)
        if result >= 0 { return Int64(result) }
        throw SystemError.current("lseek(\(self), \(offset), SEEK_HOLE)")
    }

    /// How many bytes the file occupies on its file system (`st_blocks * 512` of
    /// `fstat(2)`): far below `size()` for a sparse file.
    public func allocatedBytes() throws(SystemError) -> Int64 {
        let result = clinux_allocated_bytes(raw)
        if result < 0 { throw SystemError.current("fstat(\(self))") }
        return Int64(result)
    }

    // `rawValue` under a short name for the helpers above.
    private var raw: Int32 { rawValue }
}

/// Waits until at least one of `descriptors` is readable (or hung up, or in error), for at
/// most `timeoutMilliseconds` (-1: no limit, 0: just look). Returns one flag per
/// descriptor, all false on timeout.
///
/// The corresponding system call is `poll(2)`; `EINTR` is retried with the full timeout.
public func pollReadable(_ descriptors: [Int32], timeoutMilliseconds: Int32) throws(SystemError) -> [Bool] {
    var entries = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    let count = entries.count
    // SAFETY: `entries` holds `count` pollfd values that the kernel updates during the call.
    let ready = try retryingInterrupts("poll(\(descriptors))") {
        entries.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t(count), timeoutMilliseconds) }
    }
    if ready == 0 { return Array(repeating: false, count: count) }
    return entries.map { $0.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 }
}
