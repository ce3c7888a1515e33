import Testing
import TestSupport
@testable import CloudHypervisor

/// The command-line grammar of `cloud-hypervisor` (clap's, as Cloud Hypervisor reads it).
@Suite("Command-line parser")
struct CommandLineParserTests {
    static func parse(_ arguments: [String]) throws(CommandLineError) -> CloudHypervisorCommand {
        try CloudHypervisorCommand.parse(CloudHypervisorCommand.normalize(arguments))
    }

    @Test("values follow their option, after a space or an equals sign")
    func values() throws {
        let command = try Self.parse(["--kernel", "/k", "--cmdline=console=ttyS0 root=/dev/vda", "--memory=size=1G"])
        #expect(command.kernel == "/k" && command.cmdline == "console=ttyS0 root=/dev/vda" && command.memory == "size=1G")
        #expect(command.seccomp == nil && command.verbosity == 0 && !command.landlock)
    }

    @Test("repeatable options take every value up to the next option, and add up when given again")
    func repeatable() throws {
        let command = try Self.parse(["--disk", "path=a", "path=b", "--net", "tap=t0", "--disk=path=c", "--disk", "path=d", "-v"])
        #expect(command.disk == ["path=a", "path=b", "path=c", "path=d"])
        #expect(command.net == ["tap=t0"] && command.verbosity == 1)
        // A lone dash is a value, not an option.
        #expect(try Self.parse(["--landlock-rules", "-", "path=/x,access=r"]).landlockRules == ["-", "path=/x,access=r"])
    }

    @Test("flags and counted -v")
    func flags() throws {
        let command = try Self.parse(["-vv", "--landlock", "-v", "--pvpanic"])
        #expect(command.verbosity == 3 && command.landlock && command.pvpanic && !command.watchdog)
        #expect(throws: CommandLineError.self) { try Self.parse(["--landlock=on"]) }
        #expect(throws: CommandLineError.self) { try Self.parse(["-vq"]) }
    }

    @Test("refusals name the option and what it takes", arguments: [
        (["--frobnicate"], "unknown option '--frobnicate'"),
        (["--frobnicate=1"], "unknown option '--frobnicate'"),
        (["--kernel"], "--kernel needs a value"),
        (["--kernel", "--cpus", "boot=1"], "--kernel needs a value"),
        (["--kernel", "a", "--kernel", "b"], "--kernel given more than once"),
        (["--disk"], "--disk needs at least one value"),
        (["--disk", "--net", "tap="], "--disk needs at least one value"),
        (["stray"], "unexpected argument 'stray'"),
        (["-x"], "unknown option '-x'"),
    ])
    func refusals(arguments: [String], message: String) {
        let error = #expect(throws: CommandLineError.self) { try Self.parse(arguments) }
        #expect(error?.description.contains(message) == true, "\(error?.description ?? "")")
    }

    @Test("--help and --version are answered by main, not parsed into a command")
    func helpAndVersion() throws {
        let parser = CloudHypervisorCommand.parser
        for arguments in [["--help"], ["-h"], ["--kernel", "k", "--help"]] {
            guard case .help = try parser.parse(arguments, into: CloudHypervisorCommand()) else {
                Issue.record("\(arguments) is not a help request")
                continue
            }
        }
        guard case .version = try parser.parse(["-V"], into: CloudHypervisorCommand()) else {
            Issue.record("-V is not a version request")
            return
        }
        let help = parser.help(program: "cloud-hypervisor", abstract: CloudHypervisorCommand.abstract)
        for spec in parser.options { #expect(help.contains("  \(spec.name)"), "\(spec.name) missing from the help") }
        #expect(help.contains("--disk <disk>...") && help.contains("--kernel <kernel>\n"))
    }

    @Test("every option in the table has a distinct name")
    func distinctNames() {
        let names = CloudHypervisorCommand.parser.options.map(\.name)
        #expect(Set(names).count == names.count)
    }

    @Test("random argument lists parse or are refused, never crash")
    func randomArguments() {
        var random = SplitMix64(seed: 0x636c69)
        let words = CloudHypervisorCommand.parser.options.map(\.name) + ["-", "-v", "-vv", "x", "path=a", "--", "=", "--kernel=", "-h"]
        for _ in 0..<2_000 {
            let count = Int.random(in: 0...8, using: &random)
            let arguments = (0..<count).map { _ in words.randomElement(using: &random)! }
            do {
                _ = try CloudHypervisorCommand.parser.parse(arguments, into: CloudHypervisorCommand())
            } catch {
                #expect(!error.description.isEmpty)
            }
        }
    }
}
