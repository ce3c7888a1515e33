#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinux

/// How an image is locked (Cloud Hypervisor's `lock_granularity`).
public enum ImageLock: Sendable, Equatable {
    /// No lock (tools that only read).
    case none
    /// A lock on the bytes `[0, size)` at open time: Cloud Hypervisor's default
    /// (`ByteRange`), which some NFS servers need to allow other work on the file.
    case byteRange
    /// A lock on the whole file, however it grows (`Full`).
    case wholeFile
}

/// Takes Cloud Hypervisor's image lock on an open image file: an open-file-description lock
/// over `[start, start + length)` (length 0: the whole file), exclusive (`F_WRLCK`) for a writable disk and shared (`F_RDLCK`) for a
/// read-only one, so two VMs cannot both open one image for writing while any number may
/// share it read-only. The lock goes away with the last descriptor of that open file.
///
/// The corresponding system call is `fcntl(fd, F_OFD_SETLK)`.
///
/// - Throws: ``BlockError/locked(path:)`` when another open file holds a conflicting lock;
///   ``BlockError/host(call:errno:)`` for any other refusal. File systems without lock
///   support (some network ones answer `ENOLCK`, `EINVAL` or `EOPNOTSUPP`) leave the image
///   usable without protection, as Cloud Hypervisor allows.
public func lockImageFile(_ descriptor: Int32, path: String, exclusive: Bool, length: UInt64 = 0) throws(BlockError) {
    if clinux_ofd_lock(descriptor, exclusive ? 1 : 0, 0, length) == 0 { return }
    let number = errno
    if number == EAGAIN || number == EACCES { throw .locked(path: path) }
    if number != ENOLCK && number != EINVAL && number != EOPNOTSUPP {
        throw .host(call: "fcntl(\(path), F_OFD_SETLK)", errno: number)
    }
}
