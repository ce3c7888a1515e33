import DeviceModel

extension VirtioIommu {
    /// The device's fields (features accepted, `bypass`), the whole translation table and,
    /// while it runs, the request queue's position: what Cloud Hypervisor's `IommuState`
    /// keeps (its endpoints and domains with their mappings), so a restored guest's DMA
    /// goes on through the mappings its driver made.
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        running.withLock { running in
            VirtioDeviceSnapshot(state: .iommu(state.withLock { $0 }, table: mapping.snapshot),
                                 queues: running.map { [0: $0.queue.state] } ?? [:])
        }
    }

    /// Takes a saved ``VirtioDeviceState/iommu(_:table:)`` after checking it (see
    /// ``IommuTable/check(inputRange:)``); the table replaces the current one whole.
    ///
    /// - Throws: `DeviceStateError` naming the field: another device type, features this
    ///   device does not offer, a `bypass` byte other than 0 or 1, or a table whose
    ///   mappings overlap, wrap, are empty or exceed Cloud Hypervisor's caps, or whose
    ///   endpoints name missing domains.
    public func restoreDeviceState(_ saved: VirtioDeviceState) throws(DeviceStateError) {
        guard case let .iommu(fields, table) = saved else { throw wrongKind(saved) }
        func refuse(_ reason: String) -> DeviceStateError { DeviceStateError(device: "virtio-iommu", reason: reason) }
        let extra = fields.acknowledgedFeatures & ~(features | VirtioFeature.transportOffered)
        guard extra == 0 else { throw refuse("acknowledgedFeatures: bits 0x\(String(extra, radix: 16)) were not offered by this device") }
        guard fields.bypass <= 1 else { throw refuse("bypass: \(fields.bypass), the configuration byte holds 0 or 1") }
        if let reason = table.check(inputRange: limits.inputRange) { throw refuse("table: \(reason)") }
        state.withLock { $0 = fields }
        mapping.table.withLock { $0 = table }
    }
}

extension IommuTable {
    /// Why this table (read from a saved state) cannot be the device's, or `nil`: every
    /// domain within Cloud Hypervisor's caps, its mappings non-empty, not wrapping past
    /// 2^64, inside `inputRange` when there is one, sorted by IOVA and not overlapping;
    /// every endpoint in a domain that exists.
    public func check(inputRange: ClosedRange<UInt64>?) -> String? {
        guard domains.count <= Self.maxDomains else { return "domains: \(domains.count), more than \(Self.maxDomains)" }
        for (id, domain) in domains.sorted(by: { $0.key < $1.key }) {
            guard domain.mappings.count <= Self.maxMappingsPerDomain else {
                return "domains[\(id)].mappings: \(domain.mappings.count), more than \(Self.maxMappingsPerDomain)"
            }
            var previousLast: UInt64?
            for (index, mapping) in domain.mappings.enumerated() {
                let field = "domains[\(id)].mappings[\(index)]"
                guard mapping.size > 0 else { return "\(field).size: 0" }
                guard !mapping.iova.addingReportingOverflow(mapping.size - 1).overflow,
                      !mapping.gpa.addingReportingOverflow(mapping.size - 1).overflow else {
                    return "\(field): 0x\(String(mapping.size, radix: 16)) bytes from iova 0x\(String(mapping.iova, radix: 16)) or gpa 0x\(String(mapping.gpa, radix: 16)) wrap past 2^64"
                }
                if let inputRange, !(inputRange.contains(mapping.iova) && inputRange.contains(mapping.lastIOVA)) {
                    return "\(field): iova 0x\(String(mapping.iova, radix: 16))-0x\(String(mapping.lastIOVA, radix: 16)) is outside the input range"
                }
                if let previousLast, mapping.iova <= previousLast {
                    return "\(field).iova: 0x\(String(mapping.iova, radix: 16)) overlaps or precedes the mapping before it"
                }
                previousLast = mapping.lastIOVA
            }
        }
        for (endpoint, domain) in endpoints.sorted(by: { $0.key < $1.key }) where domains[domain] == nil {
            return "endpoints[\(endpoint)]: attached to domain \(domain), which does not exist"
        }
        return nil
    }
}
