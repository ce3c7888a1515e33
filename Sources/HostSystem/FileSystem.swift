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
