import HostSystem
import Synchronization

/// Why a running VM stopped.
public enum VMExitReason: Equatable, Sendable, CustomStringConvertible {
    /// The guest powered off.
    case shutdown
    /// The guest asked for a reset (i8042 reset pulse, triple fault, reset event): the VMM reboots it.
    case reset
    /// The VMM was asked to stop by a signal (its number).
    case signal(Int32)
    /// Something failed; the text says what.
    case failure(String)
    /// The control plane stopped the VM (`vm.shutdown`, `vm.reboot`, `vm.delete`, `vmm.shutdown`).
    case requested

    /// A sentence for logs.
    public var description: String {
        switch self {
        case .shutdown: return "the guest shut down"
        case .reset: return "the guest asked for a reset"
        case .signal(let number): return "stopped by signal \(number)"
        case .failure(let text): return "failed: \(text)"
        case .requested: return "stopped by the control plane"
        }
    }
}

/// Collects the first reason a VM must stop, from any thread, and wakes the thread waiting
/// for it. Later reports are ignored: the first cause is the one that counts.
public final class ExitSignal: Sendable {
    private let reason = Mutex<VMExitReason?>(nil)
    private let event: EventFD

    /// Creates the signal with a blocking eventfd to wait on.
    public init() throws(SystemError) {
        event = try EventFD(nonBlocking: false)
    }

    /// Records `reason` if none was recorded yet, and wakes `wait()`.
    public func report(_ reason: VMExitReason) {
        let first = self.reason.withLock { (current: inout VMExitReason?) -> Bool in
            guard current == nil else { return false }
            current = reason
            return true
        }
        if first { try? event.signal() }
    }

    /// The recorded reason, if any.
    public var current: VMExitReason? { reason.withLock { $0 } }

    /// Blocks until a reason is reported, and returns it.
    public func wait() -> VMExitReason {
        while true {
            if let reason = current { return reason }
            _ = try? event.read()
        }
    }
}
