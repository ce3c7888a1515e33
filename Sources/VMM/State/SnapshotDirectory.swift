#if canImport(Glibc)
import Glibc
#endif
import HostSystem

/// A snapshot's directory and its three files, as Cloud Hypervisor lays it out:
/// `config.json` (the VM configuration), `state.json` (the state tree) and `memory-ranges`
/// (guest RAM, sparse). Written so that a crash at any point leaves either a complete
/// snapshot or one that restore refuses: `state.json` is written last, through a temporary
/// name and a rename, and records the size of `memory-ranges` and a digest of `config.json`.
struct SnapshotDirectory {
    /// The configuration file's name.
    static let configFile = "config.json"
    /// The state file's name.
    static let stateFile = "state.json"
    /// The memory file's name.
    static let memoryFile = "memory-ranges"

    /// The directory.
    let path: String

    /// The directory a `file:///dir` URL names; it must exist (as Cloud Hypervisor requires).
    init(url: String) throws(SnapshotError) {
        guard url.hasPrefix("file://") else { throw .badURL(url) }
        let path = String(url.dropFirst("file://".count))
        guard path.hasPrefix("/") else { throw .badURL(url) }
        guard FileSystem.isDirectory(path) else {
            throw .io("the snapshot directory \(path) does not exist or is not a directory")
        }
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    func file(_ name: String) -> String { path + "/" + name }

    /// Creates `name` for writing; refuses to replace an existing file (Cloud Hypervisor's `create_new`).
    func create(_ name: String) throws(SnapshotError) -> OwnedFileDescriptor {
        do {
            return try OwnedFileDescriptor(path: file(name), flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        } catch {
            if error.errno == EEXIST {
                throw .io("\(file(name)) exists already: snapshot into an empty directory")
            }
            throw .io("cannot create \(file(name)): \(error)")
        }
    }

    /// Writes `bytes` as `name` (new file), durably.
    func writeNew(_ name: String, _ bytes: [UInt8]) throws(SnapshotError) {
        let descriptor = try create(name)
        do {
            try descriptor.writeAll(bytes)
            try descriptor.synchronize()
        } catch {
            throw .io("cannot write \(file(name)): \(error)")
        }
    }

    /// Writes `state.json` last and atomically: a temporary file, fsync, rename, fsync of the directory.
    func commitState(_ bytes: [UInt8]) throws(SnapshotError) {
        guard !FileSystem.exists(file(Self.stateFile)) else {
            throw .io("\(file(Self.stateFile)) exists already: snapshot into an empty directory")
        }
        let temporary = Self.stateFile + ".partial"
        try? FileSystem.remove(file(temporary))
        try writeNew(temporary, bytes)
        do {
            try FileSystem.rename(file(temporary), to: file(Self.stateFile))
            try FileSystem.synchronizeDirectory(path)
        } catch {
            throw .io("cannot commit \(file(Self.stateFile)): \(error)")
        }
    }

    /// Reads a whole file (at most `limit` bytes), naming it when it is missing.
    func read(_ name: String, limit: Int = 64 << 20) throws(SnapshotError) -> [UInt8] {
        let descriptor: OwnedFileDescriptor
        do {
            descriptor = try OwnedFileDescriptor(path: file(name), flags: O_RDONLY)
        } catch {
            if error.errno == ENOENT {
                throw .damaged("\(file(name)) is missing\(name == Self.stateFile ? " (an interrupted snapshot never writes it)" : "")")
            }
            throw .io("cannot open \(file(name)): \(error)")
        }
        do {
            let size = try descriptor.size()
            guard size <= Int64(limit) else { throw SnapshotError.damaged("\(file(name)) is \(size) bytes, more than a snapshot's \(limit)") }
            var bytes = [UInt8](repeating: 0, count: Int(size))
            var done = 0
            while done < bytes.count {
                let count = try bytes.withUnsafeMutableBytes { (raw) throws(SystemError) -> Int in
                    try descriptor.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[done...]), at: Int64(done))
                }
                if count == 0 { break }
                done += count
            }
            return Array(bytes[0..<done])
        } catch let error as SnapshotError {
            throw error
        } catch {
            throw .io("cannot read \(file(name)): \(error)")
        }
    }

    /// Opens `name` for reading.
    func open(_ name: String) throws(SnapshotError) -> OwnedFileDescriptor {
        do {
            return try OwnedFileDescriptor(path: file(name), flags: O_RDONLY)
        } catch {
            if error.errno == ENOENT { throw .damaged("\(file(name)) is missing") }
            throw .io("cannot open \(file(name)): \(error)")
        }
    }

    /// A 64-bit FNV-1a digest, in hex: enough to tell that `config.json` is the one `state.json` was written with.
    static func digest(_ bytes: [UInt8]) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
