// Decoding helpers shared by the configuration types: Cloud Hypervisor's serde defaults
// (`#[serde(default)]`) as one call per field.

extension KeyedDecodingContainer {
    /// The value at `key`, or `fallback` when the key is absent (serde's `default`). A `null`
    /// is refused, as serde refuses it for a field that is not an `Option`.
    func value<T: Decodable>(_ key: Key, default fallback: @autoclosure () -> T) throws -> T {
        contains(key) ? try decode(T.self, forKey: key) : fallback()
    }

    /// The value at `key`, or nil when absent or `null`.
    func optional<T: Decodable>(_ key: Key) throws -> T? {
        try decodeIfPresent(T.self, forKey: key)
    }
}

/// Any key, to list the ones an object holds.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Refuses an object with keys outside `known`, for the few Cloud Hypervisor types that
/// deny unknown fields (the rate limiter's).
func refuseUnknownKeys(in decoder: any Decoder, known: [String]) throws {
    let c = try decoder.container(keyedBy: AnyCodingKey.self)
    if let unknown = c.allKeys.first(where: { !known.contains($0.stringValue) }) {
        throw DecodingError.dataCorruptedError(forKey: unknown, in: c,
                                               debugDescription: "unknown field '\(unknown.stringValue)', expected one of \(known.joined(separator: ", "))")
    }
}

extension KeyedEncodingContainer {
    /// Encodes `flag` only when it is set, as Cloud Hypervisor serialises `iommu`
    /// (`skip_serializing_if = "Not::not"`).
    mutating func encodeIfTrue(_ flag: Bool, forKey key: Key) throws {
        if flag { try encode(true, forKey: key) }
    }
}

/// The fields every PCI device shares in Cloud Hypervisor (`PciDeviceCommonConfig`, flattened
/// into each device's object): `id`, `iommu`, `pci_segment`, `pci_device_id`.
public struct PCIDeviceCommon: Codable, Equatable, Sendable {
    /// The device id; Cloud Hypervisor's `_<kind><N>` when not given.
    public var id: String?
    /// Place the device behind the virtual IOMMU.
    public var iommu = false
    /// The PCI segment the device sits on.
    public var pciSegment: UInt16 = 0
    /// The device (slot) number on the segment's bus, chosen by the VMM when not given.
    public var pciDeviceID: UInt8?

    /// No id, segment 0, no IOMMU, any slot.
    public init(id: String? = nil) { self.id = id }

    enum CodingKeys: String, CodingKey {
        case id, iommu, pciSegment = "pci_segment", pciDeviceID = "pci_device_id"
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws { try self.init(from: decoder, readingIOMMU: true) }

    /// Decodes with Cloud Hypervisor's defaults for absent fields; a kind whose Cloud Hypervisor
    /// config has no `iommu` field (virtio-fs, vfio-user, generic vhost-user) passes `false`, so an
    /// `iommu` member is ignored like any other unknown field rather than type-checked.
    public init(from decoder: any Decoder, readingIOMMU: Bool) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.optional(.id)
        iommu = readingIOMMU ? try c.value(.iommu, default: false) : false
        pciSegment = try c.value(.pciSegment, default: 0)
        pciDeviceID = try c.optional(.pciDeviceID)
    }

    /// Encodes as Cloud Hypervisor does: `iommu` only when set, `id` and `pci_device_id` only when given.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(id, forKey: .id)
        try c.encodeIfTrue(iommu, forKey: .iommu)
        try c.encode(pciSegment, forKey: .pciSegment)
        try c.encodeIfPresent(pciDeviceID, forKey: .pciDeviceID)
    }

    /// The option keys `id=`, `iommu=`, `pci_segment=`, `pci_device_id=`.
    public static let keys = ["id", "iommu", "pci_segment", "pci_device_id"]
    /// Their syntax.
    public static let syntax = "id=<device_id>,iommu=on|off,pci_segment=<segment_id>,pci_device_id=<pci_slot>"

    /// Reads the four keys from a parsed option.
    public static func parse(_ list: OptionList) throws(ConfigError) -> PCIDeviceCommon {
        var common = PCIDeviceCommon(id: list["id"])
        if let id = common.id, id.isEmpty { throw ConfigError(option: list.option, "id= must not be empty") }
        common.iommu = try list.bool("iommu") ?? false
        common.pciSegment = try list.integer("pci_segment", as: UInt16.self) ?? 0
        common.pciDeviceID = try list.integer("pci_device_id", as: UInt8.self, in: 0...31)
        return common
    }
}
