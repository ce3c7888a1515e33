import CLinux

/// The few path operations the VMM needs beyond opening files: whether a directory exists,
/// an atomic rename, removal, and making data durable.
public enum FileSystem {
    /// Whether `path` names an existing directory (`stat(2)`).
    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0 else { return false }
        return info.st_mode & UInt32(S_IFMT) == UInt32(S_IFDIR)
    }

    /// Whether something exists at `path` (`stat(2)`, following links).
    public static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    /// Renames `source` to `destination` atomically, replacing it (`rename(2)`).
    public static func rename(_ source: String, to destination: String) throws(SystemError) {
        guard CLinux.rename(source, destination) == 0 else { throw SystemError.current("rename(\(source), \(destination))") }
    }

    /// Removes the file at `path` (`unlink(2)`); a missing file is not an error.
    public static func remove(_ path: String) throws(SystemError) {
        guard unlink(path) == 0 || clinux_errno() == ENOENT else { throw SystemError.current("unlink(\(path))") }
    }

    /// Flushes a directory's entries to disk, so a rename inside it survives a crash (`fsync(2)` on the directory).
    public static func synchronizeDirectory(_ path: String) throws(SystemError) {
        let directory = try OwnedFileDescriptor(path: path, flags: O_RDONLY | O_DIRECTORY)
        try directory.synchronize()
    }
}

extension OwnedFileDescriptor {
    /// Flushes the file's data and metadata to disk (`fsync(2)`).
    public func synchronize() throws(SystemError) {
        _ = try retryingInterrupts("fsync") { fsync(rawValue) }
    }
}

extension OwnedFileDescriptor {
    /// Opens an unnamed regular file in `directory` (`open(2)` with `O_TMPFILE`, read-write):
    /// it has no name and disappears with its last descriptor.
    public static func temporaryFile(inDirectory directory: String) throws(SystemError) -> OwnedFileDescriptor {
        // O_TMPFILE is __O_TMPFILE | O_DIRECTORY; the C macro does not reach Swift.
        let temporaryFileFlag: Int32 = 0o20000000 | O_DIRECTORY
        return try OwnedFileDescriptor(path: directory, flags: temporaryFileFlag | O_RDWR | O_CLOEXEC, mode: 0o600)
    }

    /// The offset of the end of the file (`lseek(2)` with `SEEK_END`): its size, for a block
    /// device too (whose `fstat` size is 0).
    public func endOffset() throws(SystemError) -> Int64 {
        Int64(try checked("lseek(SEEK_END)") { lseek(rawValue, 0, SEEK_END) })
    }

    /// Whether the descriptor is a regular file (`fstat(2)`).
    public func isRegularFile() throws(SystemError) -> Bool {
        var info = stat()
        _ = try checked("fstat") { fstat(rawValue, &info) }
        return info.st_mode & UInt32(S_IFMT) == UInt32(S_IFREG)
    }
}
