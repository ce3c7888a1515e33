// `--disk`: virtio-blk disks, with Cloud Hypervisor's option and JSON names (DiskConfig).

/// The image format of a disk (`image_type=`), spelled as Cloud Hypervisor's `ImageType`.
public enum DiskImageType: String, Codable, Sendable, CaseIterable {
    /// A raw image: the file's bytes are the disk's bytes.
    case raw = "Raw"
    /// A qcow2 image.
    case qcow2 = "Qcow2"
    /// A fixed VHD image.
    case fixedVhd = "FixedVhd"
    /// A VHDX image.
    case vhdx = "Vhdx"
    /// Detect the format from the image's first bytes.
    case unknown = "Unknown"
}

/// One `--disk`.
public struct DiskConfig: Codable, Equatable, Sendable {
    /// The image file or block device.
    public var path: String?
    /// Refuse writes (the guest sees a read-only disk).
    public var readonly = false
    /// Open the image with `O_DIRECT`.
    public var direct = false
    /// Place the device behind the virtual IOMMU (not supported yet).
    public var iommu = false
    /// Request queues.
    public var numQueues: Int = 1
    /// Entries per queue.
    public var queueSize: UInt16 = 128
    /// Use a vhost-user back-end instead of an image (not supported yet).
    public var vhostUser = false
    /// The vhost-user socket.
    public var vhostSocket: String?
    /// The device id (`_disk<N>` when not given).
    public var id: String?
    /// The serial `GET_ID` returns (built from the image's inode when not given).
    public var serial: String?
    /// The PCI segment the device sits on.
    public var pciSegment: UInt16 = 0
    /// Let a qcow2 image use its backing file.
    public var backingFiles = false
    /// Keep the image sparse: discard frees host space.
    public var sparse = true
    /// The image format; `nil` or `Unknown` detects it.
    public var imageType: DiskImageType?
    /// I/O throttling (`bw_*`, `ops_*`); `nil` for none.
    public var rateLimiterConfig: RateLimiterConfig?
    /// The `--rate-limit-group` whose limit this disk shares (instead of a limit of its own).
    public var rateLimitGroup: String?

    /// A writable raw disk at `path` with one queue of 128 entries.
    public init(path: String? = nil) { self.path = path }

    enum CodingKeys: String, CodingKey {
        case path, readonly, direct, iommu, numQueues = "num_queues", queueSize = "queue_size", vhostUser = "vhost_user"
        case vhostSocket = "vhost_socket", id, serial, pciSegment = "pci_segment", backingFiles = "backing_files", sparse
        case imageType = "image_type", rateLimiterConfig = "rate_limiter_config", rateLimitGroup = "rate_limit_group"
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decodeIfPresent(String.self, forKey: .path)
        readonly = try c.decodeIfPresent(Bool.self, forKey: .readonly) ?? false
        direct = try c.decodeIfPresent(Bool.self, forKey: .direct) ?? false
        iommu = try c.decodeIfPresent(Bool.self, forKey: .iommu) ?? false
        numQueues = try c.decodeIfPresent(Int.self, forKey: .numQueues) ?? 1
        queueSize = try c.decodeIfPresent(UInt16.self, forKey: .queueSize) ?? 128
        vhostUser = try c.decodeIfPresent(Bool.self, forKey: .vhostUser) ?? false
        vhostSocket = try c.decodeIfPresent(String.self, forKey: .vhostSocket)
        id = try c.decodeIfPresent(String.self, forKey: .id)
        serial = try c.decodeIfPresent(String.self, forKey: .serial)
        pciSegment = try c.decodeIfPresent(UInt16.self, forKey: .pciSegment) ?? 0
        backingFiles = try c.decodeIfPresent(Bool.self, forKey: .backingFiles) ?? false
        sparse = try c.decodeIfPresent(Bool.self, forKey: .sparse) ?? true
        imageType = try c.decodeIfPresent(DiskImageType.self, forKey: .imageType)
        rateLimiterConfig = try c.decodeIfPresent(RateLimiterConfig.self, forKey: .rateLimiterConfig)
        rateLimitGroup = try c.decodeIfPresent(String.self, forKey: .rateLimitGroup)
    }

    /// The accepted `--disk` syntax.
    public static let syntax = "path=<disk_image_path>,readonly=on|off,direct=on|off,iommu=on|off,num_queues=<number_of_queues>,queue_size=<size_of_each_queue>,vhost_user=on|off,socket=<vhost_user_socket_path>,id=<device_id>,pci_segment=<segment_id>,serial=<serial_number>,backing_files=on|off,sparse=on|off,image_type=raw|qcow2,\(RateLimiterConfig.syntax),rate_limit_group=<group_id>"

    /// Parses one `--disk` value (for example `path=disk.img,readonly=on,num_queues=2`).
    public static func parse(_ text: String) throws(ConfigError) -> DiskConfig {
        let list = try OptionList(text, option: "--disk", knownKeys: [
            "path", "readonly", "direct", "iommu", "num_queues", "queue_size", "vhost_user", "socket", "id", "pci_segment",
            "serial", "backing_files", "sparse", "image_type", "rate_limit_group",
        ] + RateLimiterConfig.keys)
        var config = DiskConfig(path: list["path"])
        config.readonly = try list.bool("readonly") ?? false
        config.direct = try list.bool("direct") ?? false
        config.iommu = try list.bool("iommu") ?? false
        config.numQueues = Int(try list.integer("num_queues", as: UInt16.self, in: 1...1024) ?? 1)
        config.queueSize = try list.integer("queue_size", as: UInt16.self, in: 1...32768) ?? 128
        config.vhostUser = try list.bool("vhost_user") ?? false
        config.vhostSocket = list["socket"]
        config.id = list["id"]
        config.pciSegment = try list.integer("pci_segment", as: UInt16.self) ?? 0
        config.serial = list["serial"]
        config.backingFiles = try list.bool("backing_files") ?? false
        config.sparse = try list.bool("sparse") ?? true
        config.rateLimiterConfig = try RateLimiterConfig.parse(list, option: "--disk")
        if let group = list["rate_limit_group"], !group.isEmpty { config.rateLimitGroup = group }
        if let type = list["image_type"] {
            switch type.lowercased() {
            case "raw": config.imageType = .raw
            case "qcow2": config.imageType = .qcow2
            case "vhd", "fixedvhd": config.imageType = .fixedVhd
            case "vhdx": config.imageType = .vhdx
            default: throw ConfigError(option: "--disk", "image_type=\(type) is not accepted; use raw or qcow2")
            }
        }
        return config
    }

    /// Checks one disk, as Cloud Hypervisor does, naming `--disk` and the image.
    public func validate() throws(ConfigError) {
        if vhostUser || vhostSocket != nil {
            throw ConfigError(option: "--disk", "vhost_user=on is not supported yet; give path= to an image")
        }
        guard let path, !path.isEmpty else { throw ConfigError(option: "--disk", "path= is required: \(Self.syntax)") }
        if iommu { throw ConfigError(option: "--disk", "iommu=on is not supported yet (\(path))") }
        if pciSegment != 0 { throw ConfigError(option: "--disk", "pci_segment=\(pciSegment): only segment 0 exists (\(path))") }
        guard (1...1024).contains(numQueues) else {
            throw ConfigError(option: "--disk", "num_queues=\(numQueues) is out of range; give 1 to 1024 (\(path))")
        }
        guard queueSize >= 2, queueSize <= 32768, queueSize.nonzeroBitCount == 1 else {
            throw ConfigError(option: "--disk", "queue_size=\(queueSize) must be a power of two from 2 to 32768 (\(path))")
        }
        if let serial, serial.utf8.count > 20 {
            throw ConfigError(option: "--disk", "serial=\(serial) is longer than the 20 bytes virtio-blk returns (\(path))")
        }
        if let imageType, imageType == .fixedVhd || imageType == .vhdx {
            throw ConfigError(option: "--disk", "image_type \(imageType.rawValue) is not supported; use raw or qcow2 (\(path))")
        }
        if let id, id.isEmpty { throw ConfigError(option: "--disk", "id= must not be empty (\(path))") }
        try rateLimiterConfig?.validate(option: "--disk")
        if let rateLimitGroup, rateLimiterConfig != nil {
            throw ConfigError(option: "--disk", "give either bw_*/ops_* limits or rate_limit_group=\(rateLimitGroup), not both (\(path))")
        }
    }
}
