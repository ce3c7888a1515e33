import CLinux

/// The real-time signal that kicks a vCPU thread out of a blocking `KVM_RUN`.
///
/// A no-op handler without `SA_RESTART` makes the interrupted `KVM_RUN` return `EINTR`.
/// To close the race where the signal lands just before the thread enters the kernel, the
/// kicker also sets `kvm_run.immediate_exit`, which makes the next `KVM_RUN` return at once
/// (see the KVM API document, `immediate_exit`).
public enum KickSignal {
    /// The signal number used: `SIGRTMIN + 0`, as Cloud Hypervisor does.
    public static var number: Int32 { clinux_sigrtmin() }

    /// Installs the no-op handler for the kick signal, process-wide. Idempotent.
    public static func install() throws(SystemError) {
        _ = try checked("sigaction(SIGRTMIN)") { clinux_install_noop_handler(number) }
    }

    /// Makes sure the calling thread can receive the kick signal.
    public static func unblockInCurrentThread() throws(SystemError) {
        let result = clinux_unblock_signal(number)
        if result != 0 { throw SystemError(call: "pthread_sigmask(SIG_UNBLOCK)", errno: result) }
    }

    /// Keeps the kick signal away from the calling thread (for threads that are not vCPUs).
    public static func blockInCurrentThread() throws(SystemError) {
        let result = clinux_block_signal(number)
        if result != 0 { throw SystemError(call: "pthread_sigmask(SIG_BLOCK)", errno: result) }
    }
}
