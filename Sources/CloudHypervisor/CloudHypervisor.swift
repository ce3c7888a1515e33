// The `cloud-hypervisor` command: Cloud Hypervisor's options, parsed into a VMConfig, validated,
// and handed to the VMM. Exit status 0 when the guest shut down, 1 when anything failed.
import ArgumentParser
import CloudHypervisorAPI
import Glibc
import HostSystem
import Logging
import Seccomp
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

    @Option(parsing: .upToNextOption,
            help: ArgumentHelp("Network device (virtio-net over TAP), repeatable: \(NetConfig.syntax)", valueName: "net"))
    var net: [String] = []

    @Option(name: .customLong("rate-limit-group"), parsing: .upToNextOption,
            help: ArgumentHelp("Rate limit shared by the disks that name it (rate_limit_group=), repeatable: \(RateLimitGroupConfig.syntax)",
                               valueName: "rate-limit-group"))
    var rateLimitGroup: [String] = []

    @Option(name: .customLong("api-socket"),
            help: ArgumentHelp("HTTP API socket: \(APISocketConfig.syntax); without --kernel the VMM waits for vm.create and vm.boot", valueName: "api-socket"))
    var apiSocket: String?

    @Option(name: .customLong("event-monitor"), help: ArgumentHelp("Lifecycle events as JSON: \(EventMonitorConfig.syntax)", valueName: "event-monitor"))
    var eventMonitor: String?

    @Option(name: .customLong("log-file"), help: "Write the VMM's log to this file instead of standard error.")
    var logFile: String?

    @Option(help: ArgumentHelp("Seccomp filters on the VMM's threads: \(SeccompAction.syntax) (true: a forbidden system call ends the VMM; log: the kernel logs it) [default: true]", valueName: "seccomp"))
    var seccomp = "true"

    @Flag(name: .customShort("v"), help: "More log output (repeat: -v info, -vv debug, -vvv trace).")
    var verbosity: Int

    /// The VM the command line describes, validated; nil when only `--api-socket` is given
    /// (the VM then comes from `vm.create`).
    func makeConfig() throws(ConfigError) -> VMConfig? {
        let describesVM = kernel != nil || initramfs != nil || cmdline != nil || cpus != nil || memory != nil || !disk.isEmpty || !net.isEmpty
        if apiSocket != nil && !describesVM { return nil }
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: kernel, cmdline: cmdline, initramfs: initramfs)
        if let cpus { config.cpus = try CpusConfig.parse(cpus) }
        if let memory { config.memory = try MemoryConfig.parse(memory) }
        if let serial { config.serial = try ConsoleConfig.parse(serial, option: "--serial") }
        if let console { config.console = try ConsoleConfig.parse(console, option: "--console") }
        if let rng { config.rng = try RngConfig.parse(rng) }
        if !disk.isEmpty { config.disks = try disk.map { (text) throws(ConfigError) in try DiskConfig.parse(text) } }
        if !net.isEmpty { config.net = try net.map { (text) throws(ConfigError) in try NetConfig.parse(text) } }
        if !rateLimitGroup.isEmpty {
            config.rateLimitGroups = try rateLimitGroup.map { (text) throws(ConfigError) in try RateLimitGroupConfig.parse(text) }
        }
        try config.validate()
        return config
    }

    func run() throws {
        let level: Logger.Level = [.warning, .info, .debug, .trace][min(verbosity, 3)]
        let logging = try LogSetup(level: level, file: logFile)
        let config: VMConfig?
        let socket: APISocketConfig?
        let monitorConfig: EventMonitorConfig?
        let filters: SeccompAction?
        do {
            config = try makeConfig()
            socket = try apiSocket.map { (text) throws(ConfigError) in try APISocketConfig.parse(text) }
            monitorConfig = try eventMonitor.map { (text) throws(ConfigError) in try EventMonitorConfig.parse(text) }
            filters = try SeccompAction.parse(seccomp)
        } catch {
            throw ValidationError(error.description)
        }
        // A client that goes away must not kill the VMM (writes then fail with EPIPE).
        signal(SIGPIPE, SIG_IGN)
        let logger = logging.logger(label: "cloud-hypervisor")
        // The VMM thread's filter first: every thread started from here on inherits it.
        if let filters {
            do {
                try Seccomp.install(for: .vmm, action: filters)
            } catch {
                let message = "--seccomp \(filters): \(error) (--seccomp false runs without filters)"
                logger.error("\(message)")
                writeToStandardError("cloud-hypervisor: \(message)\n")
                throw ExitCode.failure
            }
        }
        do {
            let monitor = try monitorConfig.map { try EventMonitor($0) }
            let runner = try VMMRunner(config: config, logger: logger, monitor: monitor, seccomp: filters)
            var server: APIServer?
            if let socket {
                var settings = APIServer.Configuration()
                if let filters {
                    // The event loop serves the socket; the worker runs lifecycle actions as the VMM thread does.
                    settings.threadSetup = { role in try Seccomp.install(for: role == .eventLoop ? .api : .vmm, action: filters) }
                }
                let api = APIServer(socket: socket, control: runner.controller, configuration: settings,
                                    logger: logging.logger(label: "cloud-hypervisor.api"))
                try api.start()
                logger.info("API server on \(socket)")
                server = api
            }
            defer { server?.stop() }
            try runner.run()
        } catch {
            logger.error("\(error)")
            writeToStandardError("cloud-hypervisor: \(error)\n")
            throw ExitCode.failure
        }
    }
}
