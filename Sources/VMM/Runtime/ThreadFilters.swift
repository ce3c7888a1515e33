import Seccomp

/// Installs the seccomp filter of a VM thread (`--seccomp`) on the calling thread.
enum ThreadFilters {
    /// Installs `kind`'s filter when `action` is set. A failure is reported to `exits` (the VM
    /// then stops with it, naming `thread`) and makes this return false: the thread must
    /// not go on to run guest code or devices without its filter.
    static func install(_ kind: ThreadKind, action: SeccompAction?, thread: String, exits: ExitSignal) -> Bool {
        guard let action else { return true }
        do {
            try Seccomp.install(for: kind, action: action)
            return true
        } catch {
            exits.report(.failure("\(thread): \(error)"))
            return false
        }
    }
}
