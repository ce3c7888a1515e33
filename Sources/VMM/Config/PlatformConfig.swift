// `--platform`, `--pci-segment`, `--numa`, `--tpm`, `--landlock-rules`: machine-wide settings
// with Cloud Hypervisor's JSON names and defaults.

/// `--platform`: PCI segments, IOMMU and SMBIOS settings.
public struct PlatformConfig: Codable, Equatable, Sendable {
    /// PCI segments (default 1).
    public var numPCISegments: UInt16 = 1
    /// Segments placed behind the virtual IOMMU.
    public var iommuSegments: [UInt16]?
    /// The virtual IOMMU's address width (default 64).
    public var iommuAddressWidthBits: UInt8 = 64
    /// SMBIOS system serial number (`serial_number` is accepted too).
    public var systemSerialNumber: String?
    /// SMBIOS system UUID (`uuid` is accepted too).
    public var systemUUID: String?
    /// SMBIOS OEM strings.
    public var oemStrings: [String]?
    /// SMBIOS system manufacturer.
    public var systemManufacturer: String?
    /// SMBIOS product name.
    public var systemProductName: String?
    /// SMBIOS system version.
    public var systemVersion: String?
    /// SMBIOS system family.
    public var systemFamily: String?
    /// SMBIOS SKU number.
    public var systemSKUNumber: String?
    /// SMBIOS chassis asset tag.
    public var chassisAssetTag: String?
    /// Intel TDX confidential guest.
    public var tdx = false
    /// AMD SEV-SNP confidential guest.
    public var sevSNP = false
    /// Use iommufd for VFIO.
    public var iommufd = false
    /// Peer-to-peer DMA between VFIO devices (default on).
    public var vfioP2PDMA = true

    /// Cloud Hypervisor's defaults.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case numPCISegments = "num_pci_segments", iommuSegments = "iommu_segments", iommuAddressWidthBits = "iommu_address_width_bits"
        case systemSerialNumber = "system_serial_number", serialNumber = "serial_number", systemUUID = "system_uuid", uuid
        case oemStrings = "oem_strings", systemManufacturer = "system_manufacturer", systemProductName = "system_product_name"
        case systemVersion = "system_version", systemFamily = "system_family", systemSKUNumber = "system_sku_number"
        case chassisAssetTag = "chassis_asset_tag", tdx, sevSNP = "sev_snp", iommufd, vfioP2PDMA = "vfio_p2p_dma"
    }

    /// Decodes with Cloud Hypervisor's defaults and aliases.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        numPCISegments = try c.value(.numPCISegments, default: 1)
        iommuSegments = try c.optional(.iommuSegments)
        iommuAddressWidthBits = try c.value(.iommuAddressWidthBits, default: 64)
        systemSerialNumber = try c.optional(.systemSerialNumber) ?? c.optional(.serialNumber)
        systemUUID = try c.optional(.systemUUID) ?? c.optional(.uuid)
        oemStrings = try c.optional(.oemStrings)
        systemManufacturer = try c.optional(.systemManufacturer)
        systemProductName = try c.optional(.systemProductName)
        systemVersion = try c.optional(.systemVersion)
        systemFamily = try c.optional(.systemFamily)
        systemSKUNumber = try c.optional(.systemSKUNumber)
        chassisAssetTag = try c.optional(.chassisAssetTag)
        tdx = try c.value(.tdx, default: false)
        sevSNP = try c.value(.sevSNP, default: false)
        iommufd = try c.value(.iommufd, default: false)
        vfioP2PDMA = try c.value(.vfioP2PDMA, default: true)
    }

    /// Encodes as Cloud Hypervisor does (absent strings omitted; the aliases never written).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(numPCISegments, forKey: .numPCISegments)
        try c.encodeIfPresent(iommuSegments, forKey: .iommuSegments)
        try c.encode(iommuAddressWidthBits, forKey: .iommuAddressWidthBits)
        try c.encodeIfPresent(systemSerialNumber, forKey: .systemSerialNumber)
        try c.encodeIfPresent(systemUUID, forKey: .systemUUID)
        try c.encodeIfPresent(oemStrings, forKey: .oemStrings)
        try c.encodeIfPresent(systemManufacturer, forKey: .systemManufacturer)
        try c.encodeIfPresent(systemProductName, forKey: .systemProductName)
        try c.encodeIfPresent(systemVersion, forKey: .systemVersion)
        try c.encodeIfPresent(systemFamily, forKey: .systemFamily)
        try c.encodeIfPresent(systemSKUNumber, forKey: .systemSKUNumber)
        try c.encodeIfPresent(chassisAssetTag, forKey: .chassisAssetTag)
        try c.encode(tdx, forKey: .tdx)
        try c.encode(sevSNP, forKey: .sevSNP)
        try c.encode(iommufd, forKey: .iommufd)
        try c.encode(vfioP2PDMA, forKey: .vfioP2PDMA)
    }

    /// Whether any SMBIOS field is given.
    public var hasSMBIOS: Bool {
        [systemSerialNumber, systemUUID, systemManufacturer, systemProductName, systemVersion, systemFamily, systemSKUNumber,
         chassisAssetTag].contains { $0 != nil } || !(oemStrings ?? []).isEmpty
    }
}

/// `--pci-segment`: how a segment's share of the MMIO apertures is weighted.
public struct PciSegmentConfig: Codable, Equatable, Sendable {
    /// The segment.
    public var pciSegment: UInt16 = 0
    /// Weight of its 32-bit aperture (default 1).
    public var mmio32ApertureWeight: UInt32 = 1
    /// Weight of its 64-bit aperture (default 1).
    public var mmio64ApertureWeight: UInt32 = 1

    /// Segment `pciSegment` with weights 1.
    public init(pciSegment: UInt16 = 0) { self.pciSegment = pciSegment }

    enum CodingKeys: String, CodingKey {
        case pciSegment = "pci_segment", mmio32ApertureWeight = "mmio32_aperture_weight", mmio64ApertureWeight = "mmio64_aperture_weight"
    }

    /// Decodes with Cloud Hypervisor's defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        pciSegment = try c.value(.pciSegment, default: 0)
        mmio32ApertureWeight = try c.value(.mmio32ApertureWeight, default: 1)
        mmio64ApertureWeight = try c.value(.mmio64ApertureWeight, default: 1)
    }
}

/// A NUMA distance to another node.
public struct NumaDistance: Codable, Equatable, Sendable {
    /// The other node.
    public var destination: UInt32 = 0
    /// The distance.
    public var distance: UInt8 = 0

    /// Creates a distance.
    public init(destination: UInt32, distance: UInt8) {
        self.destination = destination
        self.distance = distance
    }

    /// Decodes with Cloud Hypervisor's defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        destination = try c.value(.destination, default: 0)
        distance = try c.value(.distance, default: 0)
    }

    enum CodingKeys: String, CodingKey { case destination, distance }
}

/// `--numa`: one guest NUMA node.
public struct NumaConfig: Codable, Equatable, Sendable {
    /// The node's id.
    public var guestNUMAID: UInt32
    /// Its vCPUs.
    public var cpus: [UInt32]?
    /// Distances to other nodes.
    public var distances: [NumaDistance]?
    /// Its memory zones.
    public var memoryZones: [String]?
    /// Its PCI segments.
    public var pciSegments: [UInt16]?
    /// A device id tied to it.
    public var deviceID: String?

    /// Node `id` with nothing in it.
    public init(guestNUMAID: UInt32) { self.guestNUMAID = guestNUMAID }

    enum CodingKeys: String, CodingKey {
        case guestNUMAID = "guest_numa_id", cpus, distances, memoryZones = "memory_zones", pciSegments = "pci_segments", deviceID = "device_id"
    }
}

/// `--tpm`: a TPM served by swtpm over a socket.
public struct TpmConfig: Codable, Equatable, Sendable {
    /// The swtpm socket.
    public var socket: String

    /// A TPM at `socket`.
    public init(socket: String) { self.socket = socket }
}

/// One `--landlock-rules` entry: a path and the access granted to it.
public struct LandlockConfig: Codable, Equatable, Sendable {
    /// The path.
    public var path: String
    /// The access, `r`, `w` or `rw`.
    public var access: String

    /// A rule.
    public init(path: String, access: String) {
        self.path = path
        self.access = access
    }
}
