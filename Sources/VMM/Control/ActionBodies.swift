// The bodies of Cloud Hypervisor's actions that are not device configurations (resize-disk,
// resize-zone, snapshot, coredump, restore, send/receive-migration), decoded as Cloud
// Hypervisor decodes them (vmm/src/api/mod.rs, vmm/src/config.rs): a malformed body is a
// 400 before the action is carried out or refused.

/// `vm.resize-disk`'s body (`VmResizeDisk`).
public struct VMResizeDisk: Codable, Equatable, Sendable {
    /// The disk's id.
    public var id: String
    /// The new size in bytes, at most 2^63 - 1 (the largest file size, `off_t`).
    public var desiredSize: UInt64

    enum CodingKeys: String, CodingKey { case id, desiredSize = "desired_size" }

    /// A body for disk `id` and `desiredSize` bytes.
    public init(id: String, desiredSize: UInt64) {
        self.id = id
        self.desiredSize = desiredSize
    }

    /// Decodes the body; a `desired_size` no file can have (above 2^63 - 1) is refused.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        desiredSize = try c.decode(UInt64.self, forKey: .desiredSize)
        guard desiredSize <= UInt64(Int64.max) else {
            throw DecodingError.dataCorruptedError(forKey: .desiredSize, in: c, debugDescription:
                "desired_size \(desiredSize) is above the largest size a file or block device can have (\(Int64.max) bytes)")
        }
    }
}

/// `vm.resize-zone`'s body (`VmResizeZone`).
public struct VMResizeZone: Codable, Equatable, Sendable {
    /// The memory zone's id.
    public var id: String
    /// The zone's new size in bytes.
    public var desiredRAM: UInt64

    enum CodingKeys: String, CodingKey { case id, desiredRAM = "desired_ram" }
}

/// `vm.snapshot`'s and `vm.coredump`'s body (`VmSnapshotConfig`, `VmCoredumpData`).
public struct VMDestination: Codable, Equatable, Sendable {
    /// Where to write (`file:///dir`).
    public var destinationURL: String

    enum CodingKeys: String, CodingKey { case destinationURL = "destination_url" }
}

/// How a restored VM's memory is brought in (`MemoryRestoreMode`).
public enum MemoryRestoreMode: String, Codable, Equatable, Sendable {
    /// Copied in before the VM resumes (the default).
    case copy = "Copy"
    /// Faulted in on first touch through userfaultfd.
    case onDemand = "OnDemand"
}

/// One NIC's descriptors for a restore (`RestoredNetConfig`): the descriptors themselves come
/// with the request (SCM_RIGHTS).
public struct RestoredNetConfig: Codable, Equatable, Sendable {
    /// The NIC's id.
    public var id: String
    /// How many descriptors of the request are its.
    public var numFDs: UInt64

    enum CodingKeys: String, CodingKey { case id, numFDs = "num_fds", fds }

    /// Decodes; `fds` numbers in the body are ignored, as Cloud Hypervisor ignores them.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        numFDs = try c.value(.numFDs, default: 0)
        _ = try c.decodeIfPresent([Int32].self, forKey: .fds)
    }

    /// Encodes the id and the count.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(numFDs, forKey: .numFDs)
    }
}

/// `vm.restore`'s body (`RestoreConfig`).
public struct RestoreConfig: Codable, Equatable, Sendable {
    /// The snapshot's location (`file:///dir`).
    public var sourceURL: String
    /// Fault the whole memory in before resuming.
    public var prefault = false
    /// How memory is brought in.
    public var memoryRestoreMode = MemoryRestoreMode.copy
    /// New descriptors for NICs backed by descriptors.
    public var netFDs: [RestoredNetConfig]?
    /// Resume the VM once restored.
    public var resume = false

    enum CodingKeys: String, CodingKey {
        case sourceURL = "source_url", prefault, memoryRestoreMode = "memory_restore_mode", netFDs = "net_fds", resume
    }

    /// A restore of `sourceURL` with Cloud Hypervisor's defaults (copy, no prefault, paused).
    public init(sourceURL: String) {
        self.sourceURL = sourceURL
    }

    /// The accepted `--restore` syntax.
    public static let syntax = "source_url=<source_url>,prefault=on|off,memory_restore_mode=copy|ondemand,resume=on|off"

    /// Parses `--restore` (Cloud Hypervisor's `RestoreConfig::parse`). `net_fds` names
    /// descriptors this process inherited, which the command line cannot hand over here: it is
    /// refused with the reason (`vm.restore` over the API takes passed descriptors).
    public static func parse(_ text: String) throws(ConfigError) -> RestoreConfig {
        let list = try OptionList(text, option: "--restore", knownKeys: ["source_url", "prefault", "memory_restore_mode", "net_fds", "resume"])
        var config = RestoreConfig(sourceURL: try list.required("source_url", syntax: syntax))
        config.prefault = try list.bool("prefault") ?? false
        config.resume = try list.bool("resume") ?? false
        switch list["memory_restore_mode"]?.lowercased() {
        case nil, "copy": config.memoryRestoreMode = .copy
        case "ondemand": config.memoryRestoreMode = .onDemand
        case let other?: throw ConfigError(option: "--restore", "memory_restore_mode=\(other) is not copy or ondemand")
        }
        if list["net_fds"] != nil {
            throw ConfigError(option: "--restore", "net_fds on the command line is an absent feature of this VMM: restore with `ch-remote restore ...,net_fds=...` (vm.restore passes the descriptors)")
        }
        return config
    }

    /// Decodes with Cloud Hypervisor's defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sourceURL = try c.decode(String.self, forKey: .sourceURL)
        prefault = try c.value(.prefault, default: false)
        memoryRestoreMode = try c.value(.memoryRestoreMode, default: .copy)
        netFDs = try c.optional(.netFDs)
        resume = try c.value(.resume, default: false)
    }
}

/// Pre-copy or post-copy (`MigrationMode`).
public enum MigrationMode: String, Codable, Equatable, Sendable {
    /// Memory is copied before the switch (the default).
    case precopy = "Precopy"
    /// Memory follows the switch on demand.
    case postcopy = "Postcopy"
}

/// What a timed-out migration does (`TimeoutStrategy`).
public enum TimeoutStrategy: String, Codable, Equatable, Sendable {
    /// Give up and keep the VM on the source (the default).
    case cancel = "Cancel"
    /// Migrate anyway.
    case ignore = "Ignore"
}

/// `vm.receive-migration`'s body (`ReceiveMigrationData`).
public struct ReceiveMigrationData: Codable, Equatable, Sendable {
    /// Where to listen (`unix:PATH`, `tcp:HOST:PORT`).
    public var receiverURL: String
    /// mTLS material.
    public var tlsDir: String?
    /// The memory transfer mode.
    public var memoryMode = MigrationMode.precopy

    enum CodingKeys: String, CodingKey { case receiverURL = "receiver_url", tlsDir = "tls_dir", memoryMode = "memory_mode" }

    /// Decodes with Cloud Hypervisor's defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        receiverURL = try c.decode(String.self, forKey: .receiverURL)
        tlsDir = try c.optional(.tlsDir)
        memoryMode = try c.value(.memoryMode, default: .precopy)
    }
}

/// `vm.send-migration`'s body (`SendMigrationData`).
public struct SendMigrationData: Codable, Equatable, Sendable {
    /// Where to send (`unix:PATH`, `tcp:HOST:PORT`).
    public var destinationURL: String
    /// Hand memory over instead of copying it (same host).
    public var local = false
    /// The longest pause allowed at the switch, in milliseconds (default 300, not 0).
    public var downtimeMS: UInt64 = 300
    /// The longest migration allowed, in seconds (default 3600, not 0).
    public var timeoutS: UInt64 = 3600
    /// What a timeout does.
    public var timeoutStrategy = TimeoutStrategy.cancel
    /// Parallel TCP connections (default 1, not 0).
    public var connections: UInt32 = 1
    /// mTLS material.
    public var tlsDir: String?
    /// The memory transfer mode.
    public var memoryMode = MigrationMode.precopy

    enum CodingKeys: String, CodingKey {
        case destinationURL = "destination_url", local, downtimeMS = "downtime_ms", timeoutS = "timeout_s"
        case timeoutStrategy = "timeout_strategy", connections, tlsDir = "tls_dir", memoryMode = "memory_mode"
    }

    /// The most parallel connections Cloud Hypervisor allows (`MAX_MIGRATION_CONNECTIONS`).
    public static let maxConnections: UInt32 = 128

    /// Decodes with Cloud Hypervisor's defaults; the counts that Cloud Hypervisor holds as
    /// non-zero types refuse 0, and more than 128 connections are refused.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        destinationURL = try c.decode(String.self, forKey: .destinationURL)
        local = try c.value(.local, default: false)
        downtimeMS = try c.value(.downtimeMS, default: 300)
        timeoutS = try c.value(.timeoutS, default: 3600)
        timeoutStrategy = try c.value(.timeoutStrategy, default: .cancel)
        connections = try c.value(.connections, default: 1)
        tlsDir = try c.optional(.tlsDir)
        memoryMode = try c.value(.memoryMode, default: .precopy)
        for (key, value) in [(CodingKeys.downtimeMS, downtimeMS), (.timeoutS, timeoutS), (.connections, UInt64(connections))] where value == 0 {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "must not be 0")
        }
        for (key, value) in [(CodingKeys.downtimeMS, downtimeMS), (.timeoutS, timeoutS)] where value > UInt64(Int64.max) {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "must fit a signed 64-bit integer (int64)")
        }
        if connections > Self.maxConnections {
            throw DecodingError.dataCorruptedError(forKey: .connections, in: c, debugDescription: "must not exceed \(Self.maxConnections)")
        }
    }
}
