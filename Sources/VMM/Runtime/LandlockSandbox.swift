// The VMM's Landlock sandbox (`--landlock`, `landlock_enable`), as Cloud Hypervisor applies it:
// made when the VM is created (or restored) from the paths its configuration names, and
// enforced on every thread that runs the VM's lifecycle. Landlock restricts only the calling
// thread and the threads it starts afterwards, so each thread that opens files enforces the
// ruleset itself before it does: the thread that creates the VM at once, the main thread
// (which reboots the VM when the guest resets) through its mailbox, every other REST API worker
// before its first lifecycle action. The VM's own threads (vCPUs, device event loop, watcher)
// start from a restricted thread and inherit it. Threads that open nothing (the REST API's
// event loop, the signal reader) drop all file access when `--landlock` is on the command line.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import HostSystem
import Logging

/// A VM's Landlock ruleset, built from its configuration's ``VMConfig/landlockPathRules``.
final class LandlockSandbox: Sendable {
    /// The rules, in the order they were added.
    let rules: [LandlockRule]
    private let ruleset: Landlock

    /// Builds the ruleset for `config` (plus `extra` rules, such as a restore's snapshot
    /// directory). Console files in `file` mode are created first if missing (Cloud Hypervisor
    /// creates them when the VM is created): a rule needs an existing path.
    init(config: VMConfig, extra: [LandlockRule] = [], logger: Logger? = nil) throws(LandlockError) {
        for console in [config.serial, config.console] where console.mode == .file {
            if let path = console.file { _ = try? OwnedFileDescriptor(path: path, flags: O_WRONLY | O_CREAT) }
        }
        if config.debugConsole.mode == .file, let path = config.debugConsole.file {
            _ = try? OwnedFileDescriptor(path: path, flags: O_WRONLY | O_CREAT)
        }
        let ruleset = try Landlock()
        let rules = config.landlockPathRules + extra
        for rule in rules {
            let allowed = try ruleset.allow(Self.access(rule.access, abi: ruleset.abi), beneath: rule.path)
            logger?.debug("Landlock: \(rule.path): \(allowed)")
        }
        logger?.info("Landlock ABI \(ruleset.abi): \(rules.count) rule(s)")
        self.rules = rules
        self.ruleset = ruleset
    }

    /// The rights `r`, `w` or `rw` stand for at `abi` (Cloud Hypervisor's `LandlockAccess`).
    static func access(_ letters: String, abi: Int) -> LandlockAccess {
        var access: LandlockAccess = []
        if letters.contains("r") { access.formUnion(.read(abi: abi)) }
        if letters.contains("w") { access.formUnion(.write(abi: abi)) }
        return access
    }

    /// Restricts the calling thread, unless it did so with this ruleset already.
    func enter() throws(LandlockError) {
        guard !ruleset.isEnforcedOnCurrentThread else { return }
        try ruleset.restrictSelf()
    }
}
