// What a filter does with a system call outside its allow-list, and which threads get which list.

/// What a thread's filter does with a system call outside its allow-list: Cloud Hypervisor's
/// `--seccomp true|log` (`--seccomp false` installs no filter at all).
public enum SeccompAction: String, CaseIterable, Equatable, Sendable, CustomStringConvertible {
    /// `--seccomp true`: the call traps (`SECCOMP_RET_TRAP`); the SIGSYS handler names the thread
    /// and the call on standard error and ends the process with status 159 (128 + SIGSYS).
    case trap = "true"
    /// `--seccomp log`: the kernel logs the call (`SECCOMP_RET_LOG`) and lets it proceed.
    case log = "log"

    /// The `--seccomp` value that selects the action (`true` or `log`).
    public var description: String { rawValue }
}

/// The threads of the VMM, each with an allow-list of its own.
///
/// Threads inherit their creator's filters, and a thread's filters all apply at once (the
/// strictest answer wins). The VMM thread's filter goes on first and every other thread
/// starts under it, so the ``vmm`` list holds every call the other lists allow.
public enum ThreadKind: String, CaseIterable, Equatable, Sendable, CustomStringConvertible {
    /// The main thread (lifecycle, VM creation and boot, signals turned into events) and the
    /// REST API's worker thread, which runs the same lifecycle actions.
    case vmm
    /// A vCPU thread (`vcpu<N>`, as Cloud Hypervisor names it): `KVM_RUN` and the device emulation its exits reach.
    case vcpu
    /// The REST API's event loop thread (`ch-api`): accepting, and HTTP on the Unix socket.
    case api
    /// The device event loop (`ch-event-loop`): virtqueues, disk and tap I/O, host input.
    case eventLoop = "event-loop"
    /// The thread that reads termination signals from a signalfd (`ch-signals`).
    case signalHandler = "signal-handler"
    /// The thread that waits for a VM to stop and tells the VMM (`ch-vm-watch`).
    case watcher

    /// The kind's name as messages print it (`vcpu`, `event-loop`).
    public var description: String { rawValue }
}
