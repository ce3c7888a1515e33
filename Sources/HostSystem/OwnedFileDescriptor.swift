import CLinux

/// A file descriptor that this object owns and closes when it goes away.
///
/// Holding the descriptor in a class ties its lifetime to every owner (a VM, a vCPU, an
/// event loop) without manual `close` calls; `take()` hands ownership to someone else.
public final class OwnedFileDescriptor: @unchecked Sendable, CustomStringConvertible {
    // The raw value never changes after init except through take(), which the owner calls
    // once on a descriptor no other thread is using; reads are therefore race-free.
    private var raw: Int32

    /// Takes ownership of `rawValue`, which must be an open descriptor nobody else closes.
    public init(adopting rawValue: Int32) {
        precondition(rawValue >= 0, "OwnedFileDescriptor needs an open descriptor, got \(rawValue)")
        raw = rawValue
    }

    /// Opens `path` with `flags` (`O_CLOEXEC` is always added).
    ///
    /// The corresponding system call is `open(2)`.
    public convenience init(path: String, flags: Int32, mode: UInt32 = 0o644) throws(SystemError) {
        let fd = try retryingInterrupts("open(\(path))") {
            clinux_open_mode(path, flags | O_CLOEXEC, mode)
        }
        self.init(adopting: fd)
    }

    deinit {
        if raw >= 0 { _ = close(raw) }
    }

    /// The descriptor number, valid while this object lives (or until `take()`).
    public var rawValue: Int32 { raw }

    /// Gives up ownership: returns the descriptor, which this object will no longer close.
    public func take() -> Int32 {
        let value = raw
        raw = -1
        return value
    }

    /// A second descriptor for the same open file (`dup(2)` with close-on-exec).
    public func duplicate() throws(SystemError) -> OwnedFileDescriptor {
        let fd = try retryingInterrupts("fcntl(F_DUPFD_CLOEXEC)") { clinux_fcntl_val(raw, F_DUPFD_CLOEXEC, 0) }
        return OwnedFileDescriptor(adopting: fd)
    }

    /// Takes an exclusive open-file-description lock on the whole file without waiting:
    /// `true` when taken, `false` when another open file holds a lock on it. The lock lasts
    /// as long as this open file.
    ///
    /// The corresponding system call is `fcntl(F_OFD_SETLK)` with `F_WRLCK`.
    public func tryLockExclusively() throws(SystemError) -> Bool {
        if clinux_ofd_lock(raw, 1, 0, 0) == 0 { return true }
        let error = SystemError.current("fcntl(F_OFD_SETLK)")
        if error.errno == EAGAIN || error.errno == EACCES { return false }
        throw error
    }

    /// Switches `O_NONBLOCK` on or off.
    public func setNonBlocking(_ on: Bool) throws(SystemError) {
        let flags = try checked("fcntl(F_GETFL)") { clinux_fcntl_val(raw, F_GETFL, 0) }
        let updated = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        _ = try checked("fcntl(F_SETFL)") { clinux_fcntl_val(raw, F_SETFL, Int(updated)) }
    }

    /// A new anonymous memory file of `size` bytes (`memfd_create(2)` with `MFD_CLOEXEC`, then
    /// `ftruncate(2)`): memory that can be mapped shared and handed to another process.
    public static func memoryFile(name: String, size: Int64) throws(SystemError) -> OwnedFileDescriptor {
        let fd = try checked("memfd_create(\(name))") { clinux_memfd_create(name) }
        let file = OwnedFileDescriptor(adopting: fd)
        try file.truncate(to: size)
        return file
    }

    /// Reads up to `buffer.count` bytes (`read(2)`, retried on `EINTR`). Returns 0 at end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int {
        try retryingInterrupts("read") { Glibc_read(raw, buffer.baseAddress, buffer.count) }
    }

    /// Writes up to `buffer.count` bytes (`write(2)`, retried on `EINTR`). Returns how many were written.
    public func write(_ buffer: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        try retryingInterrupts("write") { Glibc_write(raw, buffer.baseAddress, buffer.count) }
    }

    /// Reads at `offset` without moving the file position (`pread(2)`).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(SystemError) -> Int {
        try retryingInterrupts("pread") { pread(raw, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// Writes at `offset` without moving the file position (`pwrite(2)`).
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws(SystemError) -> Int {
        try retryingInterrupts("pwrite") { pwrite(raw, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    /// Writes all of `bytes`, looping over short writes.
    public func writeAll(_ bytes: some Collection<UInt8>) throws(SystemError) {
        let array = Array(bytes)
        var done = 0
        while done < array.count {
            let n = array.withUnsafeBytes { all in
                unistdWrite(raw, all.baseAddress! + done, all.count - done)
            }
            if n >= 0 {
                done += n
            } else if clinux_errno() != EINTR {
                throw SystemError.current("write")
            }
        }
    }

    /// The file's size in bytes (`fstat(2)`).
    public func size() throws(SystemError) -> Int64 {
        var info = stat()
        _ = try checked("fstat") { fstat(raw, &info) }
        return Int64(info.st_size)
    }

    /// Sets the file's size (`ftruncate(2)`).
    public func truncate(to size: Int64) throws(SystemError) {
        _ = try retryingInterrupts("ftruncate") { ftruncate(raw, off_t(size)) }
    }

    /// `"fd N"`.
    public var description: String { "fd \(raw)" }
}

// Unqualified `read`/`write` inside the class would resolve to its own methods.
@usableFromInline func Glibc_read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    unistdRead(fd, buffer, count)
}
@usableFromInline func Glibc_write(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int {
    unistdWrite(fd, buffer, count)
}
