// The VM configuration: the same value types behind the command line and (later) the REST
// API, with Cloud Hypervisor's JSON field names (vmm/src/vm_config.rs, cloud-hypervisor.yaml).

/// The vCPU topology: `threads_per_core × cores_per_die × dies_per_package × packages`.
public struct CpuTopology: Codable, Equatable, Sendable {
    /// Threads (hyperthreads) per core.
    public var threadsPerCore: UInt8
    /// Cores per die.
    public var coresPerDie: UInt8
    /// Dies per package.
    public var diesPerPackage: UInt8
    /// Packages (sockets).
    public var packages: UInt8

    /// Creates a topology.
    public init(threadsPerCore: UInt8, coresPerDie: UInt8, diesPerPackage: UInt8, packages: UInt8) {
        self.threadsPerCore = threadsPerCore
        self.coresPerDie = coresPerDie
        self.diesPerPackage = diesPerPackage
        self.packages = packages
    }

    /// The number of vCPUs the topology describes.
    public var vcpuCount: Int { Int(threadsPerCore) * Int(coresPerDie) * Int(diesPerPackage) * Int(packages) }

    enum CodingKeys: String, CodingKey {
        case threadsPerCore = "threads_per_core", coresPerDie = "cores_per_die", diesPerPackage = "dies_per_package", packages
    }
}

/// `--cpus`: how many vCPUs and how they are arranged.
public struct CpusConfig: Codable, Equatable, Sendable {
    /// vCPUs started at boot.
    public var bootVCPUs: UInt8 = 1
    /// The most vCPUs the VM may have (hotplug).
    public var maxVCPUs: UInt8 = 1
    /// The topology, if given.
    public var topology: CpuTopology?
    /// Hyper-V enlightenments (not supported yet; refused by validation when on).
    public var kvmHyperv = false
    /// Guest physical address bits (Cloud Hypervisor's default 46).
    public var maxPhysBits: UInt8 = 46

    /// One vCPU.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case bootVCPUs = "boot_vcpus", maxVCPUs = "max_vcpus", topology, kvmHyperv = "kvm_hyperv", maxPhysBits = "max_phys_bits"
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bootVCPUs = try c.decode(UInt8.self, forKey: .bootVCPUs)
        maxVCPUs = try c.decode(UInt8.self, forKey: .maxVCPUs)
        topology = try c.decodeIfPresent(CpuTopology.self, forKey: .topology)
        kvmHyperv = try c.decodeIfPresent(Bool.self, forKey: .kvmHyperv) ?? false
        maxPhysBits = try c.decodeIfPresent(UInt8.self, forKey: .maxPhysBits) ?? 46
    }
}

/// `--memory`: guest RAM.
public struct MemoryConfig: Codable, Equatable, Sendable {
    /// Guest RAM in bytes (Cloud Hypervisor's default 512 MiB).
    public var size: UInt64 = 512 << 20
    /// Let KSM merge identical pages (`MADV_MERGEABLE`).
    public var mergeable = false
    /// Map RAM shared (`MAP_SHARED`), needed by vhost-user back-ends.
    public var shared = false
    /// Back RAM with huge pages.
    public var hugepages = false
    /// The huge page size in bytes, if not the system default.
    public var hugepageSize: UInt64?
    /// Fault every page in at start.
    public var prefault = false
    /// Use transparent huge pages where possible.
    public var thp = true

    /// 512 MiB of private RAM.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case size, mergeable, shared, hugepages, hugepageSize = "hugepage_size", prefault, thp
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        size = try c.decode(UInt64.self, forKey: .size)
        mergeable = try c.decodeIfPresent(Bool.self, forKey: .mergeable) ?? false
        shared = try c.decodeIfPresent(Bool.self, forKey: .shared) ?? false
        hugepages = try c.decodeIfPresent(Bool.self, forKey: .hugepages) ?? false
        hugepageSize = try c.decodeIfPresent(UInt64.self, forKey: .hugepageSize)
        prefault = try c.decodeIfPresent(Bool.self, forKey: .prefault) ?? false
        thp = try c.decodeIfPresent(Bool.self, forKey: .thp) ?? true
    }
}

/// What to boot: `--kernel`, `--initramfs`, `--cmdline` (`--firmware` is not supported yet).
public struct PayloadConfig: Codable, Equatable, Sendable {
    /// Firmware image (not supported yet; refused by validation).
    public var firmware: String?
    /// The kernel: an ELF `vmlinux` with a PVH note, or a `bzImage`.
    public var kernel: String?
    /// The kernel command line.
    public var cmdline: String?
    /// The initramfs image.
    public var initramfs: String?

    /// Nothing to boot.
    public init(firmware: String? = nil, kernel: String? = nil, cmdline: String? = nil, initramfs: String? = nil) {
        self.firmware = firmware
        self.kernel = kernel
        self.cmdline = cmdline
        self.initramfs = initramfs
    }
}

/// Where a serial port or console goes.
public enum ConsoleOutputMode: String, Codable, Equatable, Sendable {
    /// No device at all.
    case off = "Off"
    /// A new pseudo-terminal.
    case pty = "Pty"
    /// This process's terminal (standard input and output).
    case tty = "Tty"
    /// A file (output only).
    case file = "File"
    /// The device exists; output is discarded, no input.
    case null = "Null"
}

/// `--serial` / `--console`.
public struct ConsoleConfig: Codable, Equatable, Sendable {
    /// The file for `.file` mode.
    public var file: String?
    /// The mode.
    public var mode: ConsoleOutputMode
    /// Place the device behind the virtual IOMMU (not supported yet).
    public var iommu = false

    /// Creates a console configuration.
    public init(mode: ConsoleOutputMode, file: String? = nil, iommu: Bool = false) {
        self.mode = mode
        self.file = file
        self.iommu = iommu
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mode = try c.decode(ConsoleOutputMode.self, forKey: .mode)
        file = try c.decodeIfPresent(String.self, forKey: .file)
        iommu = try c.decodeIfPresent(Bool.self, forKey: .iommu) ?? false
    }

    /// Cloud Hypervisor's serial default: the port exists, output discarded.
    public static let defaultSerial = ConsoleConfig(mode: .null)
    /// Cloud Hypervisor's virtio-console default: on the terminal (standard input and output).
    public static let defaultConsole = ConsoleConfig(mode: .tty)
}

/// `--rng`: the virtio entropy device every VM has, as in Cloud Hypervisor.
public struct RngConfig: Codable, Equatable, Sendable {
    /// The host file the entropy comes from.
    public var src: String = "/dev/urandom"
    /// Place the device behind the virtual IOMMU (not supported yet).
    public var iommu = false

    /// Entropy from `/dev/urandom`.
    public init(src: String = "/dev/urandom", iommu: Bool = false) {
        self.src = src
        self.iommu = iommu
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        src = try c.decode(String.self, forKey: .src)
        iommu = try c.decodeIfPresent(Bool.self, forKey: .iommu) ?? false
    }

    /// The accepted `--rng` syntax.
    public static let syntax = "src=<entropy_source_path>,iommu=on|off"

    /// Parses `--rng` (for example `src=/dev/urandom`).
    public static func parse(_ text: String) throws(ConfigError) -> RngConfig {
        let list = try OptionList(text, option: "--rng", knownKeys: ["src", "iommu"])
        let src = list["src"] ?? "/dev/urandom"
        guard !src.isEmpty else { throw ConfigError(option: "--rng", "src= needs a path") }
        return RngConfig(src: src, iommu: try list.bool("iommu") ?? false)
    }
}

/// A whole VM.
public struct VMConfig: Codable, Equatable, Sendable {
    /// vCPUs.
    public var cpus = CpusConfig()
    /// RAM.
    public var memory = MemoryConfig()
    /// What to boot.
    public var payload: PayloadConfig?
    /// The 16550 serial port.
    public var serial = ConsoleConfig.defaultSerial
    /// The virtio console.
    public var console = ConsoleConfig.defaultConsole
    /// The virtio entropy device.
    public var rng = RngConfig()
    /// The virtio-blk disks, in `--disk` order (`nil` when there are none, as Cloud Hypervisor prints it).
    public var disks: [DiskConfig]?
    /// The virtio-net devices, in `--net` order (`nil` when there are none).
    public var net: [NetConfig]?
    /// Rate limits shared by several disks (`--rate-limit-group`; `nil` when there are none).
    public var rateLimitGroups: [RateLimitGroupConfig]?

    /// Cloud Hypervisor's defaults: 1 vCPU, 512 MiB, serial null.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case cpus, memory, payload, serial, console, rng, disks, net, rateLimitGroups = "rate_limit_groups"
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cpus = try c.decodeIfPresent(CpusConfig.self, forKey: .cpus) ?? CpusConfig()
        memory = try c.decodeIfPresent(MemoryConfig.self, forKey: .memory) ?? MemoryConfig()
        payload = try c.decodeIfPresent(PayloadConfig.self, forKey: .payload)
        serial = try c.decodeIfPresent(ConsoleConfig.self, forKey: .serial) ?? .defaultSerial
        console = try c.decodeIfPresent(ConsoleConfig.self, forKey: .console) ?? .defaultConsole
        rng = try c.decodeIfPresent(RngConfig.self, forKey: .rng) ?? RngConfig()
        disks = try c.decodeIfPresent([DiskConfig].self, forKey: .disks)
        net = try c.decodeIfPresent([NetConfig].self, forKey: .net)
        rateLimitGroups = try c.decodeIfPresent([RateLimitGroupConfig].self, forKey: .rateLimitGroups)
    }
}
