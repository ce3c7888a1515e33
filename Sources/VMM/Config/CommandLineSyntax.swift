// Turning Cloud Hypervisor's option strings into configuration values.

extension CpusConfig {
    /// The accepted `--cpus` syntax, for help and errors.
    public static let syntax = "boot=<boot_vcpus>,max=<max_vcpus>,topology=<threads_per_core>:<cores_per_die>:<dies_per_package>:<packages>,kvm_hyperv=on|off,max_phys_bits=<bits>"

    /// Parses `--cpus` (for example `boot=2,max=4,topology=1:2:1:2`). `max` defaults to `boot`.
    public static func parse(_ text: String) throws(ConfigError) -> CpusConfig {
        let list = try OptionList(text, option: "--cpus", knownKeys: ["boot", "max", "topology", "kvm_hyperv", "max_phys_bits"])
        var config = CpusConfig()
        config.bootVCPUs = try list.integer("boot", as: UInt8.self, in: 1...254) ?? 1
        config.maxVCPUs = try list.integer("max", as: UInt8.self, in: 1...254) ?? config.bootVCPUs
        config.kvmHyperv = try list.bool("kvm_hyperv") ?? false
        config.maxPhysBits = try list.integer("max_phys_bits", as: UInt8.self, in: 32...52) ?? 46
        if let text = list["topology"] {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map { UInt8($0) }
            guard parts.count == 4, let t = parts[0], let c = parts[1], let d = parts[2], let p = parts[3], t > 0, c > 0, d > 0, p > 0 else {
                throw ConfigError(option: "--cpus", "topology=\(text) is not <threads_per_core>:<cores_per_die>:<dies_per_package>:<packages> with each a number from 1 to 255")
            }
            config.topology = CpuTopology(threadsPerCore: t, coresPerDie: c, diesPerPackage: d, packages: p)
        }
        return config
    }
}

extension MemoryConfig {
    /// The accepted `--memory` syntax.
    public static let syntax = "size=<guest_memory_size>,mergeable=on|off,shared=on|off,hugepages=on|off,hugepage_size=<size>,prefault=on|off,thp=on|off"

    /// Parses `--memory` (for example `size=1G,hugepages=on`).
    public static func parse(_ text: String) throws(ConfigError) -> MemoryConfig {
        let list = try OptionList(text, option: "--memory", knownKeys: ["size", "mergeable", "shared", "hugepages", "hugepage_size", "prefault", "thp"])
        var config = MemoryConfig()
        config.size = try list.size("size") ?? config.size
        config.mergeable = try list.bool("mergeable") ?? false
        config.shared = try list.bool("shared") ?? false
        config.hugepages = try list.bool("hugepages") ?? false
        config.hugepageSize = try list.size("hugepage_size")
        config.prefault = try list.bool("prefault") ?? false
        config.thp = try list.bool("thp") ?? true
        return config
    }
}

extension ConsoleConfig {
    /// The accepted `--serial` / `--console` syntax.
    public static let syntax = "off|null|pty|tty|file=</path/to/a/file>"

    /// Parses `--serial` or `--console` (`option` names which, for errors).
    public static func parse(_ text: String, option: String) throws(ConfigError) -> ConsoleConfig {
        let list = try OptionList(text, option: option, knownKeys: ["mode", "file", "iommu"], bareKey: "mode")
        let iommu = try list.bool("iommu") ?? false
        if let file = list["file"] {
            guard list["mode"] == nil else { throw ConfigError(option: option, "give either a mode (\(syntax)) or file=, not both") }
            guard !file.isEmpty else { throw ConfigError(option: option, "file= needs a path") }
            return ConsoleConfig(mode: .file, file: file, iommu: iommu)
        }
        switch list["mode"] {
        case "off": return ConsoleConfig(mode: .off, iommu: iommu)
        case "null": return ConsoleConfig(mode: .null, iommu: iommu)
        case "pty": return ConsoleConfig(mode: .pty, iommu: iommu)
        case "tty": return ConsoleConfig(mode: .tty, iommu: iommu)
        case let other?: throw ConfigError(option: option, "'\(other)' is not accepted; use \(syntax)")
        case nil: throw ConfigError(option: option, "no mode given; use \(syntax)")
        }
    }
}
