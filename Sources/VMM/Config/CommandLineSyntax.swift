// Turning Cloud Hypervisor's `--cpus`, `--memory` and `--memory-zone` strings into configuration values.

extension CpusConfig {
    /// The accepted `--cpus` syntax, for help and errors.
    public static let syntax = "boot=<boot_vcpus>,max=<max_vcpus>,topology=<threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>,kvm_hyperv=on|off,max_phys_bits=<maximum_number_of_physical_bits>,affinity=<list_of_vcpus_with_their_associated_cpuset>,features=<list_of_features_to_enable>,nested=on|off,core_scheduling=vm|vcpu|off,profile=host"

    /// Parses `--cpus` (for example `boot=2,max=4,topology=1:2:1:2`). `max` defaults to `boot`.
    public static func parse(_ text: String) throws(ConfigError) -> CpusConfig {
        let list = try OptionList(text, option: "--cpus", knownKeys: [
            "boot", "max", "topology", "kvm_hyperv", "max_phys_bits", "affinity", "features", "nested", "core_scheduling", "profile",
        ])
        var config = CpusConfig()
        config.bootVCPUs = try list.integer("boot", as: UInt32.self, in: 1...254) ?? 1
        config.maxVCPUs = try list.integer("max", as: UInt32.self, in: 1...254) ?? config.bootVCPUs
        config.kvmHyperv = try list.bool("kvm_hyperv") ?? false
        config.maxPhysBits = try list.integer("max_phys_bits", as: UInt8.self, in: 32...52) ?? 46
        config.nested = try list.bool("nested") ?? true
        if let text = list["topology"] {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map { UInt16($0) }
            guard parts.count == 4, let t = parts[0], let c = parts[1], let d = parts[2], let p = parts[3], t > 0, c > 0, d > 0, p > 0 else {
                throw ConfigError(option: "--cpus", "topology=\(text) is not <threads_per_core>:<cores_per_die>:<dies_per_package>:<packages> with each a number from 1 to 65535")
            }
            config.topology = CpuTopology(threadsPerCore: t, coresPerDie: c, diesPerPackage: d, packages: p)
        }
        if let text = list["affinity"] {
            config.affinity = try AffinityList.parse(text, option: "--cpus", key: "affinity").map { CpuAffinity(vcpu: $0.index, hostCPUs: $0.cpus.map(UInt64.init)) }
        }
        if let text = list["features"] {
            for feature in text.split(separator: ",") where !feature.isEmpty {
                guard feature == "amx" else { throw ConfigError(option: "--cpus", "features=\(text): '\(feature)' is not a known feature (amx)") }
                config.features.amx = true
            }
        }
        switch list["core_scheduling"]?.lowercased() {
        case nil: break
        case "vm": config.coreScheduling = .vm
        case "vcpu": config.coreScheduling = .vcpu
        case "off": config.coreScheduling = .off
        case let other?: throw ConfigError(option: "--cpus", "core_scheduling=\(other) is not accepted; use vm, vcpu or off")
        }
        if let profile = list["profile"] {
            guard profile.lowercased() == "host" else { throw ConfigError(option: "--cpus", "profile=\(profile) is not accepted; use host") }
        }
        return config
    }
}

extension MemoryConfig {
    /// The accepted `--memory` syntax.
    public static let syntax = "size=<guest_memory_size>,mergeable=on|off,shared=on|off,hugepages=on|off,hugepage_size=<hugepage_size>,hotplug_method=acpi|virtio-mem,hotplug_size=<hotpluggable_memory_size>,hotplugged_size=<hotplugged_memory_size>,prefault=on|off,reserve=on|off,thp=on|off"

    /// Parses `--memory` (for example `size=1G,hugepages=on`).
    public static func parse(_ text: String) throws(ConfigError) -> MemoryConfig {
        let list = try OptionList(text, option: "--memory", knownKeys: [
            "size", "mergeable", "shared", "hugepages", "hugepage_size", "prefault", "thp", "hotplug_method", "hotplug_size",
            "hotplugged_size", "reserve",
        ])
        var config = MemoryConfig()
        config.size = try list.size("size") ?? config.size
        config.mergeable = try list.bool("mergeable") ?? false
        config.shared = try list.bool("shared") ?? false
        config.hugepages = try list.bool("hugepages") ?? false
        config.hugepageSize = try list.size("hugepage_size")
        config.prefault = try list.bool("prefault") ?? false
        config.thp = try list.bool("thp") ?? true
        config.reserve = try list.bool("reserve") ?? false
        config.hotplugSize = try list.size("hotplug_size")
        config.hotpluggedSize = try list.size("hotplugged_size")
        switch list["hotplug_method"]?.lowercased() {
        case nil, "acpi": config.hotplugMethod = .acpi
        case "virtio-mem", "virtiomem": config.hotplugMethod = .virtioMem
        case let other?: throw ConfigError(option: "--memory", "hotplug_method=\(other) is not accepted; use acpi or virtio-mem")
        }
        return config
    }
}

extension MemoryZoneConfig {
    /// The accepted `--memory-zone` syntax.
    public static let syntax = "size=<guest_memory_region_size>,file=<backing_file>,shared=on|off,hugepages=on|off,hugepage_size=<hugepage_size>,host_numa_node=<node_id>,id=<zone_identifier>,hotplug_size=<hotpluggable_memory_size>,hotplugged_size=<hotplugged_memory_size>,prefault=on|off,reserve=on|off,mergeable=on|off"

    /// Parses one `--memory-zone`.
    public static func parse(_ text: String) throws(ConfigError) -> MemoryZoneConfig {
        let option = "--memory-zone"
        let list = try OptionList(text, option: option, knownKeys: [
            "size", "file", "shared", "hugepages", "hugepage_size", "host_numa_node", "id", "hotplug_size", "hotplugged_size",
            "prefault", "reserve", "mergeable",
        ])
        guard let id = list["id"], !id.isEmpty else { throw ConfigError(option: option, "id= is required") }
        guard let size = try list.size("size") else { throw ConfigError(option: option, "size= is required") }
        var zone = MemoryZoneConfig(id: id, size: size)
        zone.file = list["file"]
        zone.shared = try list.bool("shared") ?? false
        zone.hugepages = try list.bool("hugepages") ?? false
        zone.hugepageSize = try list.size("hugepage_size")
        zone.hostNUMANode = try list.integer("host_numa_node", as: UInt32.self)
        zone.hotplugSize = try list.size("hotplug_size")
        zone.hotpluggedSize = try list.size("hotplugged_size")
        zone.prefault = try list.bool("prefault") ?? false
        zone.reserve = try list.bool("reserve") ?? false
        zone.mergeable = try list.bool("mergeable") ?? false
        return zone
    }
}
