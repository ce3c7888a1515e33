// The `cloud-hypervisor` command: Cloud Hypervisor's options, parsed into a VMConfig, validated,
// and handed to the VMM. Exit status 0 when the guest shut down, 1 when anything failed.
import ArgumentParser
import HostSystem
import Logging
import VMM

@main
struct CloudHypervisorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cloud-hypervisor",
        abstract: "Launch a cloud-hypervisor VMM (Cloud Hypervisor in Swift).",
        version: "cloud-hypervisor v\(VMMVersion.string)")

    @Option(help: "Kernel to boot: an ELF vmlinux with a PVH entry note, or a bzImage.")
    var kernel: String?

    @Option(help: "Initramfs image.")
    var initramfs: String?

    @Option(help: "Kernel command line.")
    var cmdline: String?

    @Option(help: ArgumentHelp("\(CpusConfig.syntax) [default: boot=1]", valueName: "cpus"))
    var cpus: String?

    @Option(help: ArgumentHelp("\(MemoryConfig.syntax) [default: size=512M]", valueName: "memory"))
    var memory: String?

    @Option(help: ArgumentHelp("Serial port (16550 at 0x3f8): \(ConsoleConfig.syntax) [default: null]", valueName: "serial"))
    var serial: String?

    @Option(help: ArgumentHelp("Virtio console (hvc0): \(ConsoleConfig.syntax) [default: tty]", valueName: "console"))
    var console: String?

    @Option(help: ArgumentHelp("Random number generator (virtio-rng): \(RngConfig.syntax) [default: src=/dev/urandom]", valueName: "rng"))
    var rng: String?

    @Option(parsing: .upToNextOption,
            help: ArgumentHelp("Disk (virtio-blk), repeatable: \(DiskConfig.syntax)", valueName: "disk"))
    var disk: [String] = []

    @Option(name: .customLong("log-file"), help: "Write the VMM's log to this file instead of standard error.")
    var logFile: String?

    @Flag(name: .customShort("v"), help: "More log output (repeat: -v info, -vv debug, -vvv trace).")
    var verbosity: Int

    func makeConfig() throws(ConfigError) -> VMConfig {
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: kernel, cmdline: cmdline, initramfs: initramfs)
        if let cpus { config.cpus = try CpusConfig.parse(cpus) }
        if let memory { config.memory = try MemoryConfig.parse(memory) }
        if let serial { config.serial = try ConsoleConfig.parse(serial, option: "--serial") }
        if let console { config.console = try ConsoleConfig.parse(console, option: "--console") }
        if let rng { config.rng = try RngConfig.parse(rng) }
        if !disk.isEmpty { config.disks = try disk.map { (text) throws(ConfigError) in try DiskConfig.parse(text) } }
        try config.validate()
        return config
    }

    func run() throws {
        let level: Logger.Level = [.warning, .info, .debug, .trace][min(verbosity, 3)]
        let logging = try LogSetup(level: level, file: logFile)
        let config: VMConfig
        do {
            config = try makeConfig()
        } catch {
            throw ValidationError(error.description)
        }
        let logger = logging.logger(label: "cloud-hypervisor")
        do {
            try VMMRunner(config: config, logger: logger).run()
        } catch {
            logger.error("\(error)")
            writeToStandardError("cloud-hypervisor: \(error)\n")
            throw ExitCode.failure
        }
    }
}
