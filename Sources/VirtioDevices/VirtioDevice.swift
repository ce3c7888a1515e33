import DeviceModel
import GuestMemory
import PCI
import VirtioQueue

/// A virtio device type id (virtio 1.x, section 5), which also picks the PCI device id
/// `0x1040 + id` of a modern virtio-pci function.
public struct VirtioDeviceType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The numeric type id.
    public let rawValue: UInt16
    /// Wraps a numeric type id.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Network card (1).
    public static let net = VirtioDeviceType(rawValue: 1)
    /// Block device (2).
    public static let block = VirtioDeviceType(rawValue: 2)
    /// Console (3).
    public static let console = VirtioDeviceType(rawValue: 3)
    /// Entropy source (4).
    public static let rng = VirtioDeviceType(rawValue: 4)
    /// Traditional memory balloon (5).
    public static let balloon = VirtioDeviceType(rawValue: 5)
    /// Socket device (19).
    public static let vsock = VirtioDeviceType(rawValue: 19)
    /// IOMMU device (23), virtio-iommu.
    public static let iommu = VirtioDeviceType(rawValue: 23)
    /// Memory device (24), virtio-mem.
    public static let mem = VirtioDeviceType(rawValue: 24)
    /// File system device (26), virtio-fs.
    public static let fs = VirtioDeviceType(rawValue: 26)
    /// Persistent memory device (27).
    public static let pmem = VirtioDeviceType(rawValue: 27)

    /// The type's name, or its number when it has no name here.
    public var description: String {
        switch rawValue {
        case 1: "net"
        case 2: "block"
        case 3: "console"
        case 4: "rng"
        case 5: "balloon"
        case 19: "vsock"
        case 23: "iommu"
        case 24: "mem"
        case 26: "fs"
        case 27: "pmem"
        default: "type \(rawValue)"
        }
    }
}

/// Feature bits shared by every device type (virtio 1.x, section 6), as bit positions.
public enum VirtioFeature {
    /// `VIRTIO_F_RING_INDIRECT_DESC`: the driver may use indirect descriptor tables.
    public static let indirectDescriptors: UInt64 = 1 << 28
    /// `VIRTIO_F_RING_EVENT_IDX`: notification suppression with `used_event`/`avail_event`.
    public static let eventIndex: UInt64 = 1 << 29
    /// `VIRTIO_F_VERSION_1`: the device follows virtio 1.x; always offered by this transport.
    public static let version1: UInt64 = 1 << 32
    /// `VIRTIO_F_ACCESS_PLATFORM` (formerly `VIRTIO_F_IOMMU_PLATFORM`): the device reaches
    /// guest memory through a platform translation (a virtual IOMMU), so the driver gives
    /// it I/O virtual addresses.
    public static let accessPlatform: UInt64 = 1 << 33
    /// The bits the transport offers on top of a device's own features: `VERSION_1`, and
    /// `ACCESS_PLATFORM` for a device behind a virtual IOMMU. The transport checks them when a
    /// state is restored; a device's own check lets them through.
    public static let transportOffered: UInt64 = version1 | accessPlatform
    /// `VIRTIO_F_IN_ORDER`: the device uses buffers in the order the driver made them available.
    public static let inOrder: UInt64 = 1 << 35
}

/// The device status bits the driver writes (virtio 1.x, section 2.1).
public enum VirtioStatus {
    /// The guest noticed the device.
    public static let acknowledge: UInt8 = 0x01
    /// The guest knows how to drive the device.
    public static let driver: UInt8 = 0x02
    /// The driver is set up and the device is live.
    public static let driverOK: UInt8 = 0x04
    /// The driver finished feature negotiation (kept only if the device accepts the features).
    public static let featuresOK: UInt8 = 0x08
    /// The device hit an error it cannot recover from without a reset.
    public static let deviceNeedsReset: UInt8 = 0x40
    /// The driver gave up on the device.
    public static let failed: UInt8 = 0x80
}

/// The failures a virtio device reports to its transport; each one makes the transport
/// set `DEVICE_NEEDS_RESET` and stop serving the device until the driver resets it.
public enum VirtioDeviceError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The driver notified or activated a queue index the device does not have.
    case queueIndexOutOfRange(index: Int, count: Int)
    /// The device was asked to process a queue before activation (or after a reset).
    case notActivated
    /// A queue the device needs was not enabled by the driver.
    case queueNotEnabled(index: Int)
    /// The driver broke the virtqueue rules on queue `index`.
    case queue(index: Int, QueueError)
    /// A chain that must carry a device-writable buffer has none.
    case noWritableBuffer(queue: Int, head: UInt16)
    /// A chain that must carry a device-readable buffer has none.
    case noReadableBuffer(queue: Int, head: UInt16)
    /// The backend failed (for example reading the entropy source).
    case backend(String)

    /// A sentence that explains the failure.
    public var description: String {
        switch self {
        case let .queueIndexOutOfRange(index, count):
            "queue \(index) does not exist: the device has \(count) queue(s)"
        case .notActivated:
            "the device is not activated: the driver has not set DRIVER_OK since the last reset"
        case let .queueNotEnabled(index):
            "queue \(index) was not enabled by the driver before DRIVER_OK"
        case let .queue(index, error):
            "queue \(index) is broken: \(error)"
        case let .noWritableBuffer(queue, head):
            "the chain at head \(head) on queue \(queue) has no device-writable buffer"
        case let .noReadableBuffer(queue, head):
            "the chain at head \(head) on queue \(queue) has no device-readable buffer"
        case let .backend(message):
            "the device backend failed: \(message)"
        }
    }
}

/// Where a virtio device sends interrupts; the transport maps them to MSI-X vectors.
///
/// Devices call it from their queue processing; it never calls back into the device.
public protocol VirtioInterrupt: Sendable {
    /// Tells the driver that queue `queue` (its index) has new used buffers.
    func signalQueue(_ queue: Int)
    /// Tells the driver that the device configuration space changed.
    func signalConfig()
}

/// A virtio device behind a transport (virtio-pci here): the device-type logic with
/// its queues, independent of how the guest reaches its registers.
///
/// Like the other devices of this project it is passive: the transport calls it when
/// the driver activates, resets or notifies it, and backends are injected. Calls come
/// from vCPU threads (register accesses) and from the VMM's event loop (queue
/// notifications), so implementations keep their state behind a lock.
public protocol VirtioDevice: AnyObject, Sendable {
    /// The device type (virtio 1.x, section 5).
    var deviceType: VirtioDeviceType { get }
    /// Device-specific feature bits offered to the driver; the transport adds
    /// ``VirtioFeature/version1`` itself.
    var features: UInt64 { get }
    /// The maximum size of each queue; the count is the number of queues.
    var queueMaxSizes: [UInt16] { get }
    /// The PCI class code the function advertises.
    var pciClassCode: PCIClassCode { get }

    /// Reads `size` bytes (1, 2, 4 or 8) at `offset` in the device configuration space.
    func readConfig(offset: UInt64, size: Int) -> UInt64
    /// Writes the low `size` bytes of `value` at `offset` in the device configuration space.
    func writeConfig(offset: UInt64, size: Int, value: UInt64)
    /// Records the feature bits the driver accepted (called when FEATURES_OK is accepted).
    func acknowledgeFeatures(_ features: UInt64)

    /// Starts the device: the driver set DRIVER_OK. `queues[i]` is queue `i`, activated
    /// (ready) when the driver enabled it and not ready otherwise.
    ///
    /// - Throws: ``VirtioDeviceError`` when the device cannot run with these queues.
    func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError)
    /// Stops the device and forgets its queues (the driver wrote status 0).
    func reset()
    /// Serves queue `index` after the driver notified it.
    ///
    /// - Throws: ``VirtioDeviceError`` when the driver broke the rules; the transport then
    ///   sets `DEVICE_NEEDS_RESET`.
    func processQueue(_ index: Int) throws(VirtioDeviceError)

    /// The device's state and the queues it runs, taken together under its locks (the VMM
    /// saves while the machine is paused).
    func saveDeviceState() -> VirtioDeviceSnapshot
    /// Takes the device-specific state of a saved device. The transport calls it on a
    /// device it has just reset, given the features (``acknowledgeFeatures(_:)``) and,
    /// when the saved device ran, activated with the queues at their saved positions.
    ///
    /// - Throws: `DeviceStateError` naming the field, changing nothing, when `state` is
    ///   for another device type or could not come from a device of this configuration.
    func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError)
}

extension VirtioDevice {
    /// The class Cloud Hypervisor gives each type: network for net, "other mass
    /// storage" for block, "other" for everything else.
    public var pciClassCode: PCIClassCode {
        switch deviceType {
        case .net: .ethernet
        case .block: .otherMassStorage
        default: .other
        }
    }

    /// No device configuration: reads 0.
    public func readConfig(offset: UInt64, size: Int) -> UInt64 { 0 }
    /// No device configuration: writes are ignored.
    public func writeConfig(offset: UInt64, size: Int, value: UInt64) {}
    /// By default the device needs no record of the negotiated features.
    public func acknowledgeFeatures(_ features: UInt64) {}
}

/// Reading a device configuration space kept as bytes.
public enum VirtioConfigSpace {
    /// The little-endian value of `size` bytes (at most 8) at `offset` of `bytes`; bytes past
    /// the end read as 0.
    public static func read(_ bytes: [UInt8], offset: UInt64, size: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<min(size, 8) where offset < UInt64(bytes.count) && Int(offset) + index < bytes.count {
            value |= UInt64(bytes[Int(offset) + index]) << (UInt64(index) * 8)
        }
        return value
    }
}
