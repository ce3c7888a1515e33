// Installing a thread's filter, the SIGSYS report, and reading a thread's seccomp state.
import CLinux
import CSeccomp
import Synchronization

/// Per-thread seccomp filters for the VMM's threads (Cloud Hypervisor's `--seccomp`).
///
/// ```swift
/// // On a vCPU thread, before its first KVM_RUN:
/// try Seccomp.install(for: .vcpu, action: .trap)
/// ```
public enum Seccomp {
    /// Builds the filter for `kind` and loads it on the calling thread only. With ``SeccompAction/trap``
    /// the SIGSYS report is set up first (once per process): a forbidden call then prints
    /// `seccomp: thread <name> made forbidden syscall <number> (<name>)` on standard error and
    /// the process exits with status 159.
    public static func install(for kind: ThreadKind, action: SeccompAction) throws(SeccompError) {
        let filter = try SeccompFilter(kind: kind, action: action)
        if action == .trap { try SigsysReport.prepare() }
        clinux_sigsys_remember_thread_name()
        try filter.load()
    }

    /// How many system calls `kind` may make (with or without argument tests).
    public static func allowedSyscallCount(for kind: ThreadKind) -> Int {
        SeccompPolicy.allowedSyscalls(for: kind).count
    }
}

/// The SIGSYS handler and its syscall name table, set up once.
enum SigsysReport {
    private static let ready = Mutex(false)

    /// Fills the name table (libseccomp's names; the strings are kept for ever) and installs
    /// the handler, the first time only.
    static func prepare() throws(SeccompError) {
        try ready.withLock { (done: inout Bool) throws(SeccompError) in
            if done { return }
            for number in 0..<Int32(CLINUX_SIGSYS_NAME_COUNT) {
                if let name = seccomp_syscall_resolve_num_arch(UInt32(SCMP_ARCH_NATIVE), number) {
                    clinux_sigsys_set_syscall_name(number, name)
                }
            }
            guard clinux_sigsys_install() == 0 else { throw .signalHandler(errno: clinux_errno()) }
            done = true
        }
    }
}

/// A thread's seccomp state, as `/proc/<pid>/task/<tid>/status` shows it.
public struct ThreadSeccompState: Equatable, Sendable, CustomStringConvertible {
    /// `Seccomp:`: 0 none, 1 strict, 2 filter.
    public let mode: Int
    /// `Seccomp_filters:`: how many filters apply (its own and those it inherited).
    public let filters: Int

    /// Creates a state.
    public init(mode: Int, filters: Int) {
        self.mode = mode
        self.filters = filters
    }

    /// Reads the state of thread `thread` of process `process`; nil when the file cannot be
    /// read (the thread ended) or lacks the fields (kernels before 5.9 have no `Seccomp_filters`).
    public static func read(process: Int32, thread: Int32) -> ThreadSeccompState? {
        guard let text = readSmallFile("/proc/\(process)/task/\(thread)/status") else { return nil }
        var mode: Int?
        var filters: Int?
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let value = Int(parts[1].trimmingBlanks())
            if parts[0] == "Seccomp" { mode = value }
            if parts[0] == "Seccomp_filters" { filters = value }
        }
        guard let mode, let filters else { return nil }
        return ThreadSeccompState(mode: mode, filters: filters)
    }

    /// `Seccomp: 2, 3 filter(s)`.
    public var description: String { "Seccomp: \(mode), \(filters) filter(s)" }
}

/// The contents of a small text file (a /proc file), or nil.
func readSmallFile(_ path: String) -> String? {
    let fd = clinux_open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        // SAFETY: reads at most chunk.count bytes into chunk's own storage.
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && clinux_errno() == EINTR { continue }
        guard count > 0 else { break }
        bytes += chunk[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

extension Substring {
    /// Without leading and trailing spaces and tabs.
    func trimmingBlanks() -> Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result = result.dropFirst() }
        while let last = result.last, last == " " || last == "\t" { result = result.dropLast() }
        return result
    }
}
