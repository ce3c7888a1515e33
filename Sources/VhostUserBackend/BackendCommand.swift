#if canImport(Glibc)
import Glibc
#endif
import Logging

/// The command-line frame the back-end commands share (`vhost_user_block`, `vhost_user_net`), as
/// Cloud Hypervisor's: one option whose value is a `key=value,...` list, `-h`/`--help`,
/// `-V`/`--version`; errors go to standard error and end the process with status 1.
public struct BackendCommand: Sendable {
    /// The program's name (`vhost_user_block`).
    public let program: String
    /// The one option (`--block-backend`).
    public let option: String
    /// What `--help` says the program does.
    public let about: String
    /// Cloud Hypervisor's syntax line for the option's value.
    public let syntax: String
    /// The version printed by `-V`.
    public let version: String

    /// A command frame.
    public init(program: String, option: String, about: String, syntax: String, version: String) {
        self.program = program
        self.option = option
        self.about = about
        self.syntax = syntax
        self.version = version
    }

    /// Writes `program: message` to standard error and exits with status 1.
    public func fail(_ message: String) -> Never {
        let line = Array("\(program): \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        exit(1)
    }

    /// The option's value from `arguments` (without the program name); `--help` and
    /// `--version` print and exit, anything else unknown fails naming it.
    public func optionValue(_ arguments: [String]) -> String {
        var arguments = arguments[...]
        var value: String?
        while let argument = arguments.popFirst() {
            switch argument {
            case "-h", "--help":
                print("\(about)\n\nUsage: \(program) \(option) <\(option.dropFirst(2))>\n\n  \(option) <\(option.dropFirst(2))>  \(syntax)")
                exit(0)
            case "-V", "--version":
                print("\(program) \(version)")
                exit(0)
            case option:
                guard let next = arguments.popFirst() else { fail("\(option) needs a value: \(syntax)") }
                value = next
            default:
                guard argument.hasPrefix(option + "=") else { fail("unknown argument '\(argument)'; usage: \(program) \(option) \(syntax)") }
                value = String(argument.dropFirst(option.count + 1))
            }
        }
        guard let value else { fail("\(option) is required: \(syntax)") }
        return value
    }

    /// Logs at `info` and above to standard error; returns the program's logger.
    public func bootstrapLogging() -> Logger {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        return Logger(label: program)
    }
}
