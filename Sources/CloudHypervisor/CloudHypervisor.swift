// The `cloud-hypervisor` command: Cloud Hypervisor's options, parsed into a VMConfig, validated,
// and handed to the VMM. Exit status 0 when the guest shut down, 1 when anything failed.
import CloudHypervisorAPI
import Glibc
import HostSystem
import Logging
import Seccomp
import VMM

@main
struct CloudHypervisorCommand {
    static let abstract = "Launch a cloud-hypervisor VMM (Cloud Hypervisor in Swift)."
    static let version = "cloud-hypervisor \(VMMVersion.build)"

    // One property per option; `parser` below maps the options to them.
    var kernel: String?
    var initramfs: String?
    var cmdline: String?
    var cpus: String?
    var memory: String?
    var serial: String?
    var console: String?
    var debugConsole: String?
    var rng: String?
    var disk: [String] = []
    var net: [String] = []
    var rateLimitGroup: [String] = []
    var memoryZone: [String] = []
    var firmware: String?
    var igvm: String?
    var hostData: String?
    var balloon: String?
    var fs: [String] = []
    var pmem: [String] = []
    var device: [String] = []
    var userDevice: [String] = []
    var vdpa: [String] = []
    var genericVhostUser: [String] = []
    var vsock: String?
    var rtc: String?
    var numa: [String] = []
    var platform: String?
    var pciSegment: [String] = []
    var tpm: String?
    var pvpanic = false
    var watchdog = false
    var landlock = false
    var landlockRules: [String] = []
    var restore: String?
    var noShutdown = false
    var apiSocket: String?
    var eventMonitor: String?
    var logFile: String?
    var seccomp: String?
    var verbosity = 0

    /// Cloud Hypervisor's options, in its help's order, and where each is stored.
    static var parser: CommandLineParser<CloudHypervisorCommand> { CommandLineParser(options: [
        OptionSpec(name: "--kernel", slot: .single(\.kernel), help: "Kernel to boot: an ELF vmlinux with a PVH entry note, or a bzImage."),
        OptionSpec(name: "--initramfs", slot: .single(\.initramfs), help: "Initramfs image."),
        OptionSpec(name: "--cmdline", slot: .single(\.cmdline), help: "Kernel command line."),
        OptionSpec(name: "--cpus", slot: .single(\.cpus), help: "\(CpusConfig.syntax) [default: boot=1]"),
        OptionSpec(name: "--memory", slot: .single(\.memory), help: "\(MemoryConfig.syntax) [default: size=512M]"),
        OptionSpec(name: "--serial", slot: .single(\.serial), help: "Serial port (16550 at 0x3f8): \(ConsoleConfig.serialSyntax) [default: null]"),
        OptionSpec(name: "--console", slot: .single(\.console), help: "Virtio console (hvc0): \(ConsoleConfig.syntax) [default: tty]"),
        OptionSpec(name: "--debug-console", slot: .single(\.debugConsole), help: "Debug console port: \(DebugConsoleConfig.syntax) [default: off,iobase=0xe9]"),
        OptionSpec(name: "--rng", slot: .single(\.rng), help: "Random number generator (virtio-rng): \(RngConfig.syntax) [default: src=/dev/urandom; a bare --rng means the default]"),
        OptionSpec(name: "--disk", slot: .multiple(\.disk), help: "Disk (virtio-blk), repeatable: \(DiskConfig.syntax)"),
        OptionSpec(name: "--net", slot: .multiple(\.net), help: "Network device (virtio-net over TAP), repeatable: \(NetConfig.syntax)"),
        OptionSpec(name: "--rate-limit-group", slot: .multiple(\.rateLimitGroup), help: "Rate limit shared by the disks that name it (rate_limit_group=), repeatable: \(RateLimitGroupConfig.syntax)"),
        OptionSpec(name: "--memory-zone", slot: .multiple(\.memoryZone), help: "Memory zone, repeatable (absent here): \(MemoryZoneConfig.syntax)"),
        OptionSpec(name: "--firmware", slot: .single(\.firmware), help: "Firmware to boot (absent here)."),
        OptionSpec(name: "--igvm", slot: .single(\.igvm), help: "IGVM file to boot (absent here)."),
        OptionSpec(name: "--host-data", slot: .single(\.hostData), help: "SEV-SNP host data (absent here)."),
        OptionSpec(name: "--balloon", slot: .single(\.balloon), help: "Balloon: \(BalloonConfig.syntax)"),
        OptionSpec(name: "--fs", slot: .multiple(\.fs), help: "virtio-fs (a vhost-user back-end such as virtiofsd; needs --memory shared=on), repeatable: \(FsConfig.syntax)"),
        OptionSpec(name: "--pmem", slot: .multiple(\.pmem), help: "virtio-pmem, repeatable: \(PmemConfig.syntax)"),
        OptionSpec(name: "--device", slot: .multiple(\.device), help: "VFIO device, repeatable (absent here): \(DeviceConfig.syntax)"),
        OptionSpec(name: "--user-device", slot: .multiple(\.userDevice), help: "vfio-user device, repeatable (absent here): \(UserDeviceConfig.syntax)"),
        OptionSpec(name: "--vdpa", slot: .multiple(\.vdpa), help: "vDPA device, repeatable (absent here): \(VdpaConfig.syntax)"),
        OptionSpec(name: "--generic-vhost-user", slot: .multiple(\.genericVhostUser), help: "Generic vhost-user device, repeatable (absent here): \(GenericVhostUserConfig.syntax)"),
        OptionSpec(name: "--vsock", slot: .single(\.vsock), help: "virtio-vsock, Cloud Hypervisor's hybrid vsock: \(VsockConfig.syntax)"),
        OptionSpec(name: "--rtc", slot: .single(\.rtc), help: "virtio RTC (absent here): \(RtcConfig.syntax); a bare --rtc enables it"),
        OptionSpec(name: "--numa", slot: .multiple(\.numa), help: "Guest NUMA node, repeatable (absent here): \(NumaConfig.syntax)"),
        OptionSpec(name: "--platform", slot: .single(\.platform), help: "Platform settings: \(PlatformConfig.syntax)"),
        OptionSpec(name: "--pci-segment", slot: .multiple(\.pciSegment), help: "PCI segment aperture weights, repeatable: \(PciSegmentConfig.syntax)"),
        OptionSpec(name: "--tpm", slot: .single(\.tpm), help: "TPM (absent here): \(TpmConfig.syntax)"),
        OptionSpec(name: "--pvpanic", slot: .flag(\.pvpanic), help: "pvpanic device (absent here)."),
        OptionSpec(name: "--watchdog", slot: .flag(\.watchdog), help: "virtio-watchdog (absent here)."),
        OptionSpec(name: "--landlock", slot: .flag(\.landlock), help: "Sandbox the VMM with Landlock: after the VM is created it reaches only the files its configuration and --landlock-rules name."),
        OptionSpec(name: "--landlock-rules", slot: .multiple(\.landlockRules), help: "Extra paths the Landlock sandbox allows (for hotplug, snapshots), repeatable: \(LandlockConfig.syntax)"),
        OptionSpec(name: "--restore", slot: .single(\.restore), help: "Restore from a VM snapshot: source_url=<url>,prefault=on|off,resume=on|off,memory_restore_mode=copy|ondemand"),
        OptionSpec(name: "--no-shutdown", slot: .flag(\.noShutdown), help: "Keep the VMM when the guest shuts down (absent here)."),
        OptionSpec(name: "--api-socket", slot: .single(\.apiSocket), help: "HTTP API socket: \(APISocketConfig.syntax); without --kernel the VMM waits for vm.create and vm.boot"),
        OptionSpec(name: "--event-monitor", slot: .single(\.eventMonitor), help: "Lifecycle events as JSON: \(EventMonitorConfig.syntax)"),
        OptionSpec(name: "--log-file", slot: .single(\.logFile), help: "Write the VMM's log to this file instead of standard error."),
        OptionSpec(name: "--seccomp", slot: .single(\.seccomp), help: "Seccomp filters on the VMM's threads: \(SeccompAction.syntax) (true: a forbidden system call ends the VMM; log: the kernel logs it) [default: true]"),
        OptionSpec(name: "-v", slot: .count(\.verbosity), help: "More log output (repeat: -v info, -vv debug, -vvv trace)."),
    ]) }

    /// Options Cloud Hypervisor accepts with no value: a bare `--rng` means its default source,
    /// a bare `--rtc` enables the device with defaults. `-V` is `--version`.
    static func normalize(_ arguments: [String]) -> [String] {
        var result: [String] = []
        for (index, argument) in arguments.enumerated() {
            if argument == "-V" {
                result.append("--version")
                continue
            }
            result.append(argument)
            let next = index + 1 < arguments.count ? arguments[index + 1] : nil
            let valueFollows = next.map { !$0.hasPrefix("-") } ?? false
            if argument == "--rng", !valueFollows { result.append("src=/dev/urandom") }
            if argument == "--rtc", !valueFollows { result.append("") }
        }
        return result
    }

    /// The command the arguments describe (without the program name; after `normalize(_:)`).
    /// `--help` and `--version` are refused here: `main()` answers them.
    static func parse(_ arguments: [String]) throws(CommandLineError) -> CloudHypervisorCommand {
        switch try parser.parse(arguments, into: CloudHypervisorCommand()) {
        case let .run(command): return command
        case .help, .version: throw CommandLineError(description: "--help and --version print and exit")
        }
    }

    /// Parses the process's arguments after `normalize(_:)` and runs the command: exit status 0
    /// when the guest shut down (or after `--help`, `--version`), 64 for a bad command line,
    /// 1 when anything else failed.
    static func main() {
        // One malloc arena for every thread: about 250 KiB less private memory per VMM
        // (measured with an idle guest, README "Memory per VM").
        MallocArenas.useOne()
        let command: CloudHypervisorCommand
        do {
            switch try parser.parse(normalize(Array(CommandLine.arguments.dropFirst())), into: CloudHypervisorCommand()) {
            case let .run(parsed): command = parsed
            case .help:
                print(parser.help(program: "cloud-hypervisor", abstract: abstract), terminator: "")
                exit(0)
            case .version:
                print(version)
                exit(0)
            }
        } catch {
            writeToStandardError("cloud-hypervisor: error: \(error)\n")
            exit(64)
        }
        do {
            try command.run()
        } catch let error as CommandLineError {
            writeToStandardError("cloud-hypervisor: error: \(error)\n")
            exit(64)
        } catch is RunFailure {
            exit(1)  // reported where it happened
        } catch {
            writeToStandardError("cloud-hypervisor: \(error)\n")
            exit(1)
        }
    }

    /// The VM the command line describes, validated; nil when only `--api-socket` is given
    /// (the VM then comes from `vm.create`).
    func makeConfig() throws(ConfigError) -> VMConfig? {
        if restore != nil {
            // The snapshot's config.json describes the VM; the options that describe one conflict.
            let describing = kernel != nil || firmware != nil || igvm != nil || initramfs != nil || cmdline != nil || cpus != nil
                || memory != nil || !disk.isEmpty || !net.isEmpty
            if describing {
                throw ConfigError(option: "--restore", "the snapshot describes the VM: --restore cannot be used with --kernel, --cpus, --memory, --disk, --net and the like")
            }
            return nil
        }
        if noShutdown { throw ConfigError(option: "--no-shutdown", "keeping the VMM after the guest shuts down is an absent feature of this VMM") }
        let payloadGiven = kernel != nil || firmware != nil || igvm != nil
        let describesVM = payloadGiven || initramfs != nil || cmdline != nil || cpus != nil || memory != nil || !disk.isEmpty || !net.isEmpty
        if apiSocket != nil && !describesVM { return nil }
        var config = VMConfig()
        config.payload = PayloadConfig(firmware: firmware, kernel: kernel, cmdline: cmdline, initramfs: initramfs)
        config.payload?.igvm = igvm
        config.payload?.hostData = hostData
        if let cpus { config.cpus = try CpusConfig.parse(cpus) }
        if let memory { config.memory = try MemoryConfig.parse(memory) }
        if !memoryZone.isEmpty { config.memory.zones = try Self.each(memoryZone, MemoryZoneConfig.parse) }
        if let serial { config.serial = try ConsoleConfig.parse(serial, option: "--serial") }
        if let console { config.console = try ConsoleConfig.parse(console, option: "--console") }
        if let debugConsole { config.debugConsole = try DebugConsoleConfig.parse(debugConsole) }
        if let rng { config.rng = try RngConfig.parse(rng) }
        if !disk.isEmpty { config.disks = try Self.each(disk, DiskConfig.parse) }
        if !net.isEmpty { config.net = try Self.each(net, NetConfig.parse) }
        if !rateLimitGroup.isEmpty { config.rateLimitGroups = try Self.each(rateLimitGroup, RateLimitGroupConfig.parse) }
        if let balloon { config.balloon = try BalloonConfig.parse(balloon) }
        if !fs.isEmpty { config.fs = try Self.each(fs, FsConfig.parse) }
        if !pmem.isEmpty { config.pmem = try Self.each(pmem, PmemConfig.parse) }
        if !device.isEmpty { config.devices = try Self.each(device, DeviceConfig.parse) }
        if !userDevice.isEmpty { config.userDevices = try Self.each(userDevice, UserDeviceConfig.parse) }
        if !vdpa.isEmpty { config.vdpa = try Self.each(vdpa, VdpaConfig.parse) }
        if !genericVhostUser.isEmpty { config.genericVhostUser = try Self.each(genericVhostUser, GenericVhostUserConfig.parse) }
        if let vsock { config.vsock = try VsockConfig.parse(vsock) }
        if let rtc { config.rtc = try RtcConfig.parse(rtc) }
        if !numa.isEmpty { config.numa = try Self.each(numa, NumaConfig.parse) }
        if let platform { config.platform = try PlatformConfig.parse(platform) }
        if !pciSegment.isEmpty { config.pciSegments = try Self.each(pciSegment, PciSegmentConfig.parse) }
        if let tpm { config.tpm = try TpmConfig.parse(tpm) }
        config.pvpanic = pvpanic
        config.watchdog = watchdog
        config.landlockEnable = landlock
        if !landlockRules.isEmpty { config.landlockRules = try Self.each(landlockRules, LandlockConfig.parse) }
        try config.validate()
        return config
    }

    /// Parses each value of a repeatable option.
    private static func each<T>(_ values: [String], _ parse: (String) throws(ConfigError) -> T) throws(ConfigError) -> [T] {
        var result: [T] = []
        for value in values { result.append(try parse(value)) }
        return result
    }

    /// A failure already logged and written to standard error: exit status 1.
    struct RunFailure: Error {}

    func run() throws {
        let level: Logger.Level = [.warning, .info, .debug, .trace][min(verbosity, 3)]
        let logging = try LogSetup(level: level, file: logFile)
        let config: VMConfig?
        let socket: APISocketConfig?
        let monitorConfig: EventMonitorConfig?
        let filters: SeccompAction?
        let restoreConfig: RestoreConfig?
        do {
            config = try makeConfig()
            restoreConfig = try restore.map { (text) throws(ConfigError) in try RestoreConfig.parse(text) }
            socket = try apiSocket.map { (text) throws(ConfigError) in try APISocketConfig.parse(text) }
            monitorConfig = try eventMonitor.map { (text) throws(ConfigError) in try EventMonitorConfig.parse(text) }
            filters = try SeccompAction.parse(seccomp ?? "true")
        } catch {
            throw CommandLineError(description: error.description)
        }
        // --landlock on a kernel without Landlock: refused before anything starts.
        if landlock || config?.landlockEnable == true {
            do throws(LandlockError) {
                _ = try Landlock.supportedABI()
            } catch {
                writeToStandardError("cloud-hypervisor: --landlock: \(error)\n")
                throw RunFailure()
            }
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
                throw RunFailure()
            }
        }
        do {
            let monitor = try monitorConfig.map { try EventMonitor($0) }
            let runner = try VMMRunner(config: config, logger: logger, monitor: monitor, seccomp: filters, landlock: landlock,
                                       releaseStartupPages: true)
            runner.restore = restoreConfig
            var server: APIServer?
            if let socket {
                var settings = APIServer.Configuration()
                if filters != nil || landlock {
                    // The event loop serves the socket (and opens no file: with --landlock it drops
                    // all file access, as Cloud Hypervisor's HTTP thread does); the worker runs
                    // lifecycle actions as the VMM thread does, and enters the VM's Landlock sandbox
                    // when it is created.
                    let landlock = landlock
                    settings.threadSetup = { role in
                        if landlock && role == .eventLoop { try Landlock.denyAllFileAccess() }
                        if let filters { try Seccomp.install(for: role == .eventLoop ? .api : .vmm, action: filters) }
                    }
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
            throw RunFailure()
        }
    }
}
