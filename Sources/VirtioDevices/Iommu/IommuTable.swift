import Synchronization
import VirtioQueue

/// The translation state of a virtio-iommu (virtio 1.x section 5.13): which endpoint is
/// attached to which domain, and each domain's mappings from I/O virtual addresses (IOVAs)
/// to guest physical addresses. The device's requests change it; the queues of the devices
/// behind the IOMMU read it through ``IommuEndpoint``.
///
/// Endpoint ids are PCI requester ids with the segment on top (`segment << 16 | bus << 8 |
/// device << 3 | function`), as Cloud Hypervisor numbers them in its VIOT table.
public struct IommuTable: Codable, Sendable, Equatable {
    /// Cloud Hypervisor's cap on the domains one device keeps (`MAX_DOMAINS`).
    public static let maxDomains = 1 << 16
    /// Cloud Hypervisor's cap on the mappings of one domain (`MAX_MAPPINGS_PER_DOMAIN`).
    public static let maxMappingsPerDomain = 1 << 20

    /// One MAP request's range: `size` bytes from `iova` onto guest physical `gpa`.
    public struct Mapping: Codable, Sendable, Equatable {
        /// First I/O virtual address.
        public var iova: UInt64
        /// Guest physical address `iova` maps to.
        public var gpa: UInt64
        /// Length in bytes (never 0).
        public var size: UInt64
        /// The last I/O virtual address of the range.
        public var lastIOVA: UInt64 { iova + (size - 1) }

        /// A mapping of `size` bytes from `iova` to `gpa`.
        public init(iova: UInt64, gpa: UInt64, size: UInt64) {
            self.iova = iova
            self.gpa = gpa
            self.size = size
        }
    }

    /// A domain: an address space that endpoints attach to.
    public struct Domain: Codable, Sendable, Equatable {
        /// Its mappings, sorted by IOVA and never overlapping.
        public internal(set) var mappings: [Mapping] = []
        /// Whether the domain lets DMA through untranslated (`VIRTIO_IOMMU_ATTACH_F_BYPASS`).
        public var bypass: Bool

        /// An empty domain.
        public init(bypass: Bool) { self.bypass = bypass }

        /// The index of the last mapping that starts at or below `iova`, if any.
        func floorIndex(_ iova: UInt64) -> Int? {
            var low = 0
            var high = mappings.count
            while low < high {
                let middle = (low + high) / 2
                if mappings[middle].iova <= iova { low = middle + 1 } else { high = middle }
            }
            return low == 0 ? nil : low - 1
        }

        /// Whether any mapping overlaps `[first, last]`.
        func overlaps(_ first: UInt64, _ last: UInt64) -> Bool {
            if let index = floorIndex(last), mappings[index].lastIOVA >= first { return true }
            return false
        }

        /// Adds a mapping that overlaps none.
        mutating func insert(_ mapping: Mapping) {
            let index = floorIndex(mapping.iova).map { $0 + 1 } ?? 0
            mappings.insert(mapping, at: index)
        }

        /// The guest physical address of `[address, address + length)`, when mappings that
        /// follow each other in both IOVA and guest physical space cover all of it (Cloud
        /// Hypervisor's `translate_contiguous_range`).
        func translate(_ address: UInt64, length: UInt64) -> UInt64? {
            guard length > 0 else { return nil }
            let (last, overflow) = address.addingReportingOverflow(length - 1)
            guard !overflow, var index = floorIndex(address), mappings[index].lastIOVA >= address else { return nil }
            let base = mappings[index].gpa + (address - mappings[index].iova)
            while mappings[index].lastIOVA < last {
                let current = mappings[index]
                index += 1
                guard index < mappings.count, mappings[index].iova == current.lastIOVA + 1,
                      mappings[index].gpa == current.gpa + current.size else { return nil }
            }
            return base
        }
    }

    /// The domain each attached endpoint belongs to.
    public internal(set) var endpoints: [UInt32: UInt32] = [:]
    /// The domains by id.
    public internal(set) var domains: [UInt32: Domain] = [:]
    /// Whether endpoints attached to no domain bypass the IOMMU (the configuration's
    /// `bypass` once the driver negotiated `VIRTIO_IOMMU_F_BYPASS_CONFIG`; true until then,
    /// as Cloud Hypervisor starts).
    public var bypass = true

    /// An empty table: no domain, unattached endpoints bypass.
    public init() {}

    /// The guest physical address endpoint `endpoint` reaches at `[address, address + length)`:
    /// unchanged in a bypass domain or, unattached, while ``bypass`` holds; through the
    /// domain's mappings otherwise; `nil` when they do not cover the range.
    public func translate(endpoint: UInt32, address: UInt64, length: UInt64) -> UInt64? {
        guard length > 0, !address.addingReportingOverflow(length - 1).overflow else { return nil }
        guard let domainID = endpoints[endpoint] else { return bypass ? address : nil }
        guard let domain = domains[domainID] else { return nil }
        return domain.bypass ? address : domain.translate(address, length: length)
    }

    /// Removes `endpoint` from its domain, and the domain once no endpoint is left in it.
    mutating func detach(endpoint: UInt32) {
        guard let domainID = endpoints.removeValue(forKey: endpoint) else { return }
        if !endpoints.values.contains(domainID) { domains.removeValue(forKey: domainID) }
    }
}

/// The shared, locked ``IommuTable`` of one virtio-iommu: the device updates it, the
/// queues of the endpoints behind it translate through it.
public final class IommuMapping: Sendable {
    let table = Mutex(IommuTable())

    /// An empty mapping.
    public init() {}

    /// A copy of the table as it stands.
    public var snapshot: IommuTable { table.withLock { $0 } }

    /// The translator for the endpoint with requester id `endpoint`.
    public func endpoint(_ endpoint: UInt32) -> IommuEndpoint { IommuEndpoint(mapping: self, id: endpoint) }
}

/// One endpoint's view of an ``IommuMapping``: the ``AddressTranslator`` given to the
/// queues of a device placed behind the IOMMU (`iommu=on`). Cloud Hypervisor's
/// `AccessPlatformMapping`.
public struct IommuEndpoint: AddressTranslator {
    /// The IOMMU's table.
    public let mapping: IommuMapping
    /// The endpoint's id (`segment << 16 | BDF`).
    public let id: UInt32

    /// Translates through the endpoint's domain (see ``IommuTable/translate(endpoint:address:length:)``).
    public func translate(_ address: UInt64, length: UInt64) -> UInt64? {
        mapping.table.withLock { $0.translate(endpoint: id, address: address, length: length) }
    }
}
