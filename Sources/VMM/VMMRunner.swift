import CLinux
import HostSystem
import Hypervisor
import Logging
import Seccomp

/// The VMM's version.
public enum VMMVersion {
    /// The Cloud Hypervisor release whose command line and REST API this VMM implements
    /// (`version` in `vmm.ping`, Cloud Hypervisor's `CARGO_PKG_VERSION`).
    public static let cloudHypervisor = "53.0.0"
    /// This project's own version.
    public static let project = "0.2.0"
    /// The build version as Cloud Hypervisor writes it (`v<release>`), with this project's
    /// version after a hyphen as Cloud Hypervisor's `CH_EXTRA_VERSION` adds one:
    /// `v53.0.0-swift.0.2.0`. Clients such as libvirt read the release up to the first `-`.
    public static let build = "v\(cloudHypervisor)-swift.\(project)"
    /// The version string printed by `--version` and `-V` after the program name.
    public static let string = build
}

/// Why the VMM could not run the VM.
public struct VMMError: Error, CustomStringConvertible {
    /// The sentence.
    public let description: String
}

/// Runs the VMM the way the command line asks: boots the VM given on the command line (if
/// any) through a ``VMMController`` and waits until the VMM should exit. The REST API, when
/// it runs, drives the same controller.
public final class VMMRunner {
    let config: VMConfig?
    /// A snapshot to restore at start (`--restore`), instead of booting `config`.
    public var restore: RestoreConfig?
    let logger: Logger
    /// The lifecycle the VMM runs.
    public let controller: VMMController

    /// Prepares the VMM: `config` is booted at once when given (the command line had a
    /// `--kernel`); without it the VMM waits for `vm.create` and `vm.boot`. With `seccomp`
    /// set, the VMM's other threads install their filters (the caller installs the VMM
    /// thread's own, ``ThreadKind/vmm``, before anything else). With `landlock` (the command
    /// line's `--landlock`) the signal thread drops all file access.
    /// With `releaseStartupPages`, see ``VMMController/init(logger:monitor:seccomp:landlock:releaseStartupPages:)``.
    public init(config: VMConfig?, logger: Logger, monitor: EventMonitor? = nil, seccomp: SeccompAction? = nil, landlock: Bool = false,
                releaseStartupPages: Bool = false) throws {
        self.config = config
        self.logger = logger
        controller = try VMMController(logger: logger, monitor: monitor, seccomp: seccomp, landlock: landlock,
                                       releaseStartupPages: releaseStartupPages)
    }

    /// Boots the configured VM (if any) and runs until the guest powers off, a termination
    /// signal arrives or `vmm.shutdown` is asked (returns), or something fails (throws).
    public func run() throws {
        if let restore {
            do {
                try controller.restore(restore, descriptors: [])
            } catch {
                switch error {
                case .failed(_, let reason): throw VMMError(description: reason)
                default: throw VMMError(description: error.description)
                }
            }
        } else if let config {
            do {
                try controller.create(config)
                try controller.boot()
            } catch {
                switch error {
                case .failed(_, let reason): throw VMMError(description: reason)
                default: throw VMMError(description: error.description)
                }
            }
        }
        switch controller.run() {
        case .finished(let reason):
            logger.info("VMM exits: \(reason)")
        case .failed(let reason):
            throw VMMError(description: reason)
        }
    }
}
