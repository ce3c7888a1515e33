/// The request types, statuses and probe properties of the virtio-iommu request queue
/// (virtio 1.x section 5.13.6), and how a request changes an ``IommuTable``.
public enum IommuRequest {
    /// `VIRTIO_IOMMU_T_ATTACH`.
    public static let attach: UInt8 = 1
    /// `VIRTIO_IOMMU_T_DETACH`.
    public static let detach: UInt8 = 2
    /// `VIRTIO_IOMMU_T_MAP`.
    public static let map: UInt8 = 3
    /// `VIRTIO_IOMMU_T_UNMAP`.
    public static let unmap: UInt8 = 4
    /// `VIRTIO_IOMMU_T_PROBE`.
    public static let probe: UInt8 = 5

    /// The status byte of a request's tail (`VIRTIO_IOMMU_S_*`).
    public enum Status: UInt8, Sendable {
        /// `VIRTIO_IOMMU_S_OK`.
        case ok = 0
        /// `VIRTIO_IOMMU_S_IOERR`.
        case ioError = 1
        /// `VIRTIO_IOMMU_S_UNSUPP`: unknown request type.
        case unsupported = 2
        /// `VIRTIO_IOMMU_S_DEVERR`.
        case deviceError = 3
        /// `VIRTIO_IOMMU_S_INVAL`: a malformed request or an invalid argument.
        case invalid = 4
        /// `VIRTIO_IOMMU_S_RANGE`: an address range out of bounds or misaligned.
        case range = 5
        /// `VIRTIO_IOMMU_S_NOENT`: no such domain.
        case noEntry = 6
        /// `VIRTIO_IOMMU_S_FAULT`.
        case fault = 7
        /// `VIRTIO_IOMMU_S_NOMEM`: too many domains or mappings.
        case noMemory = 8
    }

    /// `VIRTIO_IOMMU_ATTACH_F_BYPASS`.
    public static let attachBypass: UInt32 = 1
    /// `VIRTIO_IOMMU_MAP_F_READ | _WRITE | _MMIO`: the flags a MAP may carry.
    public static let mapFlagsMask: UInt32 = 0b111
    /// The granule MAP and UNMAP ranges align to: the smallest page of the page size mask.
    public static let pageGranule: UInt64 = 4096
    /// The size of the request head (type and 3 reserved bytes) and of the tail (status and
    /// 3 reserved bytes).
    public static let headSize = 4
    /// Bytes of the request body after the head, by type (what the readable part must hold).
    public static func bodySize(_ type: UInt8) -> Int? {
        switch type {
        case attach, detach: 16
        case map: 32
        case unmap: 24
        case probe: 68
        default: nil
        }
    }
    /// `VIRTIO_IOMMU_PROBE_T_RESV_MEM`.
    public static let probeReservedMemory: UInt16 = 1
    /// `VIRTIO_IOMMU_RESV_MEM_T_MSI`.
    public static let reservedMSI: UInt8 = 1
    /// Bytes of the probe answer: one RESV_MEM property (4-byte header, 20-byte body), the
    /// device's `probe_size`.
    public static let probeSize = 24

    /// What the device answers: the status and, for PROBE, the properties written before
    /// the tail.
    public struct Answer: Sendable, Equatable {
        /// The tail's status.
        public var status: Status
        /// Bytes written before the tail (the probe properties, `probe_size` long).
        public var properties: [UInt8] = []
        /// A short explanation for the logs when the status is not OK.
        public var reason: String = ""

        /// An answer with a status and no properties.
        public init(_ status: Status, _ reason: String = "", properties: [UInt8] = []) {
            self.status = status
            self.reason = reason
            self.properties = properties
        }

        /// The bytes written to the device-writable part: the properties then the tail.
        public var bytes: [UInt8] { properties + [status.rawValue, 0, 0, 0] }
    }

    /// The limits a request is checked against.
    public struct Limits: Sendable, Equatable {
        /// The MSI doorbell range reported by PROBE as `RESV_MEM_T_MSI` (inclusive).
        public var msiRange: ClosedRange<UInt64>
        /// The accepted IOVAs (inclusive), when the address width is under 64 bits.
        public var inputRange: ClosedRange<UInt64>?

        /// Limits with this MSI range and input range.
        public init(msiRange: ClosedRange<UInt64>, inputRange: ClosedRange<UInt64>?) {
            self.msiRange = msiRange
            self.inputRange = inputRange
        }
    }

    /// Applies one request, given as the bytes of the chain's device-readable part (head
    /// and body), to `table`, and returns the answer. A request whose readable part is not
    /// exactly the head and the body of its type is INVAL, an unknown type UNSUPP; nothing
    /// changes unless the status is OK.
    public static func apply(_ request: [UInt8], to table: inout IommuTable, limits: Limits) -> Answer {
        guard request.count >= headSize else { return Answer(.invalid, "the request has \(request.count) bytes, less than its 4-byte head") }
        let type = request[0]
        guard let size = bodySize(type) else { return Answer(.unsupported, "unknown request type \(type)") }
        guard request.count == headSize + size else {
            return Answer(.invalid, "a request of type \(type) takes \(headSize + size) readable bytes, not \(request.count)")
        }
        let body = Fields(bytes: Array(request[headSize...]))
        switch type {
        case attach: return attach(body, &table)
        case detach: return detach(body, &table)
        case map: return map(body, &table, limits)
        case unmap: return unmap(body, &table, limits)
        default: return probe(limits)
        }
    }

    private static func attach(_ body: Fields, _ table: inout IommuTable) -> Answer {
        let (domainID, endpoint, flags) = (body.u32(0), body.u32(4), body.u32(8))
        guard body.zero(12, 4), flags & ~attachBypass == 0 else { return Answer(.invalid, "ATTACH with reserved bits set") }
        let bypass = flags & attachBypass != 0
        if let domain = table.domains[domainID], domain.bypass != bypass {
            return Answer(.invalid, "ATTACH to domain \(domainID) with bypass \(bypass), the domain has the opposite")
        }
        if table.domains[domainID] == nil, table.domains.count >= IommuTable.maxDomains {
            return Answer(.noMemory, "ATTACH would create more than \(IommuTable.maxDomains) domains")
        }
        if table.endpoints[endpoint] != domainID { table.detach(endpoint: endpoint) }
        table.endpoints[endpoint] = domainID
        if table.domains[domainID] == nil { table.domains[domainID] = IommuTable.Domain(bypass: bypass) }
        return Answer(.ok)
    }

    private static func detach(_ body: Fields, _ table: inout IommuTable) -> Answer {
        let (domainID, endpoint) = (body.u32(0), body.u32(4))
        guard body.zero(8, 8) else { return Answer(.invalid, "DETACH with reserved bits set") }
        guard table.endpoints[endpoint] == domainID else {
            return Answer(.invalid, "DETACH of endpoint 0x\(String(endpoint, radix: 16)), which is not attached to domain \(domainID)")
        }
        table.detach(endpoint: endpoint)
        return Answer(.ok)
    }

    private static func map(_ body: Fields, _ table: inout IommuTable, _ limits: Limits) -> Answer {
        let (domainID, first, last, gpa, flags) = (body.u32(0), body.u64(4), body.u64(12), body.u64(20), body.u32(28))
        guard flags & ~mapFlagsMask == 0 else { return Answer(.invalid, "MAP with unknown flags 0x\(String(flags, radix: 16))") }
        if let range = limits.inputRange, first < range.lowerBound || last > range.upperBound {
            return Answer(.range, "MAP of IOVAs outside the input range")
        }
        guard let domain = table.domains[domainID] else { return Answer(.noEntry, "MAP in domain \(domainID), which does not exist") }
        guard !domain.bypass else { return Answer(.invalid, "MAP in bypass domain \(domainID)") }
        guard last >= first, last - first < UInt64.max else { return Answer(.range, "MAP of an empty or whole-space range") }
        let size = last - first + 1
        guard gpa <= UInt64.max - size, first <= UInt64.max - size else {
            return Answer(.range, "MAP whose range reaches the top of the address space")
        }
        let mask = pageGranule - 1
        guard first & mask == 0, gpa & mask == 0, size & mask == 0 else {
            return Answer(.range, "MAP not aligned to \(pageGranule) bytes")
        }
        guard !domain.overlaps(first, last) else { return Answer(.invalid, "MAP overlaps an existing mapping of domain \(domainID)") }
        guard domain.mappings.count < IommuTable.maxMappingsPerDomain else {
            return Answer(.noMemory, "domain \(domainID) has \(IommuTable.maxMappingsPerDomain) mappings already")
        }
        table.domains[domainID]!.insert(IommuTable.Mapping(iova: first, gpa: gpa, size: size))
        return Answer(.ok)
    }

    private static func unmap(_ body: Fields, _ table: inout IommuTable, _ limits: Limits) -> Answer {
        let (domainID, first, last) = (body.u32(0), body.u64(4), body.u64(12))
        if let range = limits.inputRange, first < range.lowerBound || last > range.upperBound {
            return Answer(.range, "UNMAP of IOVAs outside the input range")
        }
        guard let domain = table.domains[domainID] else { return Answer(.noEntry, "UNMAP in domain \(domainID), which does not exist") }
        guard !domain.bypass else { return Answer(.invalid, "UNMAP in bypass domain \(domainID)") }
        guard last >= first else { return Answer(.range, "UNMAP of an empty range") }
        let touched = domain.mappings.filter { $0.iova <= last && $0.lastIOVA >= first }
        if touched.contains(where: { $0.iova < first || $0.lastIOVA > last }) {
            return Answer(.range, "UNMAP splits a mapping of domain \(domainID)")
        }
        table.domains[domainID]!.mappings.removeAll { $0.iova >= first && $0.iova <= last }
        return Answer(.ok)
    }

    private static func probe(_ limits: Limits) -> Answer {
        var bytes: [UInt8] = []
        bytes.append(contentsOf: le(UInt64(probeReservedMemory), 2))
        bytes.append(contentsOf: le(20, 2))
        bytes.append(contentsOf: [reservedMSI, 0, 0, 0])
        bytes.append(contentsOf: le(limits.msiRange.lowerBound, 8))
        bytes.append(contentsOf: le(limits.msiRange.upperBound, 8))
        return Answer(.ok, properties: bytes)
    }

    /// The `count` low bytes of `value`, little-endian.
    static func le(_ value: UInt64, _ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }

    /// Little-endian fields of a request body.
    struct Fields {
        let bytes: [UInt8]
        func u64(_ offset: Int) -> UInt64 {
            (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
        }
        func u32(_ offset: Int) -> UInt32 {
            (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
        }
        func zero(_ offset: Int, _ count: Int) -> Bool { bytes[offset..<offset + count].allSatisfy { $0 == 0 } }
    }
}
