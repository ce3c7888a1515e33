import Foundation
import Testing
import VMM
@testable import CloudHypervisor

/// The `cloud-hypervisor` command line as Cloud Hypervisor's users write it: every command line
/// of Cloud Hypervisor's README (Fixtures/ch-readme-command-lines.txt), and the options and
/// sub-keys of v53.0 (Fixtures/ch-v53-options.md), parsed by the real command.
@Suite("Cloud Hypervisor's command lines")
struct CommandLineCompatibilityTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// Splits a line with the shell's rules for the quoting the README uses (double quotes).
    static func words(_ line: String) -> [String] {
        var words: [String] = []
        var current = ""
        var quoted = false
        var inWord = false
        for ch in line {
            if ch == "\"" {
                quoted.toggle()
                inWord = true
            } else if ch == " " && !quoted {
                if inWord { words.append(current) }
                current = ""
                inWord = false
            } else {
                current.append(ch)
                inWord = true
            }
        }
        if inWord { words.append(current) }
        return words
    }

    static let readmeLines: [String] = {
        let text = (try? String(contentsOf: fixtures.appendingPathComponent("ch-readme-command-lines.txt"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") && !$0.isEmpty }
    }()

    /// Parses `arguments` (without the program name) as the binary does and builds the configuration.
    static func config(_ arguments: [String]) throws -> VMConfig? {
        let command = try CloudHypervisorCommand.parse(CloudHypervisorCommand.normalize(arguments))
        return try command.makeConfig()
    }

    @Test("the fixture holds the README command lines")
    func fixturePresent() {
        #expect(Self.readmeLines.count >= 10)
    }

    @Test("every README command line parses into Cloud Hypervisor's configuration", arguments: readmeLines)
    func readmeLine(line: String) throws {
        let arguments = Array(Self.words(line).dropFirst())
        if arguments.contains("--firmware") {
            // Firmware boot is absent here: refused, naming the option.
            let error = #expect(throws: ConfigError.self) { _ = try Self.config(arguments) }
            #expect(error?.option == "--firmware" && error?.description.contains("absent feature") == true, "\(error?.description ?? "")")
            return
        }
        let config = try #require(try Self.config(arguments))
        #expect(config.cpus.bootVCPUs == 4 && config.cpus.maxVCPUs == 4)
        #expect(config.memory.size == 1024 << 20)
        #expect(config.rng.src == "/dev/urandom")
        let disks = try #require(config.disks)
        #expect(disks.first?.path?.hasSuffix(".raw") == true)
        #expect(disks.count == (line.contains("ubuntu-cloudinit") ? 2 : 1))
        if let net = config.net?.first {
            // `tap=,mac=,ip=,mask=`: every key empty, so every one unset (a new TAP, a random MAC).
            #expect(net.tap == nil && net.mac == nil && net.ip == nil && net.mask == nil)
        }
        if line.contains("--serial tty") {
            #expect(config.serial.mode == .tty && config.console.mode == .off)
        } else {
            #expect(config.serial.mode == .null && config.console.mode == .tty)
        }
    }

    @Test("a bare --rng (the old README's last word) means src=/dev/urandom; a bare --rtc enables the device")
    func bareOptions() throws {
        #expect(CloudHypervisorCommand.normalize(["--kernel", "k", "--rng"]) == ["--kernel", "k", "--rng", "src=/dev/urandom"])
        #expect(CloudHypervisorCommand.normalize(["--rng", "--kernel", "k"]) == ["--rng", "src=/dev/urandom", "--kernel", "k"])
        #expect(CloudHypervisorCommand.normalize(["--rng", "src=/dev/random"]) == ["--rng", "src=/dev/random"])
        #expect(CloudHypervisorCommand.normalize(["-V"]) == ["--version"])
        let error = #expect(throws: ConfigError.self) { _ = try Self.config(["--kernel", "k", "--rtc"]) }
        #expect(error?.option == "--rtc")
    }

    @Test("--version and -V print Cloud Hypervisor's format with the release this VMM implements (libvirt reads up to the first '-' and wants 15.0 or later)")
    func version() throws {
        for flag in ["--version", "-V"] {
            let run = try BinaryTests.run([flag])
            #expect(run.status == 0 && run.stdout == "cloud-hypervisor v53.0.0-swift.0.2.0\n", "\(run)")
        }
    }

    @Test("every v53.0 option is accepted by the parser, and those of absent features are refused naming the option",
          arguments: [
            (["--vdpa", "path=/dev/vhost-vdpa-0,num_queues=2"], "--vdpa"),
            (["--device", "path=/sys/bus/pci/devices/0000:01:00.0/"], "--device"),
            (["--user-device", "socket=/tmp/u.sock"], "--user-device"),
            (["--generic-vhost-user", "socket=/tmp/g.sock,queue_sizes=[256,256],device_type=net"], "--generic-vhost-user"),
            (["--numa", "guest_numa_id=0,cpus=[0-1],distances=[1@20]"], "--numa"),
            (["--tpm", "socket=/tmp/swtpm.sock"], "--tpm"),
            (["--pvpanic"], "--pvpanic"),
            (["--watchdog"], "--watchdog"),
            (["--memory-zone", "id=mem0,size=1G"], "--memory-zone"),
            (["--platform", "serial_number=abc,uuid=1234,oem_strings=[a,b]"], "--platform serial_number=,uuid=,oem_strings="),
            (["--debug-console", "tty"], "--debug-console"),
            (["--cpus", "boot=2,kvm_hyperv=on"], "--cpus kvm_hyperv="),
            (["--cpus", "boot=2,core_scheduling=vcpu"], "--cpus core_scheduling="),
            (["--cpus", "boot=2,affinity=[0@[0-1],1@[2]]"], "--cpus affinity="),
          ])
    func absentOptions(arguments: [String], option: String) {
        let error = #expect(throws: ConfigError.self) { _ = try Self.config(["--kernel", "k"] + arguments) }
        #expect(error?.option == option, "\(error?.description ?? "")")
        #expect(error?.description.contains("absent feature") == true, "\(error?.description ?? "")")
    }

    @Test("--balloon parses as Cloud Hypervisor's, takes the id __balloon and must stay below the RAM")
    func balloonOption() throws {
        let config = try #require(try Self.config(["--kernel", "k", "--memory", "size=512M", "--balloon", "size=256M,deflate_on_oom=on"]))
        try config.validate()
        #expect(config.balloon?.size == 256 << 20 && config.balloon?.deflateOnOOM == true && config.balloon?.freePageReporting == false)
        #expect(config.balloonID == "__balloon")
        let error = #expect(throws: ConfigError.self) {
            try Self.config(["--kernel", "k", "--memory", "size=512M", "--balloon", "size=512M"])?.validate()
        }
        #expect(error?.option == "--balloon" && error?.description.contains("Balloon size (536870912) greater than RAM (536870912)") == true)
        #expect(throws: ConfigError.self) { try Self.config(["--kernel", "k", "--disk", "path=/tmp/d,id=b0", "--balloon", "size=0,id=b0"])?.validate() }
    }

    @Test("--fs parses with Cloud Hypervisor's defaults and needs --memory shared=on")
    func fsOption() throws {
        let config = try #require(try Self.config(["--kernel", "k", "--memory", "size=512M,shared=on", "--fs", "tag=myfs,socket=/tmp/fs.sock"]))
        try config.validate()
        #expect(config.fs?.first?.tag == "myfs" && config.fs?.first?.numQueues == 1 && config.fs?.first?.queueSize == 1024)
        let error = #expect(throws: ConfigError.self) { try Self.config(["--kernel", "k", "--fs", "tag=myfs,socket=/tmp/fs.sock"])?.validate() }
        #expect(error?.description.contains("Using vhost-user requires using shared memory or huge pages") == true, "\(error?.description ?? "")")
    }

    @Test("options of features that exist parse with Cloud Hypervisor's keys and defaults")
    func presentOptions() throws {
        let config = try #require(try Self.config([
            "--kernel", "k", "--cpus", "boot=2,max=8,nested=on,core_scheduling=off,max_phys_bits=40", "--memory", "size=1G,hotplug_size=2G,hotplug_method=acpi",
            "--platform", "num_pci_segments=1,iommu_address_width=48", "--pci-segment", "pci_segment=0,mmio32_aperture_weight=2",
            "--disk", "path=/tmp/a,lock_granularity=full,_disable_io_uring=on", "--rng", "src=/dev/random,id=rng0",
        ]))
        #expect(config.cpus.maxVCPUs == 8 && config.cpus.coreScheduling == .off && config.cpus.maxPhysBits == 40)
        #expect(config.memory.hotplugSize == 2 << 30)
        #expect(config.platform?.iommuAddressWidthBits == 48)
        #expect(config.pciSegments?.first?.mmio32ApertureWeight == 2)
        #expect(config.disks?.first?.lockGranularity == .full)
        #expect(config.rng.pci.id == "rng0" && config.rng.src == "/dev/random")
        let sockets = try #require(try Self.config(["--kernel", "k", "--serial", "socket=/tmp/s.sock", "--console", "socket=/tmp/c.sock"]))
        #expect(sockets.serial.mode == .socket && sockets.serial.socket == "/tmp/s.sock" && sockets.console.socket == "/tmp/c.sock")
    }
}
