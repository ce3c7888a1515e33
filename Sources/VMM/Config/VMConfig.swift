// The VM configuration: the same value types behind the command line and the REST API, with
// Cloud Hypervisor's JSON field names and defaults (vmm/src/vm_config.rs, cloud-hypervisor.yaml).
// Every field of Cloud Hypervisor's VmConfig is decoded and echoed; unknown fields are ignored,
// as serde does for Cloud Hypervisor. Which fields ask for a feature this VMM lacks is decided
// in AbsentFeatures.swift.

/// What to boot: `--kernel`, `--initramfs`, `--cmdline` (`--firmware`, `--igvm` decoded; absent).
public struct PayloadConfig: Codable, Equatable, Sendable {
    /// Firmware image.
    public var firmware: String?
    /// The kernel: an ELF `vmlinux` with a PVH note, or a `bzImage`.
    public var kernel: String?
    /// The kernel command line.
    public var cmdline: String?
    /// The initramfs image.
    public var initramfs: String?
    /// An IGVM file.
    public var igvm: String?
    /// SEV-SNP host data.
    public var hostData: String?

    /// Nothing to boot.
    public init(firmware: String? = nil, kernel: String? = nil, cmdline: String? = nil, initramfs: String? = nil) {
        self.firmware = firmware
        self.kernel = kernel
        self.cmdline = cmdline
        self.initramfs = initramfs
    }

    enum CodingKeys: String, CodingKey { case firmware, kernel, cmdline, initramfs, igvm, hostData = "host_data" }
}

/// `--rng`: the virtio entropy device every VM has, as in Cloud Hypervisor.
public struct RngConfig: Codable, Equatable, Sendable {
    /// The host file the entropy comes from.
    public var src: String = "/dev/urandom"
    /// The PCI fields (id, iommu, segment, slot).
    public var pci = PCIDeviceCommon()

    /// Place the device behind the virtual IOMMU.
    public var iommu: Bool {
        get { pci.iommu }
        set { pci.iommu = newValue }
    }

    /// Entropy from `/dev/urandom`.
    public init(src: String = "/dev/urandom", iommu: Bool = false) {
        self.src = src
        pci.iommu = iommu
    }

    enum CodingKeys: String, CodingKey { case src }

    /// Decodes with Cloud Hypervisor's defaults for absent fields (`src` is required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        src = try c.decode(String.self, forKey: .src)
        pci = try PCIDeviceCommon(from: decoder)
    }

    /// Encodes as Cloud Hypervisor does.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(src, forKey: .src)
        try pci.encode(to: encoder)
    }

    /// The accepted `--rng` syntax.
    public static let syntax = "src=<entropy_source_path>,\(PCIDeviceCommon.syntax)"

    /// Parses `--rng` (for example `src=/dev/urandom`; empty means Cloud Hypervisor's default).
    public static func parse(_ text: String) throws(ConfigError) -> RngConfig {
        let list = try OptionList(text, option: "--rng", knownKeys: ["src"] + PCIDeviceCommon.keys)
        let src = list["src"] ?? "/dev/urandom"
        guard !src.isEmpty else { throw ConfigError(option: "--rng", "src= needs a path") }
        var config = RngConfig(src: src)
        config.pci = try PCIDeviceCommon.parse(list)
        return config
    }
}

/// A whole VM: Cloud Hypervisor's `VmConfig` with every field.
public struct VMConfig: Codable, Equatable, Sendable {
    /// vCPUs.
    public var cpus = CpusConfig()
    /// RAM.
    public var memory = MemoryConfig()
    /// What to boot.
    public var payload: PayloadConfig?
    /// Rate limits shared by several disks (`--rate-limit-group`; `nil` when there are none).
    public var rateLimitGroups: [RateLimitGroupConfig]?
    /// The virtio-blk disks, in `--disk` order (`nil` when there are none, as Cloud Hypervisor prints it).
    public var disks: [DiskConfig]?
    /// The virtio-net devices, in `--net` order (`nil` when there are none).
    public var net: [NetConfig]?
    /// The virtio entropy device.
    public var rng = RngConfig()
    /// The balloon.
    public var balloon: BalloonConfig?
    /// Generic vhost-user devices.
    public var genericVhostUser: [GenericVhostUserConfig]?
    /// virtio-fs devices.
    public var fs: [FsConfig]?
    /// virtio-pmem devices.
    public var pmem: [PmemConfig]?
    /// The 16550 serial port.
    public var serial = ConsoleConfig.defaultSerial
    /// The virtio console.
    public var console = ConsoleConfig.defaultConsole
    /// The debug console port.
    public var debugConsole = DebugConsoleConfig()
    /// VFIO devices.
    public var devices: [DeviceConfig]?
    /// vfio-user devices.
    public var userDevices: [UserDeviceConfig]?
    /// vDPA devices.
    public var vdpa: [VdpaConfig]?
    /// The vsock device.
    public var vsock: VsockConfig?
    /// The pvpanic device.
    public var pvpanic = false
    /// A virtual IOMMU.
    public var iommu = false
    /// Guest NUMA nodes.
    public var numa: [NumaConfig]?
    /// A virtio watchdog.
    public var watchdog = false
    /// The virtio RTC device.
    public var rtc: RtcConfig?
    /// Per-segment aperture weights.
    public var pciSegments: [PciSegmentConfig]?
    /// Platform settings.
    public var platform: PlatformConfig?
    /// A TPM.
    public var tpm: TpmConfig?
    /// Sandbox the VMM with Landlock.
    public var landlockEnable = false
    /// Extra Landlock rules.
    public var landlockRules: [LandlockConfig]?

    /// Cloud Hypervisor's defaults: 1 vCPU, 512 MiB, serial null, console tty.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case cpus, memory, payload, rateLimitGroups = "rate_limit_groups", disks, net, rng, balloon
        case genericVhostUser = "generic_vhost_user", genericVhostUserHyphen = "generic-vhost-user", fs, pmem, serial, console
        case debugConsole = "debug_console", devices, userDevices = "user_devices", vdpa, vsock, pvpanic, iommu, numa, watchdog
        case rtc, pciSegments = "pci_segments", platform, tpm, landlockEnable = "landlock_enable", landlockRules = "landlock_rules"
        // The body of Cloud Hypervisor before `payload` (v27 and older), which libvirt 9.0 still sends.
        case kernel, cmdline, initramfs
    }

    /// The pre-`payload` objects: `kernel: {path}`, `initramfs: {path}`, `cmdline: {args}`.
    private struct LegacyPath: Decodable { var path: String }
    private struct LegacyCmdline: Decodable { var args: String }

    /// Decodes with Cloud Hypervisor's defaults for absent fields; accepts the pre-`payload` form too.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cpus = try c.value(.cpus, default: CpusConfig())
        memory = try c.value(.memory, default: MemoryConfig())
        payload = try c.optional(.payload)
        let legacyKernel: LegacyPath? = try c.optional(.kernel)
        let legacyInitramfs: LegacyPath? = try c.optional(.initramfs)
        let legacyCmdline: LegacyCmdline? = try c.optional(.cmdline)
        // With `payload` present the older fields are unknown keys to Cloud Hypervisor: ignored.
        if payload == nil, legacyKernel != nil || legacyInitramfs != nil || legacyCmdline != nil {
            payload = PayloadConfig(kernel: legacyKernel?.path, cmdline: legacyCmdline?.args, initramfs: legacyInitramfs?.path)
        }
        rateLimitGroups = try c.optional(.rateLimitGroups)
        disks = try c.optional(.disks)
        net = try c.optional(.net)
        rng = try c.value(.rng, default: RngConfig())
        balloon = try c.optional(.balloon)
        // Cloud Hypervisor's code reads `generic_vhost_user`; its document spells the field
        // `generic-vhost-user`, which is taken too, as the document types it (a list, not null).
        genericVhostUser = try c.optional(.genericVhostUser)
            ?? (c.contains(.genericVhostUserHyphen) ? c.decode([GenericVhostUserConfig].self, forKey: .genericVhostUserHyphen) : nil)
        fs = try c.optional(.fs)
        pmem = try c.optional(.pmem)
        // The serial port is no PCI device: Cloud Hypervisor's SerialConfig has no such fields,
        // so none is read (an `id` of any type is an unknown member, ignored).
        serial = try c.value(.serial, default: SerialView(config: .defaultSerial)).config
        console = try c.value(.console, default: .defaultConsole)
        debugConsole = try c.value(.debugConsole, default: DebugConsoleConfig())
        devices = try c.optional(.devices)
        userDevices = try c.optional(.userDevices)
        vdpa = try c.optional(.vdpa)
        vsock = try c.optional(.vsock)
        pvpanic = try c.value(.pvpanic, default: false)
        iommu = try c.value(.iommu, default: false)
        numa = try c.optional(.numa)
        watchdog = try c.value(.watchdog, default: false)
        rtc = try c.optional(.rtc)
        pciSegments = try c.optional(.pciSegments)
        platform = try c.optional(.platform)
        tpm = try c.optional(.tpm)
        landlockEnable = try c.value(.landlockEnable, default: false)
        landlockRules = try c.optional(.landlockRules)
    }

    /// A console configuration read and written as Cloud Hypervisor's SerialConfig (`mode`,
    /// `file` and `socket` only).
    private struct SerialView: Codable {
        let config: ConsoleConfig
        init(config: ConsoleConfig) { self.config = config }
        init(from decoder: any Decoder) throws { config = try ConsoleConfig(serialFrom: decoder) }
        func encode(to encoder: any Encoder) throws { try config.encodeSerial(to: encoder) }
    }

    /// Encodes as Cloud Hypervisor serialises its VmConfig (absent options omitted).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(cpus, forKey: .cpus)
        try c.encode(memory, forKey: .memory)
        try c.encodeIfPresent(payload, forKey: .payload)
        try c.encodeIfPresent(rateLimitGroups, forKey: .rateLimitGroups)
        try c.encodeIfPresent(disks, forKey: .disks)
        try c.encodeIfPresent(net, forKey: .net)
        try c.encode(rng, forKey: .rng)
        try c.encodeIfPresent(balloon, forKey: .balloon)
        try c.encodeIfPresent(genericVhostUser, forKey: .genericVhostUser)
        try c.encodeIfPresent(fs, forKey: .fs)
        try c.encodeIfPresent(pmem, forKey: .pmem)
        try c.encode(SerialView(config: serial), forKey: .serial)
        try c.encode(console, forKey: .console)
        try c.encode(debugConsole, forKey: .debugConsole)
        try c.encodeIfPresent(devices, forKey: .devices)
        try c.encodeIfPresent(userDevices, forKey: .userDevices)
        try c.encodeIfPresent(vdpa, forKey: .vdpa)
        try c.encodeIfPresent(vsock, forKey: .vsock)
        try c.encode(pvpanic, forKey: .pvpanic)
        try c.encode(iommu, forKey: .iommu)
        try c.encodeIfPresent(numa, forKey: .numa)
        try c.encode(watchdog, forKey: .watchdog)
        try c.encodeIfPresent(rtc, forKey: .rtc)
        try c.encodeIfPresent(pciSegments, forKey: .pciSegments)
        try c.encodeIfPresent(platform, forKey: .platform)
        try c.encodeIfPresent(tpm, forKey: .tpm)
        try c.encode(landlockEnable, forKey: .landlockEnable)
        try c.encodeIfPresent(landlockRules, forKey: .landlockRules)
    }
}
