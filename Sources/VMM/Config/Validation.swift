import VirtioDevices

extension VMConfig {
    /// Checks that the configuration can be built, naming the option at fault.
    public func validate() throws(ConfigError) {
        if let first = absentFeatures.first { throw ConfigError(option: first.option, first.optionDescription) }
        guard let payload else { throw ConfigError(option: "--kernel", "no kernel to boot: give --kernel <vmlinux or bzImage>") }
        guard let kernel = payload.kernel, !kernel.isEmpty else {
            throw ConfigError(option: "--kernel", "no kernel to boot: give --kernel <vmlinux or bzImage>")
        }
        try cpus.validate()
        try memory.validate()
        try validatePCISegments()
        try validateIOMMU()
        try serial.validate(option: "--serial")
        try validateDisks()
        try validateNets()
        try validatePmem()
        try validateVsock()
        try validateFs()
        try validateBalloon()
        try console.validate(option: "--console")
        try validateLandlockRules()
        if serial.mode == .tty && console.mode == .tty {
            throw ConfigError(option: "--console", "the serial port and the virtio console cannot both be on the terminal (tty); add --console off (console=ttyS0) or --serial off/null (console=hvc0)")
        }
    }
}

extension VMConfig {
    /// The id of each disk: its `id=`, or Cloud Hypervisor's `_disk<N>`.
    public var diskIDs: [String] {
        (disks ?? []).enumerated().map { index, disk in disk.id ?? "_disk\(index)" }
    }

    /// Each disk on its own, then unique ids and no image given twice. A vhost-user disk
    /// (Cloud Hypervisor's checks, in its order) has a socket and no path, needs shared guest
    /// memory, and has no rate limit.
    func validateDisks() throws(ConfigError) {
        let disks = disks ?? []
        for disk in disks {
            if disk.vhostSocket != nil, disk.path != nil {
                throw ConfigError(option: "--disk", "Disk path and vhost socket both provided: give path= or vhost_user=on,socket=, not both (\(disk.path ?? ""))")
            }
            if disk.vhostUser {
                guard backedBySharedMemory else {
                    throw ConfigError(option: "--disk", "Using vhost-user requires using shared memory or huge pages: give --memory shared=on (the back-end maps guest RAM)")
                }
                guard let socket = disk.vhostSocket, !socket.isEmpty else {
                    throw ConfigError(option: "--disk", "No socket provided when using vhost-user: give socket=<vhost_user_socket_path>")
                }
                if disk.rateLimiterConfig != nil || disk.rateLimitGroup != nil {
                    throw ConfigError(option: "--disk", "Rate limiting is not supported with vhost-user (socket=\(socket))")
                }
            }
            try disk.validate()
        }
        var seen = Set<String>()
        for id in diskIDs {
            guard seen.insert(id).inserted else { throw ConfigError(option: "--disk", "id=\(id) is used by two devices; ids must be unique") }
        }
        var groups = Set<String>()
        for group in rateLimitGroups ?? [] {
            guard !group.id.isEmpty else { throw ConfigError(option: "--rate-limit-group", "id= must not be empty") }
            guard groups.insert(group.id).inserted else {
                throw ConfigError(option: "--rate-limit-group", "id=\(group.id) is given twice; group ids must be unique")
            }
            try group.rateLimiterConfig.validate(option: "--rate-limit-group")
        }
        for disk in disks {
            if let group = disk.rateLimitGroup, !groups.contains(group) {
                throw ConfigError(option: "--disk", "rate_limit_group=\(group) names no --rate-limit-group (\(disk.path ?? "?"))")
            }
        }
        var paths = Set<String>()
        for disk in disks {
            guard let path = disk.path else { continue }
            guard paths.insert(path).inserted else {
                throw ConfigError(option: "--disk", "\(path) is given twice; a VM cannot open one image for two disks")
            }
        }
    }
}

extension VMConfig {
    /// The id of each network device: its `id=`, or Cloud Hypervisor's `_net<N>`.
    public var netIDs: [String] {
        (net ?? []).enumerated().map { index, device in device.id ?? "_net\(index)" }
    }

    /// Each network device on its own, then unique ids (across disks too), interfaces,
    /// descriptors and guest MAC addresses. A vhost-user NIC (Cloud Hypervisor's checks, in
    /// its order) needs shared guest memory and a socket, and has no rate limit.
    func validateNets() throws(ConfigError) {
        let nets = net ?? []
        for device in nets {
            if device.vhostUser {
                guard backedBySharedMemory else {
                    throw ConfigError(option: "--net", "Using vhost-user requires using shared memory or huge pages: give --memory shared=on (the back-end maps guest RAM)")
                }
                guard let socket = device.vhostSocket, !socket.isEmpty else {
                    throw ConfigError(option: "--net", "No socket provided when using vhost-user: give socket=<vhost_user_socket_path>")
                }
                if device.rateLimiterConfig != nil {
                    throw ConfigError(option: "--net", "Rate limiting is not supported with vhost-user (socket=\(socket))")
                }
            }
            try device.validate()
        }
        var ids = Set(diskIDs)
        for id in netIDs {
            guard ids.insert(id).inserted else { throw ConfigError(option: "--net", "id=\(id) is used by two devices; ids must be unique") }
        }
        var taps = Set<String>()
        var fds = Set<Int32>()
        var macs = Set<String>()
        for device in nets {
            if let tap = device.tap, !tap.contains("%"), !taps.insert(tap).inserted {
                throw ConfigError(option: "--net", "tap=\(tap) is given to two devices; each device needs its own interface")
            }
            for fd in device.fds ?? [] where !fds.insert(fd).inserted {
                throw ConfigError(option: "--net", "fd=\(fd) is given to two devices")
            }
            if let mac = device.mac?.lowercased(), !macs.insert(mac).inserted {
                throw ConfigError(option: "--net", "mac=\(mac) is given to two devices; guest addresses must be unique")
            }
        }
    }
}

extension VsockConfig {
    /// Refuses the context ids with a special meaning (0, 1, 2 and 2^32-1, as Cloud
    /// Hypervisor) and an empty socket path (`vm.add-vsock` checks this before the VM does).
    public func validate() throws(ConfigError) {
        if [0, 1, 2, UInt32.max].contains(cid) {
            throw ConfigError(option: "--vsock", "cid=\(cid) is a special vsock context id (0, 1, 2 and 4294967295 are reserved); give 3 or above")
        }
        if socket.isEmpty { throw ConfigError(option: "--vsock", "socket= needs the path of the host-side Unix socket") }
    }
}

extension VMConfig {
    /// The vsock device's id: its `id=`, or Cloud Hypervisor's `_vsock0`.
    public var vsockID: String? { vsock.map { $0.pci.id ?? "_vsock0" } }

    /// Refuses the context ids with a special meaning (0, 1, 2 and 2^32-1, as Cloud
    /// Hypervisor), an empty socket path, and an id another device has.
    func validateVsock() throws(ConfigError) {
        guard let vsock, let id = vsockID else { return }
        try vsock.validate()
        if diskIDs.contains(id) || netIDs.contains(id) || pmemIDs.contains(id) {
            throw ConfigError(option: "--vsock", "id=\(id) is used by two devices; ids must be unique")
        }
    }
}

extension PmemConfig {
    /// The size granularity of persistent memory (2 MiB, so the guest can map it with huge pages).
    public static let sizeAlignment: UInt64 = 2 << 20

    /// Refuses an empty path and a `size` that is not a multiple of 2 MiB (Cloud Hypervisor's
    /// `PmemSizeNotAligned`); a size taken from the file is checked when the file is opened.
    public func validate() throws(ConfigError) {
        if file.isEmpty { throw ConfigError(option: "--pmem", "file= needs the path of the backing file (or of a directory, with size=)") }
        if let size {
            guard size > 0, size % Self.sizeAlignment == 0 else {
                throw ConfigError(option: "--pmem", "size=\(size) of \(file) is not a multiple of 2 MiB: persistent memory comes in 2 MiB steps (Cloud Hypervisor: trying to use a size that is not multiple of 2MiB)")
            }
        }
    }
}

extension VMConfig {
    /// The id of each pmem device: its `id=`, or Cloud Hypervisor's `_pmem<N>`.
    public var pmemIDs: [String] {
        (pmem ?? []).enumerated().map { index, device in device.pci.id ?? "_pmem\(index)" }
    }

    /// Each pmem device on its own, and ids unique across disks and NICs too.
    func validatePmem() throws(ConfigError) {
        var ids = Set(diskIDs + netIDs)
        for (device, id) in zip(pmem ?? [], pmemIDs) {
            try device.validate()
            guard ids.insert(id).inserted else { throw ConfigError(option: "--pmem", "id=\(id) is used by two devices; ids must be unique") }
        }
    }
}

extension CpusConfig {
    /// Checks vCPU counts and topology as Cloud Hypervisor does.
    public func validate() throws(ConfigError) {
        guard bootVCPUs >= 1 else { throw ConfigError(option: "--cpus", "boot must be at least 1") }
        guard maxVCPUs <= 254 else { throw ConfigError(option: "--cpus", "max=\(maxVCPUs) is above the 254 vCPUs this VMM supports") }
        guard maxVCPUs >= bootVCPUs else {
            throw ConfigError(option: "--cpus", "max=\(maxVCPUs) is below boot=\(bootVCPUs); max must be at least boot")
        }
        if let topology, topology.vcpuCount != Int(maxVCPUs) {
            throw ConfigError(option: "--cpus", "topology \(topology.threadsPerCore):\(topology.coresPerDie):\(topology.diesPerPackage):\(topology.packages) describes \(topology.vcpuCount) vCPUs but max is \(maxVCPUs); they must be equal")
        }
    }
}

extension MemoryConfig {
    /// Checks the RAM size and backing options.
    public func validate() throws(ConfigError) {
        guard size >= 16 << 20 else { throw ConfigError(option: "--memory", "size=\(size) is too small; give at least 16M") }
        guard size % 4096 == 0 else { throw ConfigError(option: "--memory", "size=\(size) is not a multiple of 4 KiB") }
        guard size <= 1 << 46 else { throw ConfigError(option: "--memory", "size=\(size) is above the 64 TiB the 46-bit guest address space allows") }
        if let hugepageSize {
            guard hugepages else { throw ConfigError(option: "--memory", "hugepage_size needs hugepages=on") }
            guard hugepageSize.nonzeroBitCount == 1, hugepageSize >= 2 << 20 else {
                throw ConfigError(option: "--memory", "hugepage_size=\(hugepageSize) is not a huge page size (2M or 1G)")
            }
            guard size % hugepageSize == 0 else { throw ConfigError(option: "--memory", "size=\(size) is not a multiple of hugepage_size=\(hugepageSize)") }
        }
        try validateHotplug()
    }

    /// Cloud Hypervisor's memory hotplug rules: `hotplugged_size` needs a `hotplug_size` at
    /// least as large and the virtio-mem method; a virtio-mem room is a non-zero multiple of
    /// 128 MiB and `hotplugged_size` a multiple of the 2 MiB block.
    func validateHotplug() throws(ConfigError) {
        if let hotplugged = hotpluggedSize {
            guard let room = hotplugSize else {
                throw ConfigError(option: "--memory", "Invalid to define 'hotplugged_size' when there is no 'hotplug_size' (hotplugged_size=\(hotplugged))")
            }
            guard hotplugged <= room else {
                throw ConfigError(option: "--memory", "'hotplugged_size' \(hotplugged) can't be bigger than 'hotplug_size' \(room)")
            }
            guard hotplugMethod == .virtioMem else {
                throw ConfigError(option: "--memory", "Invalid to define 'hotplugged_size' with hotplug method 'acpi' (give hotplug_method=virtio-mem)")
            }
        }
        guard hotplugMethod == .virtioMem, let room = hotplugSize else { return }
        guard room > 0 else { throw ConfigError(option: "--memory", "'hotplug_size' can't be 0") }
        guard room % VirtioMem.regionAlignment == 0 else {
            throw ConfigError(option: "--memory", "hotplug_size=\(room): Virtio-mem size is not aligned with \(VirtioMem.regionAlignment) (a multiple of 128M)")
        }
        if let hotplugged = hotpluggedSize, hotplugged % VirtioMem.defaultBlockSize != 0 {
            throw ConfigError(option: "--memory", "hotplugged_size=\(hotplugged) is not aligned on the virtio-mem block size \(VirtioMem.defaultBlockSize) (a multiple of 2M)")
        }
    }
}

extension ConsoleConfig {
    /// Checks a serial/console configuration.
    public func validate(option: String) throws(ConfigError) {
        if mode == .socket, (socket ?? "").isEmpty { throw ConfigError(option: option, "socket mode needs a path: socket=</path/to/a/socket>") }
        if mode == .file, (file ?? "").isEmpty { throw ConfigError(option: option, "file mode needs a path: file=</path/to/a/file>") }
    }
}

extension FsConfig {
    /// Checks one virtio-fs device on its own (`vm.add-fs` checks this before the VM does):
    /// a tag of 1 to 36 bytes, a socket path, 1 to 1024 request queues of a power-of-two size.
    public func validate() throws(ConfigError) {
        if tag.isEmpty { throw ConfigError(option: "--fs", "tag= must not be empty: it names the file system the guest mounts") }
        if tag.utf8.count > 36 { throw ConfigError(option: "--fs", "tag=\(tag) is longer than 36 bytes (Cloud Hypervisor: max tag length is 36)") }
        if socket.isEmpty { throw ConfigError(option: "--fs", "socket= needs the path of the vhost-user back-end's socket (virtiofsd --socket-path)") }
        guard (1...1024).contains(numQueues) else {
            throw ConfigError(option: "--fs", "num_queues=\(numQueues) is out of range; give 1 to 1024 (tag \(tag))")
        }
        guard queueSize >= 2, queueSize <= 32768, queueSize.nonzeroBitCount == 1 else {
            throw ConfigError(option: "--fs", "queue_size=\(queueSize) must be a power of two from 2 to 32768 (tag \(tag))")
        }
        if let id = pci.id, id.isEmpty { throw ConfigError(option: "--fs", "id= must not be empty (tag \(tag))") }
    }
}

extension VMConfig {
    /// The id of each virtio-fs device: its `id=`, or `_fs<N>`.
    public var fsIDs: [String] {
        (fs ?? []).enumerated().map { index, device in device.pci.id ?? "_fs\(index)" }
    }

    /// Whether guest RAM can be mapped by another process (Cloud Hypervisor's
    /// `backed_by_shared_memory`: `shared=on` or `hugepages=on`).
    public var backedBySharedMemory: Bool { memory.shared || memory.hugepages }

    /// Each virtio-fs device on its own; shared guest memory, no more request queues than
    /// boot vCPUs (Cloud Hypervisor's `TooManyQueues`), and ids unique across every device.
    func validateFs() throws(ConfigError) {
        let devices = fs ?? []
        guard !devices.isEmpty else { return }
        guard backedBySharedMemory else {
            throw ConfigError(option: "--fs", "Using vhost-user requires using shared memory or huge pages: give --memory shared=on (the back-end maps guest RAM)")
        }
        var ids = Set(diskIDs + netIDs + pmemIDs + (vsockID.map { [$0] } ?? []))
        for (device, id) in zip(devices, fsIDs) {
            try device.validate()
            guard device.numQueues <= UInt64(cpus.bootVCPUs) else {
                throw ConfigError(option: "--fs", "Queue count (\(device.numQueues)) must not exceed boot vCPUs (\(cpus.bootVCPUs)) (tag \(device.tag))")
            }
            guard ids.insert(id).inserted else { throw ConfigError(option: "--fs", "id=\(id) is used by two devices; ids must be unique") }
        }
    }
}

extension VMConfig {
    /// The balloon's id: its `id=`, or Cloud Hypervisor's `__balloon`.
    public var balloonID: String? { balloon.map { $0.pci.id ?? "__balloon" } }

    /// The balloon: smaller than the RAM (Cloud Hypervisor's `BalloonLargerThanRam`) and an id
    /// no other device has.
    func validateBalloon() throws(ConfigError) {
        guard let balloon, let id = balloonID else { return }
        guard balloon.size < memory.size else {
            throw ConfigError(option: "--balloon", "Balloon size (\(balloon.size)) greater than RAM (\(memory.size)): give a size below the RAM")
        }
        let ids = Set(diskIDs + netIDs + pmemIDs + fsIDs + (vsockID.map { [$0] } ?? []))
        guard !ids.contains(id) else { throw ConfigError(option: "--balloon", "id=\(id) is used by two devices; ids must be unique") }
    }
}
