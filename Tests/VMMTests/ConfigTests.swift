import Foundation
import Seccomp
import Testing
@testable import VMM

@Suite("Configuration from Cloud Hypervisor's option syntax")
struct ConfigTests {
    @Test("--seccomp: true traps, log logs, false installs nothing; anything else names the accepted values")
    func seccomp() throws {
        #expect(try SeccompAction.parse("true") == .trap)
        #expect(try SeccompAction.parse("log") == .log)
        #expect(try SeccompAction.parse("false") == nil)
        for bad in ["yes", "on", "TRUE", ""] {
            let error = #expect(throws: ConfigError.self) { _ = try SeccompAction.parse(bad) }
            #expect(error?.description == "--seccomp: '\(bad)' is not accepted; accepted values: true, false, log")
        }
    }

    @Test("--cpus: boot, max, topology; max defaults to boot")
    func cpus() throws {
        let config = try CpusConfig.parse("boot=4,topology=2:2:1:1")
        #expect(config.bootVCPUs == 4 && config.maxVCPUs == 4)
        #expect(config.topology == CpuTopology(threadsPerCore: 2, coresPerDie: 2, diesPerPackage: 1, packages: 1))
        try config.validate()
        #expect(try CpusConfig.parse("boot=2,max_phys_bits=40").maxPhysBits == 40)
    }

    @Test("--cpus refuses unknown keys, bad numbers and inconsistent topologies, naming the option",
          arguments: [
            ("boot=2,foo=1", "unknown key 'foo'"),
            ("boot=0", "outside 1...254"),
            ("boot=two", "not a whole number"),
            ("boot=2,topology=1:2", "threads_per_core"),
            ("boot=2,profile=fancy", "profile=fancy"),
          ])
    func cpusErrors(text: String, expected: String) {
        let error = #expect(throws: ConfigError.self) { _ = try CpusConfig.parse(text) }
        #expect(error?.option == "--cpus")
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
    }

    @Test("Validation: topology must match max, max must be at least boot")
    func cpusValidation() throws {
        #expect(throws: ConfigError.self) { try CpusConfig.parse("boot=2,topology=1:1:1:1").validate() }
        #expect(throws: ConfigError.self) { try CpusConfig.parse("boot=2,max=1").validate() }
        // max above boot is accepted: the spare vCPUs wait for hotplug, as Kata asks for.
        try CpusConfig.parse("boot=2,max=4").validate()
        // As Cloud Hypervisor's option parser: a repeated key takes its last value, `key=` means unset.
        #expect(try CpusConfig.parse("boot=2,boot=3").bootVCPUs == 3)
        #expect(try CpusConfig.parse("boot=2,max=").maxVCPUs == 2)
        var vm = VMConfig()
        vm.payload = PayloadConfig(kernel: "/k")
        vm.cpus = try CpusConfig.parse("boot=1,kvm_hyperv=on")
        let absent = #expect(throws: ConfigError.self) { try vm.validate() }
        #expect(absent?.option == "--cpus kvm_hyperv=" && absent?.description.contains("Hyper-V enlightenments is an absent feature") == true)
    }

    @Test("--memory sizes with K/M/G suffixes and on/off flags")
    func memory() throws {
        let config = try MemoryConfig.parse("size=1G,shared=on,mergeable=off")
        #expect(config.size == 1 << 30 && config.shared && !config.mergeable && config.thp)
        #expect(try MemoryConfig.parse("size=512M").size == 512 << 20)
        #expect(try MemoryConfig.parse("size=65536K").size == 64 << 20)
        #expect(OptionList.parseSize("99999999999999999999G") == nil, "overflow is refused")
        let error = #expect(throws: ConfigError.self) { _ = try MemoryConfig.parse("size=1G,hugepages=maybe") }
        #expect(error?.description == "--memory: hugepages=maybe is not on or off")
        #expect(throws: ConfigError.self) { try MemoryConfig.parse("size=1M").validate() }
        #expect(throws: ConfigError.self) { try MemoryConfig.parse("size=1G,hugepage_size=2M").validate() }
        try MemoryConfig.parse("size=1G,hugepages=on,hugepage_size=2M").validate()
    }

    @Test("--serial and --console modes")
    func consoles() throws {
        #expect(try ConsoleConfig.parse("tty", option: "--serial") == ConsoleConfig(mode: .tty))
        #expect(try ConsoleConfig.parse("off", option: "--serial").mode == .off)
        #expect(try ConsoleConfig.parse("file=/tmp/x.log", option: "--serial") == ConsoleConfig(mode: .file, file: "/tmp/x.log"))
        #expect(try ConsoleConfig.parse("socket=/tmp/s", option: "--serial") == ConsoleConfig(mode: .socket, socket: "/tmp/s"))
        let error = #expect(throws: ConfigError.self) { _ = try ConsoleConfig.parse("tty,id=x", option: "--serial") }
        #expect(error?.description.contains("unknown key 'id'") == true, "the serial port has no PCI keys")
        #expect(try ConsoleConfig.parse("pty,id=con0", option: "--console").pci.id == "con0")
        #expect(throws: ConfigError.self) { _ = try ConsoleConfig.parse("telnet", option: "--console") }
    }

    @Test("A VM needs a kernel; serial and virtio console cannot both be the terminal (Cloud Hypervisor's defaults: serial null, console tty)")
    func vmValidation() throws {
        var config = VMConfig()
        #expect(throws: ConfigError.self) { try config.validate() }
        config.payload = PayloadConfig(kernel: "/boot/vmlinux")
        #expect(config.serial.mode == .null && config.console.mode == .tty)
        try config.validate()
        config.serial = ConsoleConfig(mode: .tty)
        let error = #expect(throws: ConfigError.self) { try config.validate() }
        #expect(error?.option == "--console" && error?.message.contains("both") == true)
        config.console = ConsoleConfig(mode: .off)
        try config.validate()
        config.console = .defaultConsole
        config.serial = .defaultSerial
        config.payload?.firmware = "/fw"
        #expect(throws: ConfigError.self) { try config.validate() }
    }

    @Test("The JSON uses Cloud Hypervisor's field names and defaults")
    func json() throws {
        var config = VMConfig()
        config.cpus = try CpusConfig.parse("boot=2")
        config.payload = PayloadConfig(kernel: "/k", cmdline: "console=ttyS0")
        config.serial = ConsoleConfig(mode: .tty)
        let data = try JSONEncoder().encode(config)
        let text = String(decoding: data, as: UTF8.self)
        for key in ["\"boot_vcpus\":2", "\"max_vcpus\":2", "\"max_phys_bits\":46", "\"mode\":\"Tty\"", "\"kernel\":\"\\/k\""] {
            #expect(text.contains(key), "\(key) in \(text)")
        }
        #expect(try JSONDecoder().decode(VMConfig.self, from: data) == config)
        // Cloud Hypervisor's minimal vm.create body: absent sections take the defaults.
        let minimal = #"{"cpus":{"boot_vcpus":1,"max_vcpus":1},"payload":{"kernel":"/k"}}"#
        let decoded = try JSONDecoder().decode(VMConfig.self, from: Data(minimal.utf8))
        #expect(decoded.memory.size == 512 << 20 && decoded.serial.mode == .null && decoded.cpus.maxPhysBits == 46)
    }

    @Test("--rng: every VM has virtio-rng from /dev/urandom unless told otherwise")
    func rng() throws {
        #expect(VMConfig().rng == RngConfig(src: "/dev/urandom"))
        #expect(try RngConfig.parse("src=/dev/random").src == "/dev/random")
        #expect(throws: ConfigError.self) { _ = try RngConfig.parse("source=/dev/random") }
        // `src=` is "not given", as in Cloud Hypervisor's option parser: the default source.
        #expect(try RngConfig.parse("src=").src == "/dev/urandom")
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: "/k")
        config.rng = try RngConfig.parse("src=/dev/urandom,iommu=on")
        try config.validate()
        #expect(config.absentFeatures.isEmpty && config.hasVirtualIOMMU)
        let json = String(decoding: try JSONEncoder().encode(VMConfig()), as: UTF8.self)
        #expect(json.contains("\"rng\":{") && json.contains("\"src\":\"\\/dev\\/urandom\""), "\(json)")
    }

    @Test("Quoted and bracketed values may contain commas")
    func optionListQuoting() throws {
        let list = try OptionList(#"a="x,y",b=[1,2]"#, option: "--test", knownKeys: ["a", "b"])
        #expect(list["a"] == "x,y" && list["b"] == "[1,2]")
        #expect(throws: ConfigError.self) { _ = try OptionList(#"a="x"#, option: "--test", knownKeys: ["a"]) }
    }

    @Test("--disk: Cloud Hypervisor's keys, defaults and JSON names")
    func disk() throws {
        let disk = try DiskConfig.parse("path=/img/a.raw,readonly=on,direct=on,num_queues=4,queue_size=256,id=root,serial=S1,image_type=raw")
        #expect(disk.path == "/img/a.raw" && disk.readonly && disk.direct && disk.numQueues == 4 && disk.queueSize == 256)
        #expect(disk.id == "root" && disk.serial == "S1" && disk.imageType == .raw && !disk.backingFiles && disk.sparse)
        try disk.validate()
        let plain = try DiskConfig.parse("path=/b")
        #expect(plain.numQueues == 1 && plain.queueSize == 128 && !plain.readonly && plain.imageType == nil)
        let json = String(decoding: try JSONEncoder().encode(disk), as: UTF8.self)
        for key in ["\"num_queues\":4", "\"queue_size\":256", "\"readonly\":true", "\"image_type\":\"Raw\"", "\"backing_files\":false"] {
            #expect(json.contains(key), "\(json)")
        }
        let decoded = try JSONDecoder().decode(DiskConfig.self, from: Data(#"{"path":"/c"}"#.utf8))
        #expect(decoded == DiskConfig(path: "/c"))
    }

    @Test("--disk refuses what it cannot do, naming the option and the image",
          arguments: [
            ("readonly=on", "path= is required"),
            ("path=/a,queue_size=100", "power of two"),
            ("path=/a,num_queues=0", "outside"),
            ("path=/a,serial=012345678901234567890", "20 bytes"),
            ("path=/a,image_type=vmdk", "image_type=vmdk"),
            ("path=/a,colour=red", "unknown key 'colour'"),
          ])
    func diskErrors(text: String, expected: String) {
        let error = #expect(throws: ConfigError.self) { try DiskConfig.parse(text).validate() }
        #expect(error?.option == "--disk")
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
    }

    @Test("Disks get ids _disk0, _disk1...; ids and images must be unique")
    func diskIDs() throws {
        var config = VMConfig()
        config.payload = PayloadConfig(kernel: "/k")
        config.disks = [DiskConfig(path: "/a"), DiskConfig(path: "/b")]
        #expect(config.diskIDs == ["_disk0", "_disk1"])
        try config.validate()
        config.disks![1].path = "/a"
        #expect(throws: ConfigError.self) { try config.validate() }
        config.disks![1].path = "/b"
        config.disks![1].id = "_disk0"
        #expect(throws: ConfigError.self) { try config.validate() }
    }
}
