import CLinux

/// A userfaultfd: the kernel hands page faults on registered memory to this process, which
/// resolves them by copying data in (`UFFDIO_COPY`) or mapping the zero page
/// (`UFFDIO_ZEROPAGE`). The VMM uses it to restore guest memory on demand: register the
/// guest RAM, start the vCPUs, and fill each page from the snapshot file on first touch.
///
/// Only `MISSING` mode is wrapped: a fault is reported for a page that is not yet present.
/// Faults taken by the kernel on the process's behalf (KVM reading guest memory, `read(2)`
/// into it) wait for the handler too, unless the descriptor was made `userModeOnly`; a VMM
/// must therefore not use `userModeOnly` for guest RAM.
///
/// The class is `@unchecked Sendable`: its stored properties never change after `init`, and
/// the kernel serialises the ioctls, so one thread may read faults while others register.
public final class UserFaultFD: @unchecked Sendable {
    /// Optional `UFFD_FEATURE_*` bits asked for in the `UFFDIO_API` handshake.
    public struct Features: OptionSet, Sendable, Hashable, CustomStringConvertible {
        /// The `UFFD_FEATURE_*` bits.
        public let rawValue: UInt64
        /// Creates features from their bits.
        public init(rawValue: UInt64) { self.rawValue = rawValue }

        /// `UFFD_FEATURE_EVENT_REMOVE`: report `madvise(MADV_DONTNEED/REMOVE)` on registered memory.
        public static let eventRemove = Features(rawValue: 1 << 3)
        /// `UFFD_FEATURE_MISSING_HUGETLBFS`: missing faults on hugetlbfs-backed memory.
        public static let missingHugetlbfs = Features(rawValue: 1 << 4)
        /// `UFFD_FEATURE_MISSING_SHMEM`: missing faults on shared memory (`MAP_SHARED`
        /// anonymous memory, `memfd`), which guest RAM with `shared=on` is.
        public static let missingShmem = Features(rawValue: 1 << 5)
        /// `UFFD_FEATURE_SIGBUS`: faults raise `SIGBUS` instead of waiting for a handler.
        public static let sigbus = Features(rawValue: 1 << 7)
        /// `UFFD_FEATURE_THREAD_ID`: each fault carries the faulting thread's id.
        public static let threadID = Features(rawValue: 1 << 8)
        /// `UFFD_FEATURE_EXACT_ADDRESS`: the fault address is exact, not page-aligned.
        public static let exactAddress = Features(rawValue: 1 << 11)

        /// The kernel names of the known bits, and the leftover bits in hexadecimal.
        public var description: String {
            let names: [(Features, String)] = [
                (.eventRemove, "EVENT_REMOVE"), (.missingHugetlbfs, "MISSING_HUGETLBFS"),
                (.missingShmem, "MISSING_SHMEM"), (.sigbus, "SIGBUS"), (.threadID, "THREAD_ID"),
                (.exactAddress, "EXACT_ADDRESS"),
            ]
            var parts = names.filter { contains($0.0) }.map(\.1)
            let known = names.reduce(Features()) { $0.union($1.0) }
            let rest = subtracting(known).rawValue
            if rest != 0 { parts.append("0x" + String(rest, radix: 16)) }
            return parts.isEmpty ? "none" : parts.joined(separator: "|")
        }
    }

    /// One page fault read from the descriptor (`struct uffd_msg` with `UFFD_EVENT_PAGEFAULT`).
    public struct PageFault: Equatable, Sendable {
        /// The faulting host address (page-aligned unless `.exactAddress` is on).
        public let address: UInt64
        /// Whether the access was a write (`UFFD_PAGEFAULT_FLAG_WRITE`).
        public let isWrite: Bool
        /// The faulting thread's id with `.threadID`, else 0.
        public let threadID: UInt32

        /// Creates a fault record (for tests and fakes).
        public init(address: UInt64, isWrite: Bool, threadID: UInt32 = 0) {
            self.address = address
            self.isWrite = isWrite
            self.threadID = threadID
        }
    }

    /// How the descriptor is obtained. `.kernel` is the normal way; an unprivileged VMM may be
    /// handed one by a privileged helper (`.adopting`), and tests substitute a refusing one.
    public struct Creator: Sendable {
        /// Makes a descriptor for `userfaultfd(2)` `flags` (`O_CLOEXEC`, `O_NONBLOCK`,
        /// `UFFD_USER_MODE_ONLY`).
        public let create: @Sendable (_ flags: Int32) throws(UserFaultFDError) -> OwnedFileDescriptor

        /// Wraps a creation function.
        public init(_ create: @escaping @Sendable (_ flags: Int32) throws(UserFaultFDError) -> OwnedFileDescriptor) {
            self.create = create
        }

        /// The `userfaultfd(2)` system call; when it is refused with `EPERM` (the
        /// `vm.unprivileged_userfaultfd=0` policy), `/dev/userfaultfd` with
        /// `USERFAULTFD_IOC_NEW` (Linux 6.1+), whose file permissions may grant access.
        public static let kernel = Creator { flags throws(UserFaultFDError) in
            let fd = clinux_userfaultfd(flags)
            if fd >= 0 { return OwnedFileDescriptor(adopting: fd) }
            let syscallError = SystemError.current("userfaultfd(\(UserFaultFD.describe(flags: flags)))")
            guard syscallError.errno == EPERM else { throw .unavailable(syscallError, device: nil) }
            let device: OwnedFileDescriptor
            do throws(SystemError) {
                device = try OwnedFileDescriptor(path: "/dev/userfaultfd", flags: O_RDWR)
            } catch {
                throw .unavailable(syscallError, device: error)
            }
            let made = clinux_ioctl_val(device.rawValue, IOCTL_USERFAULTFD_IOC_NEW, UInt(UInt32(bitPattern: flags)))
            if made < 0 {
                throw .unavailable(syscallError, device: .current("ioctl(/dev/userfaultfd, USERFAULTFD_IOC_NEW)"))
            }
            return OwnedFileDescriptor(adopting: made)
        }

        /// Uses `descriptor`, a userfaultfd on which `UFFDIO_API` has not been called yet
        /// (for example one received from a privileged helper over a Unix socket).
        public static func adopting(_ descriptor: OwnedFileDescriptor) -> Creator {
            Creator { _ in descriptor }
        }
    }

    /// The descriptor (poll it for readability: a fault is waiting).
    public let descriptor: OwnedFileDescriptor
    /// The optional features the handshake enabled (those asked for).
    public let features: Features
    /// The features the kernel offered in the handshake.
    public let availableFeatures: Features
    /// The `ioctls` mask of `UFFDIO_API`: which descriptor-wide ioctls exist (bit `_UFFDIO_*`).
    public let ioctls: UInt64

    /// Makes a userfaultfd and performs the `UFFDIO_API` handshake with `features`.
    ///
    /// - Parameters:
    ///   - nonBlocking: `O_NONBLOCK`, so `readFaults()` returns an empty list rather than
    ///     waiting; poll `descriptor` to wait.
    ///   - userModeOnly: `UFFD_USER_MODE_ONLY`: only faults taken in user mode are reported,
    ///     which unprivileged processes may ask for under `vm.unprivileged_userfaultfd=0`;
    ///     kernel accesses to registered memory then fail with `EFAULT`, so not for guest RAM.
    ///   - features: optional features; all must be offered by the kernel.
    ///   - creator: where the descriptor comes from.
    /// - Throws: `.unavailable` when the host refuses userfaultfd (the error explains the
    ///   policy or kernel option), `.handshakeFailed`, `.featuresUnsupported`.
    public init(
        nonBlocking: Bool = true, userModeOnly: Bool = false, features: Features = [], creator: Creator = .kernel
    ) throws(UserFaultFDError) {
        var flags = O_CLOEXEC
        if nonBlocking { flags |= O_NONBLOCK }
        if userModeOnly { flags |= CLINUX_UFFD_USER_MODE_ONLY }
        let fd = try creator.create(flags)
        var api = uffdio_api(api: CLINUX_UFFD_API, features: features.rawValue, ioctls: 0)
        // SAFETY: `api` is a local uffdio_api the kernel reads and fills in.
        if clinux_ioctl_ptr(fd.rawValue, IOCTL_UFFDIO_API, &api) != 0 {
            let error = SystemError.current("ioctl(userfaultfd, UFFDIO_API, features \(features))")
            if error.errno == EINVAL, !features.isEmpty, let offered = try? Self.probeFeatures(creator: .kernel) {
                throw .featuresUnsupported(requested: features, available: offered)
            }
            throw .handshakeFailed(error)
        }
        descriptor = fd
        availableFeatures = Features(rawValue: api.features)
        self.features = features
        ioctls = api.ioctls
    }

    /// The optional features this kernel offers: a handshake with no features on a
    /// throwaway descriptor, which the kernel answers with every bit it supports.
    public static func probeFeatures(creator: Creator = .kernel) throws(UserFaultFDError) -> Features {
        try UserFaultFD(creator: creator).availableFeatures
    }

    /// The descriptor number.
    public var rawValue: Int32 { descriptor.rawValue }

    /// Registers `[address, address + length)` (page-aligned) for missing-page faults and
    /// returns the range `ioctls` mask the kernel allows on it.
    ///
    /// The corresponding ioctl is `UFFDIO_REGISTER` with `UFFDIO_REGISTER_MODE_MISSING`.
    @discardableResult
    public func registerMissing(_ address: UnsafeMutableRawPointer, length: Int) throws(SystemError) -> RangeIoctls {
        var request = uffdio_register(
            range: uffdio_range(start: UInt64(UInt(bitPattern: address)), len: UInt64(length)),
            mode: CLINUX_UFFDIO_REGISTER_MODE_MISSING, ioctls: 0)
        // SAFETY: `request` is a local uffdio_register the kernel reads and fills in.
        _ = try checked("ioctl(userfaultfd, UFFDIO_REGISTER, \(Self.range(address, length)))") {
            clinux_ioctl_ptr(rawValue, IOCTL_UFFDIO_REGISTER, &request)
        }
        return RangeIoctls(rawValue: request.ioctls)
    }

    /// Unregisters `[address, address + length)`: faults there are handled by the kernel
    /// again (a missing anonymous page reads as zeros), and threads waiting on it are woken.
    ///
    /// The corresponding ioctl is `UFFDIO_UNREGISTER`.
    public func unregister(_ address: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
        var range = uffdio_range(start: UInt64(UInt(bitPattern: address)), len: UInt64(length))
        // SAFETY: `range` is a local uffdio_range the kernel reads.
        _ = try checked("ioctl(userfaultfd, UFFDIO_UNREGISTER, \(Self.range(address, length)))") {
            clinux_ioctl_ptr(rawValue, IOCTL_UFFDIO_UNREGISTER, &range)
        }
    }

    /// Reads the page faults waiting on the descriptor (at most `limit`, up to 64 per call).
    /// Returns an empty list when none is waiting on a non-blocking descriptor. Events other
    /// than page faults (only reported for features asked for) are skipped.
    public func readFaults(limit: Int = 64) throws(SystemError) -> [PageFault] {
        let capacity = max(1, min(limit, 64))
        var events = [clinux_uffd_event](repeating: clinux_uffd_event(), count: capacity)
        let fd = rawValue
        // SAFETY: `events` holds `capacity` entries; the shim writes at most that many.
        let count = events.withUnsafeMutableBufferPointer { clinux_uffd_read_events(fd, $0.baseAddress, Int32(capacity)) }
        if count < 0 {
            let error = SystemError.current("read(userfaultfd)")
            if error.isWouldBlock || error.isInterrupted { return [] }
            throw error
        }
        return events.prefix(Int(count)).compactMap { event in
            guard event.event == UInt8(UFFD_EVENT_PAGEFAULT) else { return nil }
            return PageFault(address: event.address, isWrite: event.flags & UInt64(UFFD_PAGEFAULT_FLAG_WRITE) != 0,
                             threadID: event.thread_id)
        }
    }

    /// Atomically fills the missing pages `[destination, destination + length)` (page-aligned,
    /// registered) with a copy of `source`, then wakes the threads waiting on them unless
    /// `wake` is false. Partial progress (`EAGAIN` while the address space changes) is
    /// resumed until everything is copied.
    ///
    /// The corresponding ioctl is `UFFDIO_COPY`. `EEXIST` means a page of the range is
    /// already present (nothing after it was copied).
    public func copy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, length: Int, wake: Bool = true) throws(SystemError) {
        var done = 0
        while done < length {
            var request = uffdio_copy(
                dst: UInt64(UInt(bitPattern: destination + done)), src: UInt64(UInt(bitPattern: source + done)),
                len: UInt64(length - done), mode: wake ? 0 : CLINUX_UFFDIO_COPY_MODE_DONTWAKE, copy: 0)
            // SAFETY: `request` is a local uffdio_copy; the kernel reads `length - done` bytes
            // at `source + done`, which the caller provides.
            if clinux_ioctl_ptr(rawValue, IOCTL_UFFDIO_COPY, &request) == 0 { return }
            let error = SystemError.current("ioctl(userfaultfd, UFFDIO_COPY, \(Self.range(destination + done, length - done)))")
            if request.copy > 0 { done += Int(request.copy) }
            if error.errno == EAGAIN || error.errno == EINTR { continue }
            throw error
        }
    }

    /// Maps the zero page over the missing pages `[address, address + length)` (page-aligned,
    /// registered), then wakes the threads waiting on them unless `wake` is false. Memory
    /// is only allocated when the guest later writes a page.
    ///
    /// The corresponding ioctl is `UFFDIO_ZEROPAGE`.
    public func zeroPage(_ address: UnsafeMutableRawPointer, length: Int, wake: Bool = true) throws(SystemError) {
        var done = 0
        while done < length {
            var request = uffdio_zeropage(
                range: uffdio_range(start: UInt64(UInt(bitPattern: address + done)), len: UInt64(length - done)),
                mode: wake ? 0 : CLINUX_UFFDIO_ZEROPAGE_MODE_DONTWAKE, zeropage: 0)
            // SAFETY: `request` is a local uffdio_zeropage the kernel reads and fills in.
            if clinux_ioctl_ptr(rawValue, IOCTL_UFFDIO_ZEROPAGE, &request) == 0 { return }
            let error = SystemError.current("ioctl(userfaultfd, UFFDIO_ZEROPAGE, \(Self.range(address + done, length - done)))")
            if request.zeropage > 0 { done += Int(request.zeropage) }
            if error.errno == EAGAIN || error.errno == EINTR { continue }
            throw error
        }
    }

    /// Wakes the threads waiting on faults in `[address, address + length)` (after pages were
    /// filled with `wake: false`, or for a fault whose page another request already filled).
    ///
    /// The corresponding ioctl is `UFFDIO_WAKE`.
    public func wake(_ address: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
        var range = uffdio_range(start: UInt64(UInt(bitPattern: address)), len: UInt64(length))
        // SAFETY: `range` is a local uffdio_range the kernel reads.
        _ = try checked("ioctl(userfaultfd, UFFDIO_WAKE, \(Self.range(address, length)))") {
            clinux_ioctl_ptr(rawValue, IOCTL_UFFDIO_WAKE, &range)
        }
    }

    /// The ioctls `UFFDIO_REGISTER` allows on a range (bit `_UFFDIO_*` of its `ioctls` mask).
    public struct RangeIoctls: OptionSet, Sendable {
        /// The mask the kernel returned.
        public let rawValue: UInt64
        /// Creates the set from the kernel's mask.
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        /// `UFFDIO_COPY` is allowed.
        public static let copy = RangeIoctls(rawValue: CLINUX_UFFDIO_COPY_BIT)
        /// `UFFDIO_ZEROPAGE` is allowed (not on hugetlbfs).
        public static let zeroPage = RangeIoctls(rawValue: CLINUX_UFFDIO_ZEROPAGE_BIT)
    }

    /// `[start, end)` in hexadecimal, for error messages.
    static func range(_ address: UnsafeMutableRawPointer, _ length: Int) -> String {
        let start = UInt(bitPattern: address)
        return "[0x\(String(start, radix: 16)), 0x\(String(start &+ UInt(length), radix: 16)))"
    }

    /// `userfaultfd(2)` flags by name.
    static func describe(flags: Int32) -> String {
        var names: [String] = []
        if flags & O_CLOEXEC != 0 { names.append("O_CLOEXEC") }
        if flags & O_NONBLOCK != 0 { names.append("O_NONBLOCK") }
        if flags & CLINUX_UFFD_USER_MODE_ONLY != 0 { names.append("UFFD_USER_MODE_ONLY") }
        return names.isEmpty ? "0" : names.joined(separator: "|")
    }
}

/// Why a userfaultfd could not be set up.
public enum UserFaultFDError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The host refused to make a userfaultfd: the system call failed, and (when it failed
    /// with `EPERM`) so did `/dev/userfaultfd`.
    case unavailable(SystemError, device: SystemError?)
    /// The `UFFDIO_API` handshake failed.
    case handshakeFailed(SystemError)
    /// The kernel does not offer all of the features asked for.
    case featuresUnsupported(requested: UserFaultFD.Features, available: UserFaultFD.Features)

    /// A sentence naming the call, the errno and, for a refusal, the host setting behind it.
    public var description: String {
        switch self {
        case let .unavailable(error, device):
            var text = "userfaultfd is unavailable on this host: \(error)"
            switch error.errno {
            case EPERM:
                text += "; the kernel allows userfaultfd for kernel-mode faults only to privileged processes "
                    + "(CAP_SYS_PTRACE) while sysctl vm.unprivileged_userfaultfd is 0: run as root, set "
                    + "vm.unprivileged_userfaultfd=1, or give this user access to /dev/userfaultfd"
            case ENOSYS:
                text += "; the kernel was built without CONFIG_USERFAULTFD, or a seccomp filter forbids the call"
            case EINVAL:
                text += "; the kernel does not know one of the flags (UFFD_USER_MODE_ONLY needs Linux 5.11)"
            default:
                break
            }
            if let device { text += "; /dev/userfaultfd was tried too: \(device)" }
            return text + ". Restore guest memory with memory_restore_mode=copy instead."
        case let .handshakeFailed(error):
            return "the userfaultfd API handshake failed: \(error)"
        case let .featuresUnsupported(requested, available):
            let missing = requested.subtracting(available)
            return "userfaultfd features \(missing) were asked for but this kernel offers only \(available)"
        }
    }
}
