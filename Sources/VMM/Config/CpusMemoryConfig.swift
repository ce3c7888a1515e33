// `--cpus` and `--memory` (with `--memory-zone`): Cloud Hypervisor's CpusConfig and
// MemoryConfig with every field, its JSON names and its defaults (vmm/src/vm_config.rs).

/// The vCPU topology: `threads_per_core × cores_per_die × dies_per_package × packages`.
public struct CpuTopology: Codable, Equatable, Sendable {
    /// Threads (hyperthreads) per core.
    public var threadsPerCore: UInt16
    /// Cores per die.
    public var coresPerDie: UInt16
    /// Dies per package.
    public var diesPerPackage: UInt16
    /// Packages (sockets).
    public var packages: UInt16

    /// Creates a topology.
    public init(threadsPerCore: UInt16, coresPerDie: UInt16, diesPerPackage: UInt16, packages: UInt16) {
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

/// One vCPU pinned to host CPUs (`affinity=[0@[1,2]]`).
public struct CpuAffinity: Codable, Equatable, Sendable {
    /// The vCPU index.
    public var vcpu: UInt32
    /// The host CPUs it may run on.
    public var hostCPUs: [UInt64]

    /// Creates a pinning.
    public init(vcpu: UInt32, hostCPUs: [UInt64]) {
        self.vcpu = vcpu
        self.hostCPUs = hostCPUs
    }

    enum CodingKeys: String, CodingKey { case vcpu, hostCPUs = "host_cpus" }
}

/// Optional CPU features (`features=amx`).
public struct CpuFeatures: Codable, Equatable, Sendable {
    /// Intel AMX tiles.
    public var amx = false

    /// No optional feature.
    public init(amx: Bool = false) { self.amx = amx }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        amx = try c.value(.amx, default: false)
    }

    enum CodingKeys: String, CodingKey { case amx }
}

/// Linux core scheduling for the vCPU threads (`core_scheduling=vm|vcpu|off`).
public enum CoreScheduling: String, Codable, Equatable, Sendable, CaseIterable {
    /// All vCPUs of the VM share one cookie (Cloud Hypervisor's default).
    case vm = "Vm"
    /// Each vCPU has a cookie of its own.
    case vcpu = "Vcpu"
    /// No core scheduling.
    case off = "Off"
}

/// `--cpus`: how many vCPUs and how they are arranged.
public struct CpusConfig: Codable, Equatable, Sendable {
    /// vCPUs started at boot.
    public var bootVCPUs: UInt32 = 1
    /// The most vCPUs the VM may have; the ones above `bootVCPUs` wait for vCPU hotplug.
    public var maxVCPUs: UInt32 = 1
    /// The topology, if given.
    public var topology: CpuTopology?
    /// Hyper-V enlightenments.
    public var kvmHyperv = false
    /// Guest physical address bits (Cloud Hypervisor's default 46).
    public var maxPhysBits: UInt8 = 46
    /// vCPU pinning.
    public var affinity: [CpuAffinity]?
    /// Optional CPU features.
    public var features = CpuFeatures()
    /// Offer the host's virtualisation extensions (SVM/VMX) to the guest (default on).
    public var nested = true
    /// Core scheduling of the vCPU threads.
    public var coreScheduling = CoreScheduling.vm
    /// The CPU profile (`Host`: the host's CPUID as KVM supports it).
    public var profile = "Host"

    /// One vCPU.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case bootVCPUs = "boot_vcpus", maxVCPUs = "max_vcpus", topology, kvmHyperv = "kvm_hyperv", maxPhysBits = "max_phys_bits"
        case affinity, features, nested, coreScheduling = "core_scheduling", profile
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields (`boot_vcpus` and `max_vcpus` are required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bootVCPUs = try c.decode(UInt32.self, forKey: .bootVCPUs)
        maxVCPUs = try c.decode(UInt32.self, forKey: .maxVCPUs)
        topology = try c.optional(.topology)
        kvmHyperv = try c.value(.kvmHyperv, default: false)
        maxPhysBits = try c.value(.maxPhysBits, default: 46)
        affinity = try c.optional(.affinity)
        features = try c.value(.features, default: CpuFeatures())
        nested = try c.value(.nested, default: true)
        coreScheduling = try c.value(.coreScheduling, default: .vm)
        profile = try c.value(.profile, default: "Host")
    }
}

/// How memory is hot-added (`hotplug_method=acpi|virtio-mem`).
public enum HotplugMethod: String, Codable, Equatable, Sendable, CaseIterable {
    /// ACPI memory hotplug (Cloud Hypervisor's default).
    case acpi = "Acpi"
    /// A virtio-mem device.
    case virtioMem = "VirtioMem"
}

/// `--memory-zone`: one region of guest RAM with its own backing.
public struct MemoryZoneConfig: Codable, Equatable, Sendable {
    /// The zone's id (NUMA nodes name it).
    public var id: String
    /// Its size in bytes.
    public var size: UInt64
    /// A file backing it.
    public var file: String?
    /// Map it shared.
    public var shared = false
    /// Back it with huge pages.
    public var hugepages = false
    /// The huge page size.
    public var hugepageSize: UInt64?
    /// The host NUMA node to allocate it on.
    public var hostNUMANode: UInt32?
    /// Room for hot-added memory in this zone.
    public var hotplugSize: UInt64?
    /// Memory hot-added to this zone already.
    public var hotpluggedSize: UInt64?
    /// Fault it in at start.
    public var prefault = false
    /// Reserve swap space for it (no `MAP_NORESERVE`).
    public var reserve = false
    /// Let KSM merge its pages.
    public var mergeable = false

    /// A zone of `size` bytes.
    public init(id: String, size: UInt64) {
        self.id = id
        self.size = size
    }

    enum CodingKeys: String, CodingKey {
        case id, size, file, shared, hugepages, hugepageSize = "hugepage_size", hostNUMANode = "host_numa_node"
        case hotplugSize = "hotplug_size", hotpluggedSize = "hotplugged_size", prefault, reserve, mergeable
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        size = try c.decode(UInt64.self, forKey: .size)
        file = try c.optional(.file)
        shared = try c.value(.shared, default: false)
        hugepages = try c.value(.hugepages, default: false)
        hugepageSize = try c.optional(.hugepageSize)
        hostNUMANode = try c.optional(.hostNUMANode)
        hotplugSize = try c.optional(.hotplugSize)
        hotpluggedSize = try c.optional(.hotpluggedSize)
        prefault = try c.value(.prefault, default: false)
        reserve = try c.value(.reserve, default: false)
        mergeable = try c.value(.mergeable, default: false)
    }
}

/// `--memory`: guest RAM.
public struct MemoryConfig: Codable, Equatable, Sendable {
    /// Guest RAM in bytes (Cloud Hypervisor's default 512 MiB).
    public var size: UInt64 = 512 << 20
    /// Let KSM merge identical pages (`MADV_MERGEABLE`).
    public var mergeable = false
    /// How memory is hot-added.
    public var hotplugMethod = HotplugMethod.acpi
    /// Guest-physical room kept for hot-added memory: vm.resize fills it through ACPI memory
    /// hotplug (`hotplug_method=acpi`) or asks the guest to plug it through virtio-mem.
    public var hotplugSize: UInt64?
    /// virtio-mem: the memory requested from the device at boot (vm.resize keeps it up to date).
    public var hotpluggedSize: UInt64?
    /// Map RAM shared (`MAP_SHARED`), needed by vhost-user back-ends.
    public var shared = false
    /// Back RAM with huge pages.
    public var hugepages = false
    /// The huge page size in bytes, if not the system default.
    public var hugepageSize: UInt64?
    /// Fault every page in at start.
    public var prefault = false
    /// Reserve swap space for RAM (no `MAP_NORESERVE`).
    public var reserve = false
    /// RAM split into zones (`--memory-zone`).
    public var zones: [MemoryZoneConfig]?
    /// Use transparent huge pages where possible.
    public var thp = true

    /// 512 MiB of private RAM.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case size, mergeable, hotplugMethod = "hotplug_method", hotplugSize = "hotplug_size", hotpluggedSize = "hotplugged_size"
        case shared, hugepages, hugepageSize = "hugepage_size", prefault, reserve, zones, thp
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields (`size` is required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        size = try c.decode(UInt64.self, forKey: .size)
        mergeable = try c.value(.mergeable, default: false)
        hotplugMethod = try c.value(.hotplugMethod, default: .acpi)
        hotplugSize = try c.optional(.hotplugSize)
        hotpluggedSize = try c.optional(.hotpluggedSize)
        shared = try c.value(.shared, default: false)
        hugepages = try c.value(.hugepages, default: false)
        hugepageSize = try c.optional(.hugepageSize)
        prefault = try c.value(.prefault, default: false)
        reserve = try c.value(.reserve, default: false)
        zones = try c.optional(.zones)
        thp = try c.value(.thp, default: true)
    }
}
