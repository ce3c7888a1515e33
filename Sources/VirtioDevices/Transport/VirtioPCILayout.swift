import PCI

/// Where the modern virtio-pci transport puts its structures, following Cloud
/// Hypervisor: everything lives in one 64-bit memory BAR (BAR 0), each structure at
/// its own page-aligned offset, and vendor-specific capabilities point at them.
public enum VirtioPCILayout {
    /// The PCI vendor id of virtio devices (Red Hat, Inc.).
    public static let vendorID: UInt16 = 0x1af4
    /// Modern (non-transitional) device ids are this plus the device type.
    public static let deviceIDBase: UInt16 = 0x1040
    /// The revision id of a modern device.
    public static let revision: UInt8 = 1

    /// The BAR holding every structure.
    public static let barIndex = 0
    /// The size of BAR 0.
    public static let barSize: UInt64 = 0x8_0000
    /// Offset of the common configuration structure.
    public static let commonConfigOffset: UInt64 = 0x0000
    /// Length of the common configuration structure (`struct virtio_pci_common_cfg`).
    public static let commonConfigLength: UInt64 = 0x38
    /// Offset of the ISR status byte.
    public static let isrOffset: UInt64 = 0x2000
    /// Length of the ISR region.
    public static let isrLength: UInt64 = 1
    /// Offset of the device-specific configuration.
    public static let deviceConfigOffset: UInt64 = 0x4000
    /// Length of the device-specific configuration window.
    public static let deviceConfigLength: UInt64 = 0x1000
    /// Offset of the notification region.
    public static let notifyOffset: UInt64 = 0x6000
    /// Length of the notification region.
    public static let notifyLength: UInt64 = 0x1000
    /// Bytes between two queues' notification addresses (`notify_off_multiplier`).
    public static let notifyOffMultiplier: UInt32 = 4
    /// Offset of the MSI-X table.
    public static let msixTableOffset: UInt64 = 0x8000
    /// Room reserved for the MSI-X table (2048 vectors of 16 bytes).
    public static let msixTableLength: UInt64 = 0x4_0000
    /// Offset of the MSI-X pending-bit array.
    public static let msixPBAOffset: UInt64 = 0x4_8000
    /// Room reserved for the pending-bit array.
    public static let msixPBALength: UInt64 = 0x800

    /// `cfg_type` values of the virtio vendor-specific capabilities (virtio 1.x, 4.1.4).
    public enum CapabilityType {
        /// `VIRTIO_PCI_CAP_COMMON_CFG`.
        public static let common: UInt8 = 1
        /// `VIRTIO_PCI_CAP_NOTIFY_CFG`.
        public static let notify: UInt8 = 2
        /// `VIRTIO_PCI_CAP_ISR_CFG`.
        public static let isr: UInt8 = 3
        /// `VIRTIO_PCI_CAP_DEVICE_CFG`.
        public static let device: UInt8 = 4
    }

    /// The vendor-specific capability (`struct virtio_pci_cap`, or the longer
    /// `virtio_pci_notify_cap` when `notifyOffMultiplier` is given) pointing at a
    /// structure in BAR 0. Every byte is read-only.
    public static func capability(type: UInt8, offset: UInt64, length: UInt64, notifyOffMultiplier: UInt32? = nil) -> RawPCICapability {
        let capLength: UInt8 = notifyOffMultiplier == nil ? 16 : 20
        var body: [UInt8] = [capLength, type, UInt8(barIndex), 0, 0, 0]
        appendLE32(&body, UInt32(truncatingIfNeeded: offset))
        appendLE32(&body, UInt32(truncatingIfNeeded: length))
        if let notifyOffMultiplier { appendLE32(&body, notifyOffMultiplier) }
        return RawPCICapability(id: PCICapabilityID.vendorSpecific, body: body)
    }

    /// Appends `value` little-endian.
    static func appendLE32(_ bytes: inout [UInt8], _ value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }
}

/// Byte offsets of the fields of `struct virtio_pci_common_cfg` (virtio 1.x, 4.1.4.3).
public enum VirtioCommonConfig {
    /// `device_feature_select` (32-bit): which half of the device features to show.
    public static let deviceFeatureSelect: UInt64 = 0x00
    /// `device_feature` (32-bit, read-only): the selected half of the device features.
    public static let deviceFeature: UInt64 = 0x04
    /// `driver_feature_select` (32-bit): which half of the driver features to write.
    public static let driverFeatureSelect: UInt64 = 0x08
    /// `driver_feature` (32-bit): the selected half of the driver features.
    public static let driverFeature: UInt64 = 0x0c
    /// `msix_config` (16-bit): the vector for configuration changes.
    public static let msixConfig: UInt64 = 0x10
    /// `num_queues` (16-bit, read-only).
    public static let numQueues: UInt64 = 0x12
    /// `device_status` (8-bit).
    public static let deviceStatus: UInt64 = 0x14
    /// `config_generation` (8-bit, read-only).
    public static let configGeneration: UInt64 = 0x15
    /// `queue_select` (16-bit).
    public static let queueSelect: UInt64 = 0x16
    /// `queue_size` (16-bit).
    public static let queueSize: UInt64 = 0x18
    /// `queue_msix_vector` (16-bit).
    public static let queueMSIXVector: UInt64 = 0x1a
    /// `queue_enable` (16-bit).
    public static let queueEnable: UInt64 = 0x1c
    /// `queue_notify_off` (16-bit, read-only).
    public static let queueNotifyOff: UInt64 = 0x1e
    /// `queue_desc` (64-bit, as two 32-bit halves).
    public static let queueDescriptor: UInt64 = 0x20
    /// `queue_driver`, the available ring (64-bit, as two 32-bit halves).
    public static let queueDriver: UInt64 = 0x28
    /// `queue_device`, the used ring (64-bit, as two 32-bit halves).
    public static let queueDevice: UInt64 = 0x30
}
