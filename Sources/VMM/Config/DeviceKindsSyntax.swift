// Cloud Hypervisor's option strings for the device kinds and platform settings beyond disks and
// NICs (`--balloon`, `--fs`, `--pmem`, `--vsock`, `--vdpa`, `--device`, `--user-device`,
// `--generic-vhost-user`, `--rtc`, `--numa`, `--platform`, `--pci-segment`, `--tpm`,
// `--landlock-rules`): parsed in full, so that a configuration is the same from the command
// line and the REST API; AbsentFeatures.swift says which ones this VMM cannot build.

extension OptionList {
    /// `key`, which the option requires.
    func required(_ key: String, syntax: String) throws(ConfigError) -> String {
        guard let value = self[key] else { throw ConfigError(option: option, "\(key)= is required: \(syntax)") }
        return value
    }

    /// `key` as a list of unsigned integers: `[0,2-4,6]` (brackets optional, ranges inclusive).
    func integerList<T: FixedWidthInteger & UnsignedInteger>(_ key: String, as type: T.Type) throws(ConfigError) -> [T]? {
        guard let text = self[key] else { return nil }
        let inner = text.hasPrefix("[") && text.hasSuffix("]") ? text.dropFirst().dropLast() : Substring(text)
        var result: [T] = []
        for item in inner.split(separator: ",") {
            let bounds = item.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count <= 2, let low = T(bounds[0]), let high = T(bounds[bounds.count - 1]), low <= high, high - low < 65536 else {
                throw ConfigError(option: option, "\(key)=\(text) is not a list of numbers like [0,2-4]")
            }
            var value = low
            while true {
                result.append(value)
                if value == high { break }
                value += 1
            }
        }
        return result
    }

    /// `key` as a list of strings: `[a,b]` or `a`.
    func stringList(_ key: String) -> [String]? {
        guard let text = self[key] else { return nil }
        let inner = text.hasPrefix("[") && text.hasSuffix("]") ? text.dropFirst().dropLast() : Substring(text)
        return inner.split(separator: ",").map { String($0).trimmingQuotes }
    }
}

extension String {
    fileprivate var trimmingQuotes: String {
        count >= 2 && hasPrefix("\"") && hasSuffix("\"") ? String(dropFirst().dropLast()) : self
    }
}

extension BalloonConfig {
    /// The accepted `--balloon` syntax.
    public static let syntax = "size=<balloon_size>,deflate_on_oom=on|off,free_page_reporting=on|off,\(PCIDeviceCommon.syntax)"

    /// Parses `--balloon`.
    public static func parse(_ text: String) throws(ConfigError) -> BalloonConfig {
        let list = try OptionList(text, option: "--balloon", knownKeys: ["size", "deflate_on_oom", "free_page_reporting"] + PCIDeviceCommon.keys)
        var config = BalloonConfig(size: try list.size("size") ?? 0)
        config.deflateOnOOM = try list.bool("deflate_on_oom") ?? false
        config.freePageReporting = try list.bool("free_page_reporting") ?? false
        config.pci = try PCIDeviceCommon.parse(list)
        return config
    }
}

extension FsConfig {
    /// The accepted `--fs` syntax.
    public static let syntax = "tag=<tag_name>,socket=<socket_path>,num_queues=<number_of_queues>,queue_size=<size_of_each_queue>,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"

    /// Parses one `--fs`.
    public static func parse(_ text: String) throws(ConfigError) -> FsConfig {
        let list = try OptionList(text, option: "--fs", knownKeys: ["tag", "socket", "num_queues", "queue_size", "id", "pci_segment", "pci_device_id"])
        var config = FsConfig(tag: try list.required("tag", syntax: syntax), socket: try list.required("socket", syntax: syntax))
        guard config.tag.utf8.count <= 36 else { throw ConfigError(option: "--fs", "tag=\(config.tag) is longer than 36 bytes") }
        config.numQueues = UInt64(try list.integer("num_queues", as: UInt16.self, in: 1...1024) ?? 1)
        config.queueSize = try list.integer("queue_size", as: UInt16.self) ?? 1024
        config.pci = try PCIDeviceCommon.parse(list)
        return config
    }
}

extension PmemConfig {
    /// The accepted `--pmem` syntax.
    public static let syntax = "file=<backing_file_path>,size=<persistent_memory_size>,discard_writes=on|off,\(PCIDeviceCommon.syntax)"

    /// Parses one `--pmem`.
    public static func parse(_ text: String) throws(ConfigError) -> PmemConfig {
        let list = try OptionList(text, option: "--pmem", knownKeys: ["file", "size", "discard_writes"] + PCIDeviceCommon.keys)
        var config = PmemConfig(file: try list.required("file", syntax: syntax))
        config.size = try list.size("size")
        config.discardWrites = try list.bool("discard_writes") ?? false
        config.pci = try PCIDeviceCommon.parse(list)
        return config
    }
}

extension VsockConfig {
    /// The accepted `--vsock` syntax.
    public static let syntax = "cid=<context_id>,socket=<socket_path>,\(PCIDeviceCommon.syntax)"

    /// Parses `--vsock`.
    public static func parse(_ text: String) throws(ConfigError) -> VsockConfig {
        let list = try OptionList(text, option: "--vsock", knownKeys: ["cid", "socket"] + PCIDeviceCommon.keys)
        guard let cid = try list.integer("cid", as: UInt32.self) else { throw ConfigError(option: "--vsock", "cid= is required: \(syntax)") }
        var config = VsockConfig(cid: cid, socket: try list.required("socket", syntax: syntax))
        config.pci = try PCIDeviceCommon.parse(list)
        return config
    }
}

extension VdpaConfig {
    /// The accepted `--vdpa` syntax.
    public static let syntax = "path=<device_path>,num_queues=<number_of_queues>,\(PCIDeviceCommon.syntax)"

    /// Parses one `--vdpa`.
    public static func parse(_ text: String) throws(ConfigError) -> VdpaConfig {
        let list = try OptionList(text, option: "--vdpa", knownKeys: ["path", "num_queues"] + PCIDeviceCommon.keys)
        var config = VdpaConfig(path: try list.required("path", syntax: syntax))
        config.numQueues = UInt64(try list.integer("num_queues", as: UInt16.self) ?? 1)
        config.pci = try PCIDeviceCommon.parse(list)
        return config
    }
}

extension DeviceConfig {
    /// The accepted `--device` syntax.
    public static let syntax = "path=<device_path>,fd=<vfio_cdev_fd>,x_nv_gpudirect_clique=<clique_id>,x_exclude_mmap_bars=<list_of_bars>,\(PCIDeviceCommon.syntax)"

    /// Parses one `--device` (`fd=` names a descriptor this process inherited).
    public static func parse(_ text: String) throws(ConfigError) -> DeviceConfig {
        let list = try OptionList(text, option: "--device", knownKeys: ["path", "fd", "x_nv_gpudirect_clique", "x_exclude_mmap_bars"] + PCIDeviceCommon.keys)
        var config = DeviceConfig(path: list["path"])
        config.fd = try list.integer("fd", as: UInt32.self).map { Int32(clamping: $0) }
        guard config.path != nil || config.fd != nil else { throw ConfigError(option: "--device", "give path= or fd=: \(syntax)") }
        config.xNvGpudirectClique = try list.integer("x_nv_gpudirect_clique", as: UInt8.self)
        config.xExcludeMmapBars = try list.integerList("x_exclude_mmap_bars", as: UInt64.self) ?? []
        config.pci = try PCIDeviceCommon.parse(list)
        return config
    }
}

extension UserDeviceConfig {
    /// The accepted `--user-device` syntax.
    public static let syntax = "socket=<socket_path>,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"

    /// Parses one `--user-device`.
    public static func parse(_ text: String) throws(ConfigError) -> UserDeviceConfig {
        let list = try OptionList(text, option: "--user-device", knownKeys: ["socket", "id", "pci_segment", "pci_device_id"])
        var config = UserDeviceConfig(socket: try list.required("socket", syntax: syntax))
        config.pci = try PCIDeviceCommon.parse(list)
        return config
    }
}

extension GenericVhostUserConfig {
    /// The accepted `--generic-vhost-user` syntax.
    public static let syntax = "socket=<socket_path>,queue_sizes=<list_of_queue_sizes>,device_type=<virtio_device_type>,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>"

    /// Virtio device type names Cloud Hypervisor accepts for `device_type=`.
    static let deviceTypes: [String: UInt32] = [
        "net": 1, "block": 2, "console": 3, "rng": 4, "balloon": 5, "scsi": 8, "9p": 9, "gpu": 16, "input": 18,
        "vsock": 19, "crypto": 20, "fs": 26, "pmem": 27, "sound": 25, "mem": 24, "i2c": 34, "scmi": 32, "gpio": 41,
    ]

    /// Parses one `--generic-vhost-user`.
    public static func parse(_ text: String) throws(ConfigError) -> GenericVhostUserConfig {
        let option = "--generic-vhost-user"
        let list = try OptionList(text, option: option, knownKeys: ["socket", "queue_sizes", "device_type", "virtio_id", "id", "pci_segment", "pci_device_id"])
        let socket = try list.required("socket", syntax: syntax)
        guard let sizes = try list.integerList("queue_sizes", as: UInt16.self), !sizes.isEmpty else {
            throw ConfigError(option: option, "queue_sizes= is required: \(syntax)")
        }
        guard let typeText = list["device_type"] ?? list["virtio_id"] else { throw ConfigError(option: option, "device_type= is required: \(syntax)") }
        guard let type = UInt32(typeText) ?? deviceTypes[typeText.lowercased()] else {
            throw ConfigError(option: option, "device_type=\(typeText) is not a virtio device number or name (\(deviceTypes.keys.sorted().joined(separator: ", ")))")
        }
        var config = GenericVhostUserConfig(socket: socket, queueSizes: sizes, deviceType: type)
        config.pci = try PCIDeviceCommon.parse(list)
        return config
    }
}

extension RtcConfig {
    /// The accepted `--rtc` syntax (an empty value enables the device with defaults).
    public static let syntax = PCIDeviceCommon.syntax

    /// Parses `--rtc`.
    public static func parse(_ text: String) throws(ConfigError) -> RtcConfig {
        var config = RtcConfig()
        config.pci = try PCIDeviceCommon.parse(try OptionList(text, option: "--rtc", knownKeys: PCIDeviceCommon.keys))
        return config
    }
}

extension NumaConfig {
    /// The accepted `--numa` syntax.
    public static let syntax = "guest_numa_id=<node_id>,cpus=<cpus_id>,distances=<list_of_distances_to_destination_nodes>,memory_zones=<list_of_memory_zones>,pci_segments=<list_of_pci_segments>,device_id=<device_id>"

    /// Parses one `--numa`.
    public static func parse(_ text: String) throws(ConfigError) -> NumaConfig {
        let list = try OptionList(text, option: "--numa", knownKeys: ["guest_numa_id", "cpus", "distances", "memory_zones", "pci_segments", "device_id"])
        guard let id = try list.integer("guest_numa_id", as: UInt32.self) else { throw ConfigError(option: "--numa", "guest_numa_id= is required") }
        var config = NumaConfig(guestNUMAID: id)
        config.cpus = try list.integerList("cpus", as: UInt32.self)
        if let text = list["distances"] {
            let bad = ConfigError(option: "--numa", "distances=\(text) is not a list like [1@20,2@25]")
            guard text.hasPrefix("["), text.hasSuffix("]") else { throw bad }
            config.distances = try text.dropFirst().dropLast().split(separator: ",").map { (item) throws(ConfigError) -> NumaDistance in
                let parts = item.split(separator: "@")
                guard parts.count == 2, let node = UInt32(parts[0]), let distance = UInt8(parts[1]) else { throw bad }
                return NumaDistance(destination: node, distance: distance)
            }
        }
        config.memoryZones = list.stringList("memory_zones")
        config.pciSegments = try list.integerList("pci_segments", as: UInt16.self)
        config.deviceID = list["device_id"]
        return config
    }
}

extension PlatformConfig {
    /// The accepted `--platform` syntax.
    public static let syntax = "num_pci_segments=<num_pci_segments>,iommu_segments=<list_of_segments>,iommu_address_width=<bits>,serial_number=<dmi_device_serial_number>,uuid=<dmi_device_uuid>,oem_strings=<dmi_oem_strings>,system_manufacturer=,system_product_name=,system_version=,system_serial_number=,system_uuid=,system_sku_number=,system_family=,chassis_asset_tag=,iommufd=on|off,vfio_p2p_dma=on|off"

    /// Parses `--platform`.
    public static func parse(_ text: String) throws(ConfigError) -> PlatformConfig {
        let list = try OptionList(text, option: "--platform", knownKeys: [
            "num_pci_segments", "iommu_segments", "iommu_address_width", "serial_number", "uuid", "oem_strings", "iommufd", "iommufd_fd",
            "vfio_p2p_dma", "tdx", "sev_snp", "system_manufacturer", "system_product_name", "system_version", "system_serial_number",
            "system_uuid", "system_sku_number", "system_family", "chassis_asset_tag",
        ])
        var config = PlatformConfig()
        config.numPCISegments = try list.integer("num_pci_segments", as: UInt16.self) ?? 1
        config.iommuSegments = try list.integerList("iommu_segments", as: UInt16.self)
        config.iommuAddressWidthBits = try list.integer("iommu_address_width", as: UInt8.self, in: 1...64) ?? 64
        config.systemSerialNumber = list["system_serial_number"] ?? list["serial_number"]
        config.systemUUID = list["system_uuid"] ?? list["uuid"]
        config.oemStrings = list.stringList("oem_strings")
        config.systemManufacturer = list["system_manufacturer"]
        config.systemProductName = list["system_product_name"]
        config.systemVersion = list["system_version"]
        config.systemSKUNumber = list["system_sku_number"]
        config.systemFamily = list["system_family"]
        config.chassisAssetTag = list["chassis_asset_tag"]
        config.iommufd = try list.bool("iommufd") ?? (list["iommufd_fd"] != nil)
        config.vfioP2PDMA = try list.bool("vfio_p2p_dma") ?? true
        config.tdx = try list.bool("tdx") ?? false
        config.sevSNP = try list.bool("sev_snp") ?? false
        return config
    }
}

extension PciSegmentConfig {
    /// The accepted `--pci-segment` syntax.
    public static let syntax = "pci_segment=<segment_id>,mmio32_aperture_weight=<scale>,mmio64_aperture_weight=<scale>"

    /// Parses one `--pci-segment`.
    public static func parse(_ text: String) throws(ConfigError) -> PciSegmentConfig {
        let list = try OptionList(text, option: "--pci-segment", knownKeys: ["pci_segment", "mmio32_aperture_weight", "mmio64_aperture_weight"])
        var config = PciSegmentConfig(pciSegment: try list.integer("pci_segment", as: UInt16.self) ?? 0)
        config.mmio32ApertureWeight = try list.integer("mmio32_aperture_weight", as: UInt32.self) ?? 1
        config.mmio64ApertureWeight = try list.integer("mmio64_aperture_weight", as: UInt32.self) ?? 1
        return config
    }
}

extension TpmConfig {
    /// The accepted `--tpm` syntax.
    public static let syntax = "socket=<path/to/a/socket>"

    /// Parses `--tpm`.
    public static func parse(_ text: String) throws(ConfigError) -> TpmConfig {
        let list = try OptionList(text, option: "--tpm", knownKeys: ["socket"])
        return TpmConfig(socket: try list.required("socket", syntax: syntax))
    }
}

extension LandlockConfig {
    /// The accepted `--landlock-rules` syntax.
    public static let syntax = "path=<path/to/{file/dir}>,access=[rw]"

    /// Parses one `--landlock-rules`.
    public static func parse(_ text: String) throws(ConfigError) -> LandlockConfig {
        let list = try OptionList(text, option: "--landlock-rules", knownKeys: ["path", "access"])
        let rule = LandlockConfig(path: try list.required("path", syntax: syntax), access: try list.required("access", syntax: syntax))
        try rule.validateAccess()
        return rule
    }
}
