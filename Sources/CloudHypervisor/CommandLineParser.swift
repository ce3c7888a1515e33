// The command line's grammar, as Cloud Hypervisor's (clap) reads it: `--name value` or
// `--name=value`; repeatable options take every value up to the next option and may be given
// again; flags take no value; `-v` counts (`-vv`); `-h`/`--help`, `-V`/`--version`.
// Written here rather than with swift-argument-parser: that library loads FoundationEssentials,
// whose pages cost an idle VMM about 3.4 MiB of resident memory (README, "Memory per VM").

/// What one option of a command stores.
enum OptionSlot<Command> {
    /// One value; given twice is an error, as in Cloud Hypervisor.
    case single(WritableKeyPath<Command, String?>)
    /// Values up to the next option; the option may be given again and its values add up.
    case multiple(WritableKeyPath<Command, [String]>)
    /// No value.
    case flag(WritableKeyPath<Command, Bool>)
    /// A short flag counted each time it appears (`-v`, `-vv`).
    case count(WritableKeyPath<Command, Int>)
}

/// One option: its name with dashes (`--kernel`, `-v`), what it stores, and its help.
struct OptionSpec<Command> {
    let name: String
    let slot: OptionSlot<Command>
    let help: String
    /// The name of the value in the help (`<kernel>`); nil for flags.
    var valueName: String? {
        switch slot {
        case .single, .multiple: String(name.drop(while: { $0 == "-" }))
        case .flag, .count: nil
        }
    }
}

/// A command line the grammar refuses, with the sentence to print.
struct CommandLineError: Error, CustomStringConvertible, Equatable {
    let description: String
}

/// What a command line asks for.
enum ParseOutcome<Command> {
    /// Run with these options.
    case run(Command)
    /// Print the help (`-h`, `--help`).
    case help
    /// Print the version (`-V`, `--version`).
    case version
}

/// Reads command lines against a table of options.
struct CommandLineParser<Command> {
    let options: [OptionSpec<Command>]

    private func spec(named name: String) -> OptionSpec<Command>? {
        options.first { $0.name == name }
    }

    /// Whether `argument` is where a list of values ends: anything that starts with `-` and is
    /// more than the dash alone (clap's rule for values without `allow_hyphen_values`).
    private static func isOption(_ argument: String) -> Bool {
        argument.hasPrefix("-") && argument.count > 1
    }

    /// Fills `command` from `arguments` (without the program name).
    func parse(_ arguments: [String], into command: Command) throws(CommandLineError) -> ParseOutcome<Command> {
        var command = command
        var given: Set<String> = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            switch argument {
            case "-h", "--help": return .help
            case "-V", "--version": return .version
            default: break
            }
            // Counted short flags, alone or run together (`-vvv`).
            if argument.hasPrefix("-"), !argument.hasPrefix("--"), argument.count > 1 {
                for letter in argument.dropFirst() {
                    guard let spec = spec(named: "-\(letter)"), case let .count(path) = spec.slot else {
                        throw CommandLineError(description: "unknown option '\(argument)'\(Self.hint)")
                    }
                    command[keyPath: path] += 1
                }
                continue
            }
            guard argument.hasPrefix("--") else {
                throw CommandLineError(description: "unexpected argument '\(argument)': every value follows the option it belongs to (--disk path=...)\(Self.hint)")
            }
            let name: String
            var inline: String?
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                inline = String(argument[argument.index(after: equals)...])
            } else {
                name = argument
            }
            guard let spec = spec(named: name) else {
                throw CommandLineError(description: "unknown option '\(name)'\(Self.hint)")
            }
            switch spec.slot {
            case let .flag(path):
                if inline != nil { throw CommandLineError(description: "\(name) takes no value, not '\(argument)'") }
                command[keyPath: path] = true
            case let .count(path):
                if inline != nil { throw CommandLineError(description: "\(name) takes no value, not '\(argument)'") }
                command[keyPath: path] += 1
            case let .single(path):
                guard !given.contains(name) else {
                    throw CommandLineError(description: "\(name) given more than once: it takes one value (\(name) <\(spec.valueName ?? "")>)")
                }
                given.insert(name)
                if inline == nil, index < arguments.count, !Self.isOption(arguments[index]) {
                    inline = arguments[index]
                    index += 1
                }
                guard let value = inline else {
                    throw CommandLineError(description: "\(name) needs a value: \(name) <\(spec.valueName ?? "")>")
                }
                command[keyPath: path] = value
            case let .multiple(path):
                var values: [String] = inline.map { [$0] } ?? []
                while inline == nil, index < arguments.count, !Self.isOption(arguments[index]) {
                    values.append(arguments[index])
                    index += 1
                }
                guard !values.isEmpty else {
                    throw CommandLineError(description: "\(name) needs at least one value: \(name) <\(spec.valueName ?? "")>...")
                }
                command[keyPath: path] += values
            }
        }
        return .run(command)
    }

    private static var hint: String { "; see --help for the options" }

    /// The help text: the abstract, the usage line and one entry per option.
    func help(program: String, abstract: String) -> String {
        var text = "\(abstract)\n\nUsage: \(program) [OPTIONS]\n\nOptions:\n"
        for spec in options {
            var label = spec.name
            switch spec.slot {
            case .single: label += " <\(spec.valueName ?? "")>"
            case .multiple: label += " <\(spec.valueName ?? "")>..."
            case .flag, .count: break
            }
            text += "  \(label)\n          \(spec.help)\n"
        }
        text += "  -h, --help\n          Print help\n  -V, --version\n          Print version\n"
        return text
    }
}
