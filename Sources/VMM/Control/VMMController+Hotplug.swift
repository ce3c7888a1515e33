// vm.add-disk / vm.add-net / vm.add-pmem / vm.add-fs / vm.add-vsock / vm.remove-device on a running VM:
// PCI hotplug as Cloud Hypervisor's (ACPI, segment 0). The configuration stays the source of
// truth: it gets every added device, loses every removed one, and pins each device's id and
// PCI slot, so that vm.info, a snapshot, a migration or a reboot build the same machine.
import HostSystem

extension VMMController {
    /// Which kind of device a hot-add makes, for its id prefix and the attach call.
    enum HotplugKind {
        case disk(DiskConfig)
        case net(NetConfig)
        case pmem(PmemConfig)
        case fs(FsConfig)
        case vsock(VsockConfig)

        /// Cloud Hypervisor's id prefix (`_disk`, `_net`, `_pmem`, `_fs`, `_vsock`).
        var prefix: String {
            switch self {
            case .disk: "_disk"
            case .net: "_net"
            case .pmem: "_pmem"
            case .fs: "_fs"
            case .vsock: "_vsock"
            }
        }

        /// The PCI segment the request names.
        var pciSegment: UInt16 {
            switch self {
            case let .disk(config): config.pciSegment
            case let .net(config): config.pciSegment
            case let .pmem(config): config.pci.pciSegment
            case let .fs(config): config.pci.pciSegment
            case let .vsock(config): config.pci.pciSegment
            }
        }

        /// Whether the request asks for `iommu=on`.
        var iommu: Bool {
            switch self {
            case let .disk(config): config.iommu
            case let .net(config): config.iommu
            case let .pmem(config): config.pci.iommu
            case let .fs(config): config.pci.iommu
            case let .vsock(config): config.pci.iommu
            }
        }

        /// The id the request gave, if any.
        var requestedID: String? {
            switch self {
            case let .disk(config): config.id
            case let .net(config): config.id
            case let .pmem(config): config.pci.id
            case let .fs(config): config.pci.id
            case let .vsock(config): config.pci.id
            }
        }
    }

    /// Hot-adds a device to the running `instance`: checks the configuration with the device
    /// added, attaches it, records it (with its id and slot) and tells the guest.
    func hotAdd(_ kind: HotplugKind, slot: inout Slot, instance: VMInstance, action: String) throws(ControlError) -> PciDeviceInfo {
        guard var config = slot.config else { throw .vmNotCreated }
        try Self.refuseWhileMigrating(slot, action)
        // Only a segment whose every slot the VIOT already lists can take a device behind the
        // virtual IOMMU (Cloud Hypervisor's `InvalidIommuHotplug`).
        if kind.iommu, !config.iommuSegments.contains(kind.pciSegment) {
            throw .failed(action: action, reason: "Cannot hotplug device behind vIOMMU: segment \(kind.pciSegment) is not in --platform iommu_segments=")
        }
        // The hotplug controller and the slots in the DSDT serve segment 0 only.
        guard kind.pciSegment == 0 else {
            throw .absentFeature(AbsentFeature(field: "pci_segment", option: "ch-remote \(action.dropFirst(3)) pci_segment=",
                                               feature: "PCI hotplug on segments other than 0"))
        }
        let built = instance.built
        let taken = Set(config.pciDeviceIDs).union(built.deviceManager.devices.map(\.id))
        let id: String
        if let requested = kind.requestedID {
            guard !taken.contains(requested) else { throw .invalidConfig("id=\(requested) is used by another device; ids must be unique") }
            id = requested
        } else {
            var index = 0
            switch kind {
            case .disk: index = config.disks?.count ?? 0
            case .net: index = config.net?.count ?? 0
            case .pmem: index = config.pmem?.count ?? 0
            case .fs: index = config.fs?.count ?? 0
            case .vsock: index = 0
            }
            while taken.contains(kind.prefix + String(index)) { index += 1 }
            id = kind.prefix + String(index)
        }
        config.pinDevices(slots: built.deviceManager.pciSlots)
        switch kind {
        case var .disk(disk):
            if disk.rateLimiterConfig != nil || disk.rateLimitGroup != nil {
                throw .absentFeature(AbsentFeature(field: "rate_limiter_config", option: "ch-remote add-disk rate_limiter",
                                                   feature: "rate limiting of a hot-added disk"))
            }
            disk.id = id
            config.disks = (config.disks ?? []) + [disk]
        case var .net(net):
            if net.rateLimiterConfig != nil {
                throw .absentFeature(AbsentFeature(field: "rate_limiter_config", option: "ch-remote add-net rate_limiter",
                                                   feature: "rate limiting of a hot-added network device"))
            }
            net.id = id
            config.net = (config.net ?? []) + [net]
        case var .pmem(pmem):
            pmem.pci.id = id
            config.pmem = (config.pmem ?? []) + [pmem]
        case var .fs(fs):
            // validate() below refuses it without shared memory, as at boot.
            fs.pci.id = id
            config.fs = (config.fs ?? []) + [fs]
        case var .vsock(vsock):
            guard config.vsock == nil else {
                throw .invalidConfig("the VM has a vsock device already (\(config.vsockID ?? "_vsock0")); it can have only one")
            }
            vsock.pci.id = id
            config.vsock = vsock
        }
        if let absent = config.absentFeatures.first { throw .absentFeature(absent) }
        do throws(ConfigError) { try config.validate() } catch { throw .invalidConfig(error.description) }
        let placed: (slot: Int, bdf: String)
        do {
            switch kind {
            case .disk: placed = try built.hotAddDisk(config.disks!.last!, id: id)
            case .net: placed = try built.hotAddNet(config.net!.last!, id: id)
            case .pmem: placed = try built.hotAddPmem(config.pmem!.last!, id: id)
            case .fs: placed = try built.hotAddFs(config.fs!.last!, id: id)
            case .vsock: placed = try built.hotAddVsock(config.vsock!, id: id)
            }
        } catch {
            throw .failed(action: action, reason: "\(error)")
        }
        config.pinDevices(slots: built.deviceManager.pciSlots)
        slot.config = config
        built.replaceConfig(config)
        monitor?.emit(source: "vm", event: "device-added")
        logger.info("\(action): \(id) at \(placed.bdf)")
        return PciDeviceInfo(id: id, bdf: placed.bdf)
    }

    /// Asks the guest of the running `instance` to eject device `id` and drops it from the
    /// configuration (closing descriptors passed for it), as Cloud Hypervisor's `remove_device`.
    func hotRemove(id: String, slot: inout Slot, instance: VMInstance) throws(ControlError) {
        guard var config = slot.config else { throw .vmNotCreated }
        try Self.refuseWhileMigrating(slot, "vm.remove-device")
        // The hotplug controller and the slots in the DSDT serve segment 0 only.
        let segment = config.pciSegment(ofDevice: id) ?? 0
        guard segment == 0 else {
            throw .absentFeature(AbsentFeature(field: "id", option: "ch-remote remove-device",
                                               feature: "PCI hot-removal on segments other than 0 (\(id) is on segment \(segment))"))
        }
        let built = instance.built
        config.pinDevices(slots: built.deviceManager.pciSlots)
        var closing: [Int32] = []
        if let index = config.diskIDs.firstIndex(of: id) {
            config.disks?.remove(at: index)
            if config.disks?.isEmpty == true { config.disks = nil }
        } else if let index = config.netIDs.firstIndex(of: id) {
            closing = config.net?.remove(at: index).fds ?? []
            if config.net?.isEmpty == true { config.net = nil }
        } else if let index = config.pmemIDs.firstIndex(of: id) {
            config.pmem?.remove(at: index)
            if config.pmem?.isEmpty == true { config.pmem = nil }
        } else if let index = config.fsIDs.firstIndex(of: id) {
            config.fs?.remove(at: index)
            if config.fs?.isEmpty == true { config.fs = nil }
        } else if config.vsockID == id {
            config.vsock = nil
        } else {
            throw .invalidConfig("no device has id '\(id)'")
        }
        do { try built.requestRemoval(id: id) } catch { throw .failed(action: "vm.remove-device", reason: "\(error)") }
        for fd in closing { slot.passed[fd] = nil }
        slot.config = config
        built.replaceConfig(config)
        monitor?.emit(source: "vm", event: "device-removed")
        logger.info("vm.remove-device: the guest is asked to eject \(id)")
    }
}

extension VMMController {
    /// Refuses `action` (a snapshot or migration) while the guest has not ejected a device
    /// vm.remove-device removed: the configuration no longer has it but the machine does, and a
    /// restored or migrated machine could not take its state.
    static func refuseWhileRemovingDevices(_ instance: VMInstance, _ action: String) throws(ControlError) {
        let configured = Set(instance.built.config.pciDeviceIDs)
        let pending = instance.built.deviceManager.devices.filter { $0.unplug != nil && !configured.contains($0.id) }.map(\.id)
        guard pending.isEmpty else {
            throw .failed(action: action, reason: "device \(pending.joined(separator: ", ")) is being removed and the guest has not ejected it yet; "
                + "retry once it has")
        }
    }
}

extension VMConfig {
    /// The ids of the devices PCI hotplug adds and removes: disks, NICs, pmem, virtio-fs and
    /// the vsock device.
    var pciDeviceIDs: [String] { diskIDs + netIDs + pmemIDs + fsIDs + (vsockID.map { [$0] } ?? []) }

    /// The PCI segment of the disk, NIC, pmem, virtio-fs or vsock device `id` (nil when no
    /// such device is configured).
    func pciSegment(ofDevice id: String) -> UInt16? {
        if let index = diskIDs.firstIndex(of: id) { return disks?[index].pciSegment }
        if let index = netIDs.firstIndex(of: id) { return net?[index].pciSegment }
        if let index = pmemIDs.firstIndex(of: id) { return pmem?[index].pci.pciSegment }
        if let index = fsIDs.firstIndex(of: id) { return fs?[index].pci.pciSegment }
        return vsockID == id ? vsock?.pci.pciSegment : nil
    }

    /// Writes each disk's, NIC's, pmem's, virtio-fs' and the vsock device's id (Cloud Hypervisor's
    /// `_disk<N>`... when it had none) into its configuration, and its PCI slot from `slots`
    /// (by id), so that removing one does not renumber the others and a rebuilt machine
    /// (snapshot, migration, reboot) puts each device where the guest knows it.
    mutating func pinDevices(slots: [String: UInt8]) {
        let (diskIDs, netIDs, pmemIDs, fsIDs, vsockID) = (self.diskIDs, self.netIDs, self.pmemIDs, self.fsIDs, self.vsockID)
        for (index, id) in diskIDs.enumerated() {
            disks?[index].id = id
            if let slot = slots[id] { disks?[index].pciDeviceID = slot }
        }
        for (index, id) in netIDs.enumerated() {
            net?[index].id = id
            if let slot = slots[id] { net?[index].pciDeviceID = slot }
        }
        for (index, id) in pmemIDs.enumerated() {
            pmem?[index].pci.id = id
            if let slot = slots[id] { pmem?[index].pci.pciDeviceID = slot }
        }
        for (index, id) in fsIDs.enumerated() {
            fs?[index].pci.id = id
            if let slot = slots[id] { fs?[index].pci.pciDeviceID = slot }
        }
        if let vsockID {
            vsock?.pci.id = vsockID
            if let slot = slots[vsockID] { vsock?.pci.pciDeviceID = slot }
        }
    }
}
