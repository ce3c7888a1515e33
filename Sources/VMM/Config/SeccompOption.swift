// `--seccomp`: Cloud Hypervisor's switch for the per-thread seccomp filters.
import Seccomp

extension SeccompAction {
    /// The accepted `--seccomp` values.
    public static let syntax = "true|false|log"

    /// Parses a `--seccomp` value: `true` (a forbidden call ends the VMM), `log` (the kernel
    /// logs it and it proceeds), or `false` (no filters: nil).
    public static func parse(_ text: String, option: String = "--seccomp") throws(ConfigError) -> SeccompAction? {
        switch text {
        case "true": return .trap
        case "log": return .log
        case "false": return nil
        default: throw ConfigError(option: option, "'\(text)' is not accepted; accepted values: true, false, log")
        }
    }
}
