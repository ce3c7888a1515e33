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
        version: "cloud-hypervisor \(VMMVersion.build)")

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

    @Option(help: ArgumentHelp("Serial port (16550 at 0x3f8): \(ConsoleConfig.serialSyntax) [default: null]", valueName: "serial"))
    var serial: String?

    @Option(help: ArgumentHelp("Virtio console (hvc0): \(ConsoleConfig.syntax) [default: tty]", valueName: "console"))
    var console: String?

    @Option(name: .customLong("debug-console"), help: ArgumentHelp("Debug console port: \(DebugConsoleConfig.syntax) [default: off,iobase=0xe9]", valueName: "debug-console"))
    var debugConsole: String?

    @Option(help: ArgumentHelp("Random number generator (virtio-rng): \(RngConfig.syntax) [default: src=/dev/urandom; a bare --rng means the default]", valueName: "rng"))
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

    @Option(name: .customLong("memory-zone"), parsing: .upToNextOption,
            help: ArgumentHelp("Memory zone, repeatable (absent here): \(MemoryZoneConfig.syntax)", valueName: "memory-zone"))
    var memoryZone: [String] = []

    @Option(help: ArgumentHelp("Firmware to boot (absent here).", valueName: "firmware"))
    var firmware: String?

    @Option(help: ArgumentHelp("IGVM file to boot (absent here).", valueName: "igvm"))
    var igvm: String?

    @Option(name: .customLong("host-data"), help: ArgumentHelp("SEV-SNP host data (absent here).", valueName: "host-data"))
    var hostData: String?

    @Option(help: ArgumentHelp("Balloon: \(BalloonConfig.syntax)", valueName: "balloon"))
    var balloon: String?

    @Option(parsing: .upToNextOption, help: ArgumentHelp("virtio-fs (a vhost-user back-end such as virtiofsd; needs --memory shared=on), repeatable: \(FsConfig.syntax)", valueName: "fs"))
    var fs: [String] = []

    @Option(parsing: .upToNextOption, help: ArgumentHelp("virtio-pmem, repeatable: \(PmemConfig.syntax)", valueName: "pmem"))
    var pmem: [String] = []

    @Option(parsing: .upToNextOption, help: ArgumentHelp("VFIO device, repeatable (absent here): \(DeviceConfig.syntax)", valueName: "device"))
    var device: [String] = []

    @Option(name: .customLong("user-device"), parsing: .upToNextOption,
            help: ArgumentHelp("vfio-user device, repeatable (absent here): \(UserDeviceConfig.syntax)", valueName: "user-device"))
    var userDevice: [String] = []

    @Option(parsing: .upToNextOption, help: ArgumentHelp("vDPA device, repeatable (absent here): \(VdpaConfig.syntax)", valueName: "vdpa"))
    var vdpa: [String] = []

    @Option(name: .customLong("generic-vhost-user"), parsing: .upToNextOption,
            help: ArgumentHelp("Generic vhost-user device, repeatable (absent here): \(GenericVhostUserConfig.syntax)", valueName: "generic-vhost-user"))
    var genericVhostUser: [String] = []

    @Option(help: ArgumentHelp("virtio-vsock, Cloud Hypervisor's hybrid vsock: \(VsockConfig.syntax)", valueName: "vsock"))
    var vsock: String?

    @Option(help: ArgumentHelp("virtio RTC (absent here): \(RtcConfig.syntax); a bare --rtc enables it", valueName: "rtc"))
    var rtc: String?

    @Option(parsing: .upToNextOption, help: ArgumentHelp("Guest NUMA node, repeatable (absent here): \(NumaConfig.syntax)", valueName: "numa"))
    var numa: [String] = []

    @Option(help: ArgumentHelp("Platform settings: \(PlatformConfig.syntax)", valueName: "platform"))
    var platform: String?

    @Option(name: .customLong("pci-segment"), parsing: .upToNextOption,
            help: ArgumentHelp("PCI segment aperture weights, repeatable: \(PciSegmentConfig.syntax)", valueName: "pci-segment"))
    var pciSegment: [String] = []

    @Option(help: ArgumentHelp("TPM (absent here): \(TpmConfig.syntax)", valueName: "tpm"))
    var tpm: String?

    @Flag(help: "pvpanic device (absent here).")
    var pvpanic = false

    @Flag(help: "virtio-watchdog (absent here).")
    var watchdog = false

    @Flag(help: "Sandbox the VMM with Landlock: after the VM is created it reaches only the files its configuration and --landlock-rules name.")
    var landlock = false

    @Option(name: .customLong("landlock-rules"), parsing: .upToNextOption,
            help: ArgumentHelp("Extra paths the Landlock sandbox allows (for hotplug, snapshots), repeatable: \(LandlockConfig.syntax)", valueName: "landlock-rules"))
    var landlockRules: [String] = []

    @Option(help: ArgumentHelp("Restore from a VM snapshot: source_url=<url>,prefault=on|off,resume=on|off,memory_restore_mode=copy|ondemand", valueName: "restore"))
    var restore: String?

    @Flag(name: .customLong("no-shutdown"), help: "Keep the VMM when the guest shuts down (absent here).")
    var noShutdown = false

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

    /// Parses the process's arguments after `normalize(_:)`.
    static func main() {
        // One malloc arena for every thread: about 250 KiB less private memory per VMM
        // (measured with an idle guest, README "Memory per VM").
        MallocArenas.useOne()
        main(normalize(Array(CommandLine.arguments.dropFirst())))
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
            filters = try SeccompAction.parse(seccomp)
        } catch {
            throw ValidationError(error.description)
        }
        // --landlock on a kernel without Landlock: refused before anything starts.
        if landlock || config?.landlockEnable == true {
            do throws(LandlockError) {
                _ = try Landlock.supportedABI()
            } catch {
                writeToStandardError("cloud-hypervisor: --landlock: \(error)\n")
                throw ExitCode.failure
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
                throw ExitCode.failure
            }
        }
        do {
            let monitor = try monitorConfig.map { try EventMonitor($0) }
            let runner = try VMMRunner(config: config, logger: logger, monitor: monitor, seccomp: filters, landlock: landlock)
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
            throw ExitCode.failure
        }
    }
}
