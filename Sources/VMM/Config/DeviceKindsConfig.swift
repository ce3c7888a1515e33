// Configuration of the device kinds beyond disks and NICs, with Cloud Hypervisor's JSON names
// and defaults: balloon, virtio-fs, pmem, vsock, vDPA, VFIO and user devices, generic
// vhost-user, the virtio RTC. Each is decoded and echoed in full; which ones this VMM can
// build is decided in AbsentFeatures.swift.

/// `--balloon`: a virtio-balloon device.
public struct BalloonConfig: Codable, Equatable, Sendable {
    /// The PCI fields.
    public var pci = PCIDeviceCommon()
    /// The balloon's initial size in bytes.
    public var size: UInt64
    /// Let the guest deflate the balloon when it runs out of memory.
    public var deflateOnOOM = false
    /// Free page reporting.
    public var freePageReporting = false

    /// A balloon of `size` bytes.
    public init(size: UInt64) { self.size = size }

    enum CodingKeys: String, CodingKey { case size, deflateOnOOM = "deflate_on_oom", freePageReporting = "free_page_reporting" }

    /// Decodes with Cloud Hypervisor's defaults (`size` is required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        size = try c.decode(UInt64.self, forKey: .size)
        deflateOnOOM = try c.value(.deflateOnOOM, default: false)
        freePageReporting = try c.value(.freePageReporting, default: false)
        pci = try PCIDeviceCommon(from: decoder)
    }

    /// Encodes as Cloud Hypervisor does.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(size, forKey: .size)
        try c.encode(deflateOnOOM, forKey: .deflateOnOOM)
        try c.encode(freePageReporting, forKey: .freePageReporting)
        try pci.encode(to: encoder)
    }
}

/// `--fs`: a virtio-fs device served by a vhost-user back-end (virtiofsd).
public struct FsConfig: Codable, Equatable, Sendable {
    /// The PCI fields.
    public var pci = PCIDeviceCommon()
    /// The tag the guest mounts.
    public var tag: String
    /// The back-end's vhost-user socket.
    public var socket: String
    /// Request queues (default 1).
    public var numQueues: UInt64 = 1
    /// Entries per queue (default 1024).
    public var queueSize: UInt16 = 1024

    /// A device for `tag` served at `socket`.
    public init(tag: String, socket: String) {
        self.tag = tag
        self.socket = socket
    }

    enum CodingKeys: String, CodingKey { case tag, socket, numQueues = "num_queues", queueSize = "queue_size" }

    /// Decodes with Cloud Hypervisor's defaults (`tag` and `socket` are required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        tag = try c.decode(String.self, forKey: .tag)
        socket = try c.decode(String.self, forKey: .socket)
        numQueues = try c.value(.numQueues, default: 1)
        queueSize = try c.value(.queueSize, default: 1024)
        pci = try PCIDeviceCommon(from: decoder, readingIOMMU: false)
    }

    /// Encodes as Cloud Hypervisor does.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(tag, forKey: .tag)
        try c.encode(socket, forKey: .socket)
        try c.encode(numQueues, forKey: .numQueues)
        try c.encode(queueSize, forKey: .queueSize)
        try pci.encode(to: encoder)
    }
}

/// `--pmem`: a file mapped into the guest as persistent memory (virtio-pmem).
public struct PmemConfig: Codable, Equatable, Sendable {
    /// The PCI fields.
    public var pci = PCIDeviceCommon()
    /// The backing file.
    public var file: String
    /// The size (the file's when absent).
    public var size: UInt64?
    /// Map the file privately: guest writes never reach it.
    public var discardWrites = false

    /// A device backed by `file`.
    public init(file: String) { self.file = file }

    enum CodingKeys: String, CodingKey { case file, size, discardWrites = "discard_writes" }

    /// Decodes with Cloud Hypervisor's defaults (`file` is required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        file = try c.decode(String.self, forKey: .file)
        size = try c.optional(.size)
        discardWrites = try c.value(.discardWrites, default: false)
        pci = try PCIDeviceCommon(from: decoder)
    }

    /// Encodes as Cloud Hypervisor does.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(file, forKey: .file)
        try c.encodeIfPresent(size, forKey: .size)
        try c.encode(discardWrites, forKey: .discardWrites)
        try pci.encode(to: encoder)
    }
}

/// `--vsock`: a virtio-vsock device with Cloud Hypervisor's hybrid vsock on a Unix socket.
public struct VsockConfig: Codable, Equatable, Sendable {
    /// The PCI fields.
    public var pci = PCIDeviceCommon()
    /// The guest's context id (3 or above).
    public var cid: UInt32
    /// The host-side Unix socket.
    public var socket: String

    /// A device for `cid` at `socket`.
    public init(cid: UInt32, socket: String) {
        self.cid = cid
        self.socket = socket
    }

    enum CodingKeys: String, CodingKey { case cid, socket }

    /// Decodes (`cid` and `socket` are required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cid = try c.decode(UInt32.self, forKey: .cid)
        socket = try c.decode(String.self, forKey: .socket)
        pci = try PCIDeviceCommon(from: decoder)
    }

    /// Encodes as Cloud Hypervisor does.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(cid, forKey: .cid)
        try c.encode(socket, forKey: .socket)
        try pci.encode(to: encoder)
    }
}

/// `--vdpa`: a vDPA device.
public struct VdpaConfig: Codable, Equatable, Sendable {
    /// The PCI fields.
    public var pci = PCIDeviceCommon()
    /// The vhost-vdpa character device.
    public var path: String
    /// Queues (default 1).
    public var numQueues: UInt64 = 1

    /// A device at `path`.
    public init(path: String) { self.path = path }

    enum CodingKeys: String, CodingKey { case path, numQueues = "num_queues" }

    /// Decodes with Cloud Hypervisor's defaults (`path` is required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decode(String.self, forKey: .path)
        numQueues = try c.value(.numQueues, default: 1)
        pci = try PCIDeviceCommon(from: decoder)
    }

    /// Encodes as Cloud Hypervisor does.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(path, forKey: .path)
        try c.encode(numQueues, forKey: .numQueues)
        try pci.encode(to: encoder)
    }
}

/// `--device`: a host PCI device assigned through VFIO.
public struct DeviceConfig: Codable, Equatable, Sendable {
    /// The PCI fields.
    public var pci = PCIDeviceCommon()
    /// The device's sysfs path.
    public var path: String?
    /// A VFIO cdev descriptor handed over with the request (never a number from a body).
    public var fd: Int32?
    /// NVIDIA GPUDirect clique id.
    public var xNvGpudirectClique: UInt8?
    /// BARs not to map.
    public var xExcludeMmapBars: [UInt64] = []

    /// A device at `path`.
    public init(path: String? = nil) { self.path = path }

    enum CodingKeys: String, CodingKey { case path, fd, xNvGpudirectClique = "x_nv_gpudirect_clique", xExcludeMmapBars = "x_exclude_mmap_bars" }

    /// Decodes; a descriptor number in the body is kept only as "one was named" (-1), as Cloud Hypervisor does.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.optional(.path)
        fd = try (c.optional(.fd) as Int32?).map { _ in -1 }
        xNvGpudirectClique = try c.optional(.xNvGpudirectClique)
        xExcludeMmapBars = try c.value(.xExcludeMmapBars, default: [])
        pci = try PCIDeviceCommon(from: decoder)
    }

    /// Encodes as Cloud Hypervisor does (descriptors are never written out).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(path, forKey: .path)
        try c.encodeIfPresent(xNvGpudirectClique, forKey: .xNvGpudirectClique)
        try c.encode(xExcludeMmapBars, forKey: .xExcludeMmapBars)
        try pci.encode(to: encoder)
    }
}

/// `--user-device`: a device emulated by another process over vfio-user.
public struct UserDeviceConfig: Codable, Equatable, Sendable {
    /// The PCI fields.
    public var pci = PCIDeviceCommon()
    /// The vfio-user socket.
    public var socket: String

    /// A device served at `socket`.
    public init(socket: String) { self.socket = socket }

    enum CodingKeys: String, CodingKey { case socket }

    /// Decodes (`socket` is required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        socket = try c.decode(String.self, forKey: .socket)
        pci = try PCIDeviceCommon(from: decoder, readingIOMMU: false)
    }

    /// Encodes as Cloud Hypervisor does.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(socket, forKey: .socket)
        try pci.encode(to: encoder)
    }
}

/// `--generic-vhost-user`: any virtio device served by a vhost-user back-end.
public struct GenericVhostUserConfig: Codable, Equatable, Sendable {
    /// The PCI fields.
    public var pci = PCIDeviceCommon()
    /// The back-end's socket.
    public var socket: String
    /// The size of each queue.
    public var queueSizes: [UInt16]
    /// The virtio device type.
    public var deviceType: UInt32

    /// A device of `deviceType` served at `socket`.
    public init(socket: String, queueSizes: [UInt16], deviceType: UInt32) {
        self.socket = socket
        self.queueSizes = queueSizes
        self.deviceType = deviceType
    }

    enum CodingKeys: String, CodingKey { case socket, queueSizes = "queue_sizes", deviceType = "device_type" }

    /// Decodes (every field is required).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        socket = try c.decode(String.self, forKey: .socket)
        queueSizes = try c.decode([UInt16].self, forKey: .queueSizes)
        deviceType = try c.decode(UInt32.self, forKey: .deviceType)
        pci = try PCIDeviceCommon(from: decoder, readingIOMMU: false)
    }

    /// Encodes as Cloud Hypervisor does.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(socket, forKey: .socket)
        try c.encode(queueSizes, forKey: .queueSizes)
        try c.encode(deviceType, forKey: .deviceType)
        try pci.encode(to: encoder)
    }
}

/// `--rtc`: the virtio RTC device (not the CMOS clock every VM has).
public struct RtcConfig: Codable, Equatable, Sendable {
    /// The PCI fields.
    public var pci = PCIDeviceCommon()

    /// A device with default PCI fields.
    public init() {}

    /// Decodes the PCI fields.
    public init(from decoder: any Decoder) throws { pci = try PCIDeviceCommon(from: decoder) }

    /// Encodes the PCI fields.
    public func encode(to encoder: any Encoder) throws { try pci.encode(to: encoder) }
}
