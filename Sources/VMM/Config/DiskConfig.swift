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
    /// The device (slot) number on the segment's bus, chosen by the VMM when not given.
    public var pciDeviceID: UInt8?
    /// Host CPUs for each queue's I/O (`queue_affinity=[0@[1,2]]`).
    public var queueAffinity: [VirtQueueAffinity]?
    /// How the image lock is taken: `Full` (the default, byte 0 to the end) or `ByteRange`.
    public var lockGranularity: LockGranularity?
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
    /// Cloud Hypervisor's test switch `_disable_io_uring=on`: run the disk synchronously
    /// even where the host has io_uring (not in the OpenAPI document; JSON `disable_io_uring`).
    public var disableIoUring = false
    /// Cloud Hypervisor's test switch `_disable_aio=on` (JSON `disable_aio`); this VMM has no
    /// Linux AIO path, so it changes nothing here.
    public var disableAio = false

    /// A writable raw disk at `path` with one queue of 128 entries.
    public init(path: String? = nil) { self.path = path }

    enum CodingKeys: String, CodingKey {
        case path, readonly, direct, iommu, numQueues = "num_queues", queueSize = "queue_size", vhostUser = "vhost_user"
        case vhostSocket = "vhost_socket", id, serial, pciSegment = "pci_segment", backingFiles = "backing_files", sparse
        case imageType = "image_type", rateLimiterConfig = "rate_limiter_config", rateLimitGroup = "rate_limit_group"
        case pciDeviceID = "pci_device_id", queueAffinity = "queue_affinity", lockGranularity = "lock_granularity"
        case disableIoUring = "disable_io_uring", disableAio = "disable_aio"
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decodeIfPresent(String.self, forKey: .path)
        readonly = try c.value(.readonly, default: false)
        direct = try c.value(.direct, default: false)
        iommu = try c.value(.iommu, default: false)
        // usize in Cloud Hypervisor: any u64 decodes; validation names what is out of range.
        numQueues = Int(clamping: try c.value(.numQueues, default: UInt64(1)))
        queueSize = try c.value(.queueSize, default: 128)
        vhostUser = try c.value(.vhostUser, default: false)
        vhostSocket = try c.decodeIfPresent(String.self, forKey: .vhostSocket)
        id = try c.decodeIfPresent(String.self, forKey: .id)
        serial = try c.decodeIfPresent(String.self, forKey: .serial)
        pciSegment = try c.value(.pciSegment, default: 0)
        backingFiles = try c.value(.backingFiles, default: false)
        sparse = try c.value(.sparse, default: true)
        // Fields with a default in Cloud Hypervisor (not options there): absent is the default, null is refused.
        imageType = c.contains(.imageType) ? try c.decode(DiskImageType.self, forKey: .imageType) : nil
        rateLimiterConfig = try c.decodeIfPresent(RateLimiterConfig.self, forKey: .rateLimiterConfig)
        rateLimitGroup = try c.decodeIfPresent(String.self, forKey: .rateLimitGroup)
        pciDeviceID = try c.optional(.pciDeviceID)
        queueAffinity = try c.optional(.queueAffinity)
        lockGranularity = c.contains(.lockGranularity) ? try c.decode(LockGranularity.self, forKey: .lockGranularity) : nil
        disableIoUring = try c.value(.disableIoUring, default: false)
        disableAio = try c.value(.disableAio, default: false)
    }

    /// Encodes as Cloud Hypervisor does (`iommu` only when set, absent options omitted).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(path, forKey: .path)
        try c.encode(readonly, forKey: .readonly)
        try c.encode(direct, forKey: .direct)
        try c.encodeIfTrue(iommu, forKey: .iommu)
        try c.encode(numQueues, forKey: .numQueues)
        try c.encode(queueSize, forKey: .queueSize)
        try c.encode(vhostUser, forKey: .vhostUser)
        try c.encodeIfPresent(vhostSocket, forKey: .vhostSocket)
        try c.encodeIfPresent(id, forKey: .id)
        try c.encodeIfPresent(serial, forKey: .serial)
        try c.encode(pciSegment, forKey: .pciSegment)
        try c.encodeIfPresent(pciDeviceID, forKey: .pciDeviceID)
        try c.encode(backingFiles, forKey: .backingFiles)
        try c.encode(sparse, forKey: .sparse)
        try c.encodeIfPresent(imageType, forKey: .imageType)
        try c.encodeIfPresent(rateLimiterConfig, forKey: .rateLimiterConfig)
        try c.encodeIfPresent(rateLimitGroup, forKey: .rateLimitGroup)
        try c.encodeIfPresent(queueAffinity, forKey: .queueAffinity)
        try c.encodeIfPresent(lockGranularity, forKey: .lockGranularity)
        try c.encode(disableIoUring, forKey: .disableIoUring)
        try c.encode(disableAio, forKey: .disableAio)
    }

    /// The accepted `--disk` syntax.
    public static let syntax = "path=<disk_image_path>,readonly=on|off,direct=on|off,iommu=on|off,num_queues=<number_of_queues>,queue_size=<size_of_each_queue>,vhost_user=on|off,socket=<vhost_user_socket_path>,id=<device_id>,pci_segment=<segment_id>,pci_device_id=<pci_slot>,serial=<serial_number>,backing_files=on|off,sparse=on|off,image_type=raw|qcow2|vhd|vhdx,lock_granularity=byte-range|full,queue_affinity=<list_of_queue_indices_with_their_associated_cpuset>,\(RateLimiterConfig.syntax),rate_limit_group=<group_id>"

    /// Parses one `--disk` value (for example `path=disk.img,readonly=on,num_queues=2`).
    public static func parse(_ text: String) throws(ConfigError) -> DiskConfig {
        let list = try OptionList(text, option: "--disk", knownKeys: [
            "path", "readonly", "direct", "iommu", "num_queues", "queue_size", "vhost_user", "socket", "id", "pci_segment",
            "serial", "backing_files", "sparse", "image_type", "rate_limit_group", "pci_device_id", "queue_affinity",
            "lock_granularity", "_disable_io_uring", "_disable_aio",
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
        config.pciDeviceID = try list.integer("pci_device_id", as: UInt8.self, in: 0...31)
        // Cloud Hypervisor's test-only switches (the synchronous path; there is no AIO path here).
        config.disableIoUring = try list.bool("_disable_io_uring") ?? false
        config.disableAio = try list.bool("_disable_aio") ?? false
        if let affinity = list["queue_affinity"] { config.queueAffinity = try VirtQueueAffinity.parseList(affinity, option: "--disk") }
        switch list["lock_granularity"]?.lowercased() {
        case nil: break
        case "full": config.lockGranularity = .full
        case "byte-range", "byterange": config.lockGranularity = .byteRange
        case let other?: throw ConfigError(option: "--disk", "lock_granularity=\(other) is not accepted; use byte-range or full")
        }
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
    /// A vhost-user disk (`vhost_user=on`) is named by its socket instead of a path.
    public func validate() throws(ConfigError) {
        let path: String
        if vhostUser {
            path = "socket=\(vhostSocket ?? "")"
        } else {
            guard let image = self.path, !image.isEmpty else { throw ConfigError(option: "--disk", "path= is required: \(Self.syntax)") }
            path = image
        }
        guard (1...1024).contains(numQueues) else {
            throw ConfigError(option: "--disk", "num_queues=\(numQueues) is out of range; give 1 to 1024 (\(path))")
        }
        guard queueSize >= 2, queueSize <= 32768, queueSize.nonzeroBitCount == 1 else {
            throw ConfigError(option: "--disk", "queue_size=\(queueSize) must be a power of two from 2 to 32768 (\(path))")
        }
        if let serial, serial.utf8.count > 20 {
            throw ConfigError(option: "--disk", "serial=\(serial) is longer than the 20 bytes virtio-blk returns (\(path))")
        }
        if let id, id.isEmpty { throw ConfigError(option: "--disk", "id= must not be empty (\(path))") }
        try rateLimiterConfig?.validate(option: "--disk")
        if let rateLimitGroup, rateLimiterConfig != nil {
            throw ConfigError(option: "--disk", "give either bw_*/ops_* limits or rate_limit_group=\(rateLimitGroup), not both (\(path))")
        }
    }
}

/// How a disk image is locked (`lock_granularity=`), spelled as Cloud Hypervisor's `LockGranularity`.
public enum LockGranularity: String, Codable, Sendable, CaseIterable {
    /// A lock on a byte range.
    case byteRange = "ByteRange"
    /// A lock on the whole file.
    case full = "Full"
}

/// Host CPUs for one queue (`queue_affinity=[0@[1,2],1@[3]]`).
public struct VirtQueueAffinity: Codable, Equatable, Sendable {
    /// The queue.
    public var queueIndex: UInt16
    /// The host CPUs.
    public var hostCPUs: [UInt64]

    /// Creates an affinity.
    public init(queueIndex: UInt16, hostCPUs: [UInt64]) {
        self.queueIndex = queueIndex
        self.hostCPUs = hostCPUs
    }

    enum CodingKeys: String, CodingKey { case queueIndex = "queue_index", hostCPUs = "host_cpus" }

    /// Parses Cloud Hypervisor's `[<index>@[<cpu>,<cpu>-<cpu>],...]` list.
    public static func parseList(_ text: String, option: String) throws(ConfigError) -> [VirtQueueAffinity] {
        try AffinityList.parse(text, option: option, key: "queue_affinity").map { VirtQueueAffinity(queueIndex: UInt16(clamping: $0.index), hostCPUs: $0.cpus.map(UInt64.init)) }
    }
}

/// Cloud Hypervisor's `[<index>@[<cpus>],...]` syntax (`affinity=`, `queue_affinity=`).
enum AffinityList {
    /// Parses the list into (index, host CPUs) pairs; CPU ranges `a-b` are expanded.
    static func parse(_ text: String, option: String, key: String) throws(ConfigError) -> [(index: UInt32, cpus: [UInt32])] {
        let bad = ConfigError(option: option, "\(key)=\(text) is not a list like [0@[1,2],1@[3-5]]")
        guard text.hasPrefix("["), text.hasSuffix("]") else { throw bad }
        var result: [(index: UInt32, cpus: [UInt32])] = []
        var rest = Substring(text.dropFirst().dropLast())
        while !rest.isEmpty {
            guard let at = rest.firstIndex(of: "@"), let index = UInt32(rest[..<at]) else { throw bad }
            rest = rest[rest.index(after: at)...]
            guard rest.first == "[", let close = rest.firstIndex(of: "]") else { throw bad }
            var cpus: [UInt32] = []
            for item in rest[rest.index(after: rest.startIndex)..<close].split(separator: ",") {
                let bounds = item.split(separator: "-", omittingEmptySubsequences: false)
                guard let low = UInt32(bounds[0]), let high = UInt32(bounds.last!), bounds.count <= 2, low <= high, high - low < 4096 else { throw bad }
                cpus.append(contentsOf: low...high)
            }
            result.append((index, cpus))
            rest = rest[rest.index(after: close)...]
            if rest.first == "," { rest = rest.dropFirst() } else if !rest.isEmpty { throw bad }
        }
        return result
    }
}
