// The controller's configuration-changing actions: vm.resize and vm.add-disk / vm.add-net /
// vm.add-pmem / vm.add-fs / vm.add-vsock / vm.remove-device. Before boot they edit the stored configuration (as Cloud Hypervisor does);
// on a running VM, vm.resize hotplugs vCPUs and the others hotplug PCI devices (VMMController+Hotplug.swift).
import HostSystem

extension VMMController {
    /// `vm.resize`: `desired_vcpus` from 1 to `max_vcpus` hotplugs or unplugs vCPUs on a
    /// running VM (through the ACPI CPU hotplug controller, as Cloud Hypervisor) and becomes
    /// the configuration's `boot_vcpus` either way. `desired_ram` above the RAM a running VM
    /// has hot-adds the difference through ACPI memory hotplug (``MemoryHotplugSupport``);
    /// either way it becomes the configuration's `memory.size`, as in Cloud Hypervisor (which
    /// cannot remove ACPI-hotplugged memory: a smaller size only takes effect at the next
    /// boot). A request for the current RAM changes nothing (Kata sends one on every
    /// container create). With virtio-mem (``VirtioMemSupport``) `desired_ram`, from the boot
    /// RAM to the boot RAM plus `hotplug_size`, sets the device's `requested_size` to what lies
    /// above the boot RAM (grow or shrink; the guest plugs or unplugs) and becomes the
    /// configuration's `memory.hotplugged_size`. `desired_balloon` asks a running VM's
    /// virtio-balloon for that many bytes (`num_pages` and a configuration interrupt; refused
    /// without a balloon, Cloud Hypervisor's `MissingVirtioBalloon`) and becomes the
    /// configuration's balloon size; before boot it only sets that size (ignored without a
    /// balloon, as Cloud Hypervisor does).
    public func resize(_ request: VMResize) throws(ControlError) {
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard var config = slot.config else { throw .vmNotCreated }
            if let vcpus = request.desiredVCPUs {
                guard vcpus >= 1 else { throw .invalidConfig("desired_vcpus must be at least 1") }
                guard vcpus <= UInt32(config.cpus.maxVCPUs) else {
                    throw .invalidConfig("desired_vcpus \(vcpus) is above max_vcpus \(config.cpus.maxVCPUs)")
                }
            }
            // With virtio-mem the RAM is the boot size plus what is requested from the device.
            let currentRAM = config.memory.size + (config.memory.hotplugMethod == .virtioMem && slot.instance != nil ? config.memory.hotpluggedSize ?? 0 : 0)
            let ram = request.desiredRAM.flatMap { $0 != currentRAM ? $0 : nil }
            if let ram, let instance = slot.instance {
                try Self.checkMemoryResize(ram, config: config.memory, instance: instance)
            }
            guard request.desiredVCPUs != nil || ram != nil || request.desiredBalloon != nil else { return }
            if slot.instance != nil { try Self.refuseWhileMigrating(slot, "vm.resize") }
            if let instance = slot.instance {
                if let balloonSize = request.desiredBalloon, instance.built.balloon == nil {
                    throw .failed(action: "vm.resize", reason: "Missing virtio-balloon, can't proceed as expected: the VM has no --balloon device to resize to \(balloonSize) bytes")
                }
                monitor?.emit(source: "vm", event: "resizing")
                if let vcpus = request.desiredVCPUs {
                    do { _ = try instance.resizeVCPUs(to: Int(vcpus)) } catch { throw .failed(action: "vm.resize", reason: "\(error)") }
                    instance.built.setBootVCPUs(Int(vcpus))
                }
                if let ram, let virtioMem = instance.built.virtioMem {
                    do throws(MemoryResizeRefusal) { try virtioMem.resize(to: ram) } catch { throw .invalidConfig("desired_ram \(ram): \(error)") }
                    var built = instance.built.config
                    built.memory.hotpluggedSize = Self.hotpluggedSize(ram, bootRAM: built.memory.size)
                    instance.built.replaceConfig(built)
                    logger.info("virtio-mem: asked the guest for \(ram - virtioMem.bootRAM) bytes")
                }
                if let ram, let hotplug = instance.built.memoryHotplug {
                    let devices = instance.built.deviceManager.devices
                    do {
                        _ = try hotplug.resize(to: ram) { region in
                            for device in devices { try device.memoryAdded?(region) }
                        }
                    } catch let refusal as MemoryResizeRefusal {
                        throw .invalidConfig("desired_ram \(ram): \(refusal)")
                    } catch { throw .failed(action: "vm.resize", reason: "\(error)") }
                    instance.built.setMemorySize(ram)
                }
                if let balloonSize = request.desiredBalloon, let balloon = instance.built.balloon {
                    balloon.resize(to: balloonSize)
                    // A reboot, a snapshot or a migration then starts with this size.
                    var built = instance.built.config
                    built.balloon?.size = balloonSize
                    instance.built.replaceConfig(built)
                    logger.info("balloon: asked the guest for \(balloonSize) bytes")
                }
                monitor?.emit(source: "vm", event: "resized")
            }
            if let vcpus = request.desiredVCPUs { config.cpus.bootVCPUs = vcpus }
            if let balloonSize = request.desiredBalloon, config.balloon != nil { config.balloon?.size = balloonSize }
            if let ram, slot.instance != nil, config.memory.hotplugMethod == .virtioMem {
                // Cloud Hypervisor's configuration keeps the boot size and follows hotplugged_size.
                config.memory.hotpluggedSize = Self.hotpluggedSize(ram, bootRAM: config.memory.size)
            } else if let ram {
                config.memory.size = ram
                // Before boot the size is checked as vm.create checks it (the boot would fail later).
                if slot.instance == nil {
                    do { try config.memory.validate() } catch { throw .invalidConfig("desired_ram \(ram): \(error)") }
                }
            }
            slot.config = config
        }
    }

    /// Refuses a `desired_ram` a running VM cannot take: with virtio-mem, as
    /// ``VirtioMemSupport/check(_:)`` does; without memory hotplug (no `hotplug_size`), above the boot RAM plus `hotplug_size` (the
    /// room the guest's address space kept, a bad request that names it). The back-ends of
    /// vhost-user devices learn of hot-added memory before the guest does.
    static func checkMemoryResize(_ ram: UInt64, config: MemoryConfig, instance: VMInstance) throws(ControlError) {
        if let virtioMem = instance.built.virtioMem {
            do throws(MemoryResizeRefusal) { try virtioMem.check(ram) } catch { throw .invalidConfig("desired_ram \(ram): \(error)") }
            return
        }
        guard let hotplug = instance.built.memoryHotplug else {
            throw .invalidConfig("desired_ram \(ram) differs from the VM's \(config.size) bytes, but the VM was created without "
                + "memory hotplug: give --memory hotplug_size= (hotplug_method=acpi) to resize its RAM")
        }
        let limit = hotplug.bootRAM + (config.hotplugSize ?? 0)
        guard ram <= limit else {
            throw .invalidConfig("desired_ram \(ram) is above the boot RAM plus hotplug_size (\(hotplug.bootRAM) + \(config.hotplugSize ?? 0) "
                + "= \(limit) bytes): the VM has no room for more memory")
        }
    }

    /// Cloud Hypervisor's `hotplugged_size` after a virtio-mem resize to `ram`: what lies above
    /// the boot RAM, or none.
    static func hotpluggedSize(_ ram: UInt64, bootRAM: UInt64) -> UInt64? {
        ram > bootRAM ? ram - bootRAM : nil
    }

    /// Refuses `action` (a snapshot or migration, which save the present vCPUs) while the guest
    /// has not ejected a vCPU vm.resize removed: the set of vCPUs is then about to change.
    static func refuseWhileRemovingVCPUs(_ instance: VMInstance, _ action: String) throws(ControlError) {
        let pending = instance.built.cpuHotplug.controller.pendingRemoval
        guard pending.isEmpty else {
            throw .failed(action: action, reason: "vCPU \(pending.map(String.init).joined(separator: ", ")) is being removed and the guest "
                + "has not ejected it yet; retry once it has")
        }
    }

    /// `vm.add-disk`: added to the configuration before boot, hot-added to a running VM.
    public func addDisk(_ config: DiskConfig) throws(ControlError) -> PciDeviceInfo? {
        try addDevice(hotplug: .disk(config), action: "vm.add-disk") { (vm: inout VMConfig) throws(ControlError) in
            var disks = vm.disks ?? []
            disks.append(config)
            vm.disks = disks
        }
    }

    /// `vm.add-net`: the passed descriptors become the device's `fds`; added to the
    /// configuration before boot, hot-added to a running VM.
    public func addNet(_ config: NetConfig, descriptors: [OwnedFileDescriptor]) throws(ControlError) -> PciDeviceInfo? {
        var device = config
        // Numbers written in the body mean nothing here: only passed descriptors count.
        device.fds = descriptors.isEmpty ? nil : descriptors.map(\.rawValue)
        if !descriptors.isEmpty, config.fds == nil || config.numQueues == 2 {
            device.numQueues = descriptors.count * 2
        }
        let owned = descriptors
        return try addDevice(hotplug: .net(device), action: "vm.add-net", { (vm: inout VMConfig) throws(ControlError) in
            var nets = vm.net ?? []
            nets.append(device)
            vm.net = nets
        }, passing: owned)
    }

    /// `vm.add-pmem`: added to the configuration before boot, hot-added to a running VM.
    public func addPmem(_ config: PmemConfig) throws(ControlError) -> PciDeviceInfo? {
        try addDevice(hotplug: .pmem(config), action: "vm.add-pmem") { (vm: inout VMConfig) throws(ControlError) in
            var pmem = vm.pmem ?? []
            pmem.append(config)
            vm.pmem = pmem
        }
    }

    /// `vm.add-fs`: added to the configuration before boot, hot-added to a running VM (the VMM
    /// connects to the back-end); either way the VM needs shared guest memory, as every
    /// vhost-user device.
    public func addFs(_ config: FsConfig) throws(ControlError) -> PciDeviceInfo? {
        try addDevice(hotplug: .fs(config), action: "vm.add-fs") { (vm: inout VMConfig) throws(ControlError) in
            var fs = vm.fs ?? []
            fs.append(config)
            vm.fs = fs
        }
    }

    /// `vm.add-vsock`: the vsock device goes into the configuration before boot, unless it
    /// has one already (Cloud Hypervisor's `TooManyVsockDevices`); hot-added to a running VM.
    public func addVsock(_ config: VsockConfig) throws(ControlError) -> PciDeviceInfo? {
        try addDevice(hotplug: .vsock(config), action: "vm.add-vsock") { (vm: inout VMConfig) throws(ControlError) in
            guard vm.vsock == nil else {
                throw .invalidConfig("the VM has a vsock device already (\(vm.vsockID ?? "_vsock0")); it can have only one")
            }
            vm.vsock = config
        }
    }

    /// `vm.remove-device`: before boot, removes a disk, NIC, pmem, virtio-fs or the vsock device from the configuration (and
    /// closes descriptors passed for it); on a running VM, asks the guest to eject it as well.
    public func removeDevice(id: String) throws(ControlError) {
        try slot.withLock { (slot: inout Slot) throws(ControlError) in
            guard var config = slot.config else { throw .vmNotCreated }
            if let instance = slot.instance {
                try hotRemove(id: id, slot: &slot, instance: instance)
                return
            }
            if let index = config.diskIDs.firstIndex(of: id) {
                config.disks?.remove(at: index)
                if config.disks?.isEmpty == true { config.disks = nil }
            } else if let index = config.netIDs.firstIndex(of: id) {
                let removed = config.net?.remove(at: index)
                if config.net?.isEmpty == true { config.net = nil }
                for fd in removed?.fds ?? [] { slot.passed[fd] = nil }
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
            slot.config = config
        }
    }

    /// Applies `change` to the stored configuration of a VM that is not running, after
    /// validating the result, or hot-adds `hotplug` to a running one; takes ownership of
    /// `descriptors` (closed if refused).
    private func addDevice(hotplug: HotplugKind, action: String, _ change: (inout VMConfig) throws(ControlError) -> Void,
                           passing descriptors: [OwnedFileDescriptor] = []) throws(ControlError) -> PciDeviceInfo? {
        try slot.withLock { (slot: inout Slot) throws(ControlError) -> PciDeviceInfo? in
            guard var config = slot.config else { throw .vmNotCreated }
            if let instance = slot.instance {
                let info = try hotAdd(hotplug, slot: &slot, instance: instance, action: action)
                for descriptor in descriptors { slot.passed[descriptor.rawValue] = descriptor }
                return info
            }
            try change(&config)
            if let absent = config.absentFeatures.first { throw .absentFeature(absent) }
            do throws(ConfigError) { try config.validate() } catch { throw .invalidConfig(error.description) }
            slot.config = config
            for descriptor in descriptors { slot.passed[descriptor.rawValue] = descriptor }
            return nil
        }
    }
}
