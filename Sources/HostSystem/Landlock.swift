import CLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Landlock filesystem access rights (`LANDLOCK_ACCESS_FS_*` in `linux/landlock.h`).
///
/// Each right appeared with a Landlock ABI version; ``all(abi:)``, ``read(abi:)`` and
/// ``write(abi:)`` give the rights a kernel of that version knows. A ruleset handles a set of
/// rights: those are denied unless a rule allows them; rights it does not handle stay allowed.
public struct LandlockAccess: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The `LANDLOCK_ACCESS_FS_*` bits.
    public let rawValue: UInt64
    /// Creates rights from their bits.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `EXECUTE`: run a file (ABI 1).
    public static let execute = LandlockAccess(rawValue: 1 << 0)
    /// `WRITE_FILE`: open a file for writing (ABI 1).
    public static let writeFile = LandlockAccess(rawValue: 1 << 1)
    /// `READ_FILE`: open a file for reading (ABI 1).
    public static let readFile = LandlockAccess(rawValue: 1 << 2)
    /// `READ_DIR`: open a directory or list its entries (ABI 1).
    public static let readDir = LandlockAccess(rawValue: 1 << 3)
    /// `REMOVE_DIR`: remove an empty directory or rename one (ABI 1).
    public static let removeDir = LandlockAccess(rawValue: 1 << 4)
    /// `REMOVE_FILE`: unlink or rename a file (ABI 1).
    public static let removeFile = LandlockAccess(rawValue: 1 << 5)
    /// `MAKE_CHAR`: create a character device (ABI 1).
    public static let makeChar = LandlockAccess(rawValue: 1 << 6)
    /// `MAKE_DIR`: create a directory (ABI 1).
    public static let makeDir = LandlockAccess(rawValue: 1 << 7)
    /// `MAKE_REG`: create a regular file (ABI 1).
    public static let makeReg = LandlockAccess(rawValue: 1 << 8)
    /// `MAKE_SOCK`: create a Unix socket file, as `bind(2)` does (ABI 1).
    public static let makeSock = LandlockAccess(rawValue: 1 << 9)
    /// `MAKE_FIFO`: create a named pipe (ABI 1).
    public static let makeFifo = LandlockAccess(rawValue: 1 << 10)
    /// `MAKE_BLOCK`: create a block device (ABI 1).
    public static let makeBlock = LandlockAccess(rawValue: 1 << 11)
    /// `MAKE_SYM`: create a symbolic link (ABI 1).
    public static let makeSym = LandlockAccess(rawValue: 1 << 12)
    /// `REFER`: link or rename a file into another directory (ABI 2).
    public static let refer = LandlockAccess(rawValue: 1 << 13)
    /// `TRUNCATE`: truncate a file, `O_TRUNC` included (ABI 3).
    public static let truncate = LandlockAccess(rawValue: 1 << 14)
    /// `IOCTL_DEV`: `ioctl(2)` on a character or block device opened afterwards (ABI 5).
    public static let ioctlDev = LandlockAccess(rawValue: 1 << 15)

    /// The rights that apply to a file (not a directory): a rule on a file may only allow these.
    public static let fileRights: LandlockAccess = [.execute, .writeFile, .readFile, .truncate, .ioctlDev]

    /// Every filesystem right a kernel of Landlock ABI `abi` knows.
    public static func all(abi: Int) -> LandlockAccess {
        guard abi >= 1 else { return [] }
        var rights = LandlockAccess(rawValue: (1 << 13) - 1)
        if abi >= 2 { rights.insert(.refer) }
        if abi >= 3 { rights.insert(.truncate) }
        if abi >= 5 { rights.insert(.ioctlDev) }
        return rights
    }

    /// Reading: execute, read files, list directories.
    public static func read(abi: Int) -> LandlockAccess {
        all(abi: abi).intersection([.execute, .readFile, .readDir])
    }

    /// Writing: write, truncate, create, remove, rename and link, and device ioctls (every
    /// right but the reading ones).
    public static func write(abi: Int) -> LandlockAccess {
        all(abi: abi).subtracting(read(abi: abi))
    }

    /// The kernel names of the rights (`READ_FILE|WRITE_FILE`), or `none`.
    public var description: String {
        let names = ["EXECUTE", "WRITE_FILE", "READ_FILE", "READ_DIR", "REMOVE_DIR", "REMOVE_FILE", "MAKE_CHAR", "MAKE_DIR",
                     "MAKE_REG", "MAKE_SOCK", "MAKE_FIFO", "MAKE_BLOCK", "MAKE_SYM", "REFER", "TRUNCATE", "IOCTL_DEV"]
        var parts: [String] = []
        for (bit, name) in names.enumerated() where rawValue & (1 << UInt64(bit)) != 0 { parts.append(name) }
        let rest = rawValue & ~((1 << UInt64(names.count)) - 1)
        if rest != 0 { parts.append("0x" + String(rest, radix: 16)) }
        return parts.isEmpty ? "none" : parts.joined(separator: "|")
    }
}

/// Why a Landlock step failed; every case names Landlock, and the host kernel where it is to blame.
public enum LandlockError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The kernel has no Landlock: `landlock_create_ruleset` failed with `errno`
    /// (`ENOSYS`: built without it; `EOPNOTSUPP`: built with it but not enabled at boot).
    case unavailable(errno: Int32, kernel: String)
    /// A rule's path could not be opened (`O_PATH`): it does not exist or is not reachable.
    case pathUnusable(path: String, SystemError)
    /// A Landlock system call failed.
    case failed(SystemError)

    /// A sentence naming Landlock and the cause.
    public var description: String {
        switch self {
        case let .unavailable(errno, kernel):
            let why = errno == ENOSYS
                ? "the host kernel \(kernel) has no Landlock (landlock_create_ruleset: ENOSYS; it needs Linux 5.13 or later built with CONFIG_SECURITY_LANDLOCK)"
                : errno == EOPNOTSUPP
                ? "Landlock is built into the host kernel \(kernel) but not enabled (landlock_create_ruleset: EOPNOTSUPP; add landlock to the lsm= boot parameter)"
                : "the host kernel \(kernel) refused landlock_create_ruleset: \(SystemError(call: "", errno: errno).reason) (errno \(errno))"
            return "Landlock is not available: \(why)"
        case let .pathUnusable(path, error):
            return "Landlock: cannot add a rule for \(path): \(error.reason)"
        case let .failed(error):
            return "Landlock: \(error)"
        }
    }
}

/// A Landlock ruleset being built: create it, allow paths, then ``restrictSelf()``.
///
/// Landlock (`landlock(7)`) lets an unprivileged thread give up filesystem access: once
/// restricted, the thread (and every thread it starts afterwards) can open only what the rules
/// allow, with the rights they allow; descriptors it holds already keep working. Restriction
/// is per thread and cannot be undone; restricting again stacks another layer (only what
/// every layer allows is reachable).
///
/// ```swift
/// let ruleset = try Landlock()                       // the kernel's best ABI, every right handled
/// try ruleset.allow(LandlockAccess.read(abi: ruleset.abi), beneath: "/usr/share/images")
/// try ruleset.allow(LandlockAccess.read(abi: ruleset.abi).union(.write(abi: ruleset.abi)), beneath: "/var/lib/vm")
/// try ruleset.restrictSelf()
/// ```
///
/// The corresponding system calls are `landlock_create_ruleset(2)`, `landlock_add_rule(2)`
/// and `landlock_restrict_self(2)`.
public final class Landlock: Sendable {
    /// The Landlock ABI version the ruleset was made for (the kernel's highest).
    public let abi: Int
    /// The rights the ruleset handles: denied unless a rule allows them.
    public let handled: LandlockAccess
    private let ruleset: OwnedFileDescriptor
    /// This ruleset's number among those the process made, for the per-thread mark.
    private let serial: UInt64
    private static let made = Atomic<UInt64>(0)

    /// The highest Landlock ABI version the running kernel supports.
    ///
    /// Throws ``LandlockError/unavailable(errno:kernel:)`` where the kernel has no Landlock.
    public static func supportedABI() throws(LandlockError) -> Int {
        let version = clinux_landlock_abi_version()
        guard version >= 1 else { throw .unavailable(errno: clinux_errno(), kernel: kernelRelease()) }
        return Int(version)
    }

    /// The running kernel's release (`uname -r`).
    public static func kernelRelease() -> String {
        var names = utsname()
        guard uname(&names) == 0 else { return "(unknown release)" }
        return withUnsafeBytes(of: &names.release) { bytes in
            String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// A ruleset for the kernel's best ABI that handles `access` (by default every
    /// filesystem right that ABI knows), with no rule yet: restricting now denies them all.
    public init(handling access: LandlockAccess? = nil) throws(LandlockError) {
        let abi = try Self.supportedABI()
        let handled = access.map { $0.intersection(.all(abi: abi)) } ?? .all(abi: abi)
        // SAFETY: the shim passes a local structure and its size to the kernel, which copies it.
        let fd = clinux_landlock_create_ruleset(handled.rawValue)
        guard fd >= 0 else { throw .failed(.current("landlock_create_ruleset")) }
        self.abi = abi
        self.handled = handled
        ruleset = OwnedFileDescriptor(adopting: fd)
        serial = Self.made.add(1, ordering: .relaxed).newValue
    }

    /// Allows `access` on the file at `path`, or on everything beneath the directory at `path`.
    /// Rights the ruleset does not handle are dropped, and on a file the directory-only rights
    /// too (a file rule may only hold ``LandlockAccess/fileRights``). Returns the rights allowed.
    @discardableResult
    public func allow(_ access: LandlockAccess, beneath path: String) throws(LandlockError) -> LandlockAccess {
        let target: OwnedFileDescriptor
        do throws(SystemError) {
            target = try OwnedFileDescriptor(path: path, flags: clinux_o_path())
        } catch {
            throw .pathUnusable(path: path, error)
        }
        var status = stat()
        guard fstat(target.rawValue, &status) == 0 else { throw .pathUnusable(path: path, .current("fstat(\(path))")) }
        var allowed = access.intersection(handled)
        if status.st_mode & S_IFMT != S_IFDIR { allowed.formIntersection(.fileRights) }
        guard !allowed.isEmpty else { return [] }
        // SAFETY: the shim passes a local packed structure to the kernel, which copies it.
        guard clinux_landlock_add_path_rule(ruleset.rawValue, target.rawValue, allowed.rawValue) == 0 else {
            throw .failed(.current("landlock_add_rule(\(path), \(allowed))"))
        }
        return allowed
    }

    /// Enforces the ruleset on the calling thread (and the threads it starts from now on),
    /// after setting its no-new-privileges bit. The ruleset may be enforced on other threads too.
    public func restrictSelf() throws(LandlockError) {
        guard clinux_landlock_restrict_self(ruleset.rawValue) == 0 else { throw .failed(.current("landlock_restrict_self")) }
        clinux_landlock_set_thread_mark(serial)
    }

    /// Whether this ruleset is the last one the calling thread enforced with ``restrictSelf()``
    /// (a thread started by a restricted thread is restricted too, but has enforced nothing itself).
    public var isEnforcedOnCurrentThread: Bool {
        clinux_landlock_thread_mark() == serial
    }

    /// Drops every filesystem right on the calling thread and the threads it starts afterwards:
    /// for threads that only use descriptors they already hold.
    public static func denyAllFileAccess() throws(LandlockError) {
        try Landlock().restrictSelf()
    }
}
