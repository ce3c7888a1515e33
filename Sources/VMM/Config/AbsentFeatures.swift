// Which configuration fields ask for something this VMM does not have. A field at Cloud
// Hypervisor's default is accepted; one that asks for an absent feature is refused, naming
// the field (JSON path, for the REST API) and the option (for the command line).

/// A configuration field that asks for a feature this VMM does not have.
public struct AbsentFeature: Error, Equatable, Sendable, CustomStringConvertible {
    /// The field's JSON path in `VmConfig` (`vsock`, `cpus.kvm_hyperv`, `disks[0].vhost_user`).
    public var field: String
    /// The command-line option and key (`--vsock`, `--cpus kvm_hyperv=`).
    public var option: String
    /// The feature, in words (`virtio-vsock`).
    public var feature: String

    /// Creates an entry.
    public init(field: String, option: String, feature: String) {
        self.field = field
        self.option = option
        self.feature = feature
    }

    /// A sentence naming the field and the feature.
    public var description: String { "field '\(field)' asks for \(feature), an absent feature of this VMM" }

    /// The same for the command line, naming the option.
    public var optionDescription: String { "\(feature) is an absent feature of this VMM" }
}

/// `path.name`, or `name` at the top of a body.
private func joined(_ path: String, _ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }

extension PCIDeviceCommon {
    /// The absent features these PCI fields ask for (`at` is the device's JSON path, empty
    /// for a device body of its own such as `vm.add-disk`'s).
    /// `placesSlot`: the device honours `pci_device_id` (disks, NICs, pmem, virtio-fs and vsock do).
    func absentFeatures(at path: String, option: String, placesSlot: Bool = false) -> [AbsentFeature] {
        var found: [AbsentFeature] = []
        if pciDeviceID != nil, !placesSlot {
            found.append(AbsentFeature(field: joined(path, "pci_device_id"), option: "\(option) pci_device_id=", feature: "choosing a device's PCI slot"))
        }
        return found
    }
}

extension DiskConfig {
    /// The absent features this disk asks for (`at`: its JSON path, empty for `vm.add-disk`'s body).
    public func absentFeatures(at path: String = "") -> [AbsentFeature] {
        var found: [AbsentFeature] = []
        if queueAffinity != nil {
            found.append(AbsentFeature(field: joined(path, "queue_affinity"), option: "--disk queue_affinity=", feature: "queue affinity"))
        }
        if let type = imageType, type == .fixedVhd || type == .vhdx {
            found.append(AbsentFeature(field: joined(path, "image_type"), option: "--disk image_type=", feature: "\(type.rawValue) images"))
        }
        var common = PCIDeviceCommon(id: id)
        (common.iommu, common.pciSegment, common.pciDeviceID) = (iommu, pciSegment, pciDeviceID)
        return found + common.absentFeatures(at: path, option: "--disk", placesSlot: true)
    }
}

extension NetConfig {
    /// The absent features this NIC asks for (`at`: its JSON path, empty for `vm.add-net`'s body).
    public func absentFeatures(at path: String = "") -> [AbsentFeature] {
        var common = PCIDeviceCommon(id: id)
        (common.iommu, common.pciSegment, common.pciDeviceID) = (iommu, pciSegment, pciDeviceID)
        return common.absentFeatures(at: path, option: "--net", placesSlot: true)
    }
}

extension VsockConfig {
    /// The absent features this vsock device asks for (`at`: its JSON path, empty for `vm.add-vsock`'s body).
    public func absentFeatures(at path: String = "") -> [AbsentFeature] {
        pci.absentFeatures(at: path, option: "--vsock", placesSlot: true)
    }
}

extension PmemConfig {
    /// The absent features this pmem device asks for (`at`: its JSON path, empty for `vm.add-pmem`'s body).
    public func absentFeatures(at path: String = "") -> [AbsentFeature] {
        pci.absentFeatures(at: path, option: "--pmem", placesSlot: true)
    }
}

extension FsConfig {
    /// The absent features this virtio-fs device asks for (`at`: its JSON path, empty for `vm.add-fs`'s body).
    public func absentFeatures(at path: String = "") -> [AbsentFeature] {
        pci.absentFeatures(at: path, option: "--fs", placesSlot: true)
    }
}

extension VMConfig {
    /// Every field of this configuration that asks for an absent feature, in document order.
    public var absentFeatures: [AbsentFeature] {
        var found: [AbsentFeature] = []
        func absent(_ field: String, _ option: String, _ feature: String) {
            found.append(AbsentFeature(field: field, option: option, feature: feature))
        }
        // vCPUs. max_vcpus above boot_vcpus is accepted: the spare vCPUs wait for hotplug.
        if cpus.kvmHyperv { absent("cpus.kvm_hyperv", "--cpus kvm_hyperv=", "Hyper-V enlightenments") }
        if cpus.affinity != nil { absent("cpus.affinity", "--cpus affinity=", "vCPU pinning") }
        if cpus.features.amx { absent("cpus.features.amx", "--cpus features=", "AMX") }
        if cpus.coreScheduling == .vcpu { absent("cpus.core_scheduling", "--cpus core_scheduling=", "per-vCPU core scheduling") }
        if cpus.profile != "Host" { absent("cpus.profile", "--cpus profile=", "CPU profile \(cpus.profile)") }
        // Memory. hotplug_size and hotplugged_size are accepted (ACPI memory hotplug or virtio-mem;
        // MemoryConfig.validate() checks them as Cloud Hypervisor's memory manager does).
        if memory.reserve { absent("memory.reserve", "--memory reserve=", "reserved (no MAP_NORESERVE) guest memory") }
        if !(memory.zones ?? []).isEmpty { absent("memory.zones", "--memory-zone", "memory zones") }
        // Payload.
        if payload?.firmware != nil { absent("payload.firmware", "--firmware", "firmware boot") }
        if payload?.igvm != nil { absent("payload.igvm", "--igvm", "IGVM boot") }
        if payload?.hostData != nil { absent("payload.host_data", "--host-data", "SEV-SNP") }
        // Disks and NICs.
        for (index, disk) in (disks ?? []).enumerated() { found += disk.absentFeatures(at: "disks[\(index)]") }
        for (index, device) in (net ?? []).enumerated() { found += device.absentFeatures(at: "net[\(index)]") }
        found += rng.pci.absentFeatures(at: "rng", option: "--rng")
        // Device kinds this VMM does not build.
        if let balloon { found += balloon.pci.absentFeatures(at: "balloon", option: "--balloon", placesSlot: true) }
        if !(genericVhostUser ?? []).isEmpty { absent("generic_vhost_user", "--generic-vhost-user", "generic vhost-user devices") }
        for (index, device) in (fs ?? []).enumerated() { found += device.absentFeatures(at: "fs[\(index)]") }
        for (index, device) in (pmem ?? []).enumerated() { found += device.absentFeatures(at: "pmem[\(index)]") }
        if !(devices ?? []).isEmpty { absent("devices", "--device", "VFIO device assignment") }
        if !(userDevices ?? []).isEmpty { absent("user_devices", "--user-device", "vfio-user devices") }
        if !(vdpa ?? []).isEmpty { absent("vdpa", "--vdpa", "vDPA devices") }
        if let vsock { found += vsock.absentFeatures(at: "vsock") }
        if rtc != nil { absent("rtc", "--rtc", "the virtio RTC device") }
        if tpm != nil { absent("tpm", "--tpm", "TPM devices") }
        if pvpanic { absent("pvpanic", "--pvpanic", "the pvpanic device") }
        if watchdog { absent("watchdog", "--watchdog", "the virtio watchdog") }
        if !(numa ?? []).isEmpty { absent("numa", "--numa", "guest NUMA nodes") }
        // Consoles.
        found += console.pci.absentFeatures(at: "console", option: "--console")
        if debugConsole.mode != .off { absent("debug_console", "--debug-console", "the debug console port") }
        // Platform.
        if let platform {
            if platform.hasSMBIOS { absent("platform", "--platform serial_number=,uuid=,oem_strings=", "SMBIOS tables") }
            if platform.tdx { absent("platform.tdx", "--platform tdx=", "Intel TDX") }
            if platform.sevSNP { absent("platform.sev_snp", "--platform sev_snp=", "AMD SEV-SNP") }
            if platform.iommufd { absent("platform.iommufd", "--platform iommufd=", "iommufd") }
        }
        return found
    }
}
