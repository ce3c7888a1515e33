import GuestMemory
import PCI
import Synchronization
import VirtioDevices
import VirtioQueue

/// Records MSI-X route updates and deliveries.
final class RecordingRouting: MSIXRouting {
    private let state = Mutex<(updates: Int, deliveries: [Int])>((0, []))
    var deliveries: [Int] { state.withLock { $0.deliveries } }
    func update(vector: Int, address: UInt64, data: UInt32, masked: Bool) { state.withLock { $0.updates += 1 } }
    func deliver(vector: Int) { state.withLock { $0.deliveries.append(vector) } }
}

/// Bytes 0, 1, 2, ... wrapping, so tests know exactly what the device wrote.
final class CountingEntropy: EntropySource {
    private let next = Mutex<UInt8>(0)
    func randomBytes(count: Int) throws(VirtioDeviceError) -> [UInt8] {
        next.withLock { next in
            (0..<count).map { _ in
                defer { next &+= 1 }
                return next
            }
        }
    }
}

/// A minimal net-typed device, to check the class code and a multi-queue layout.
final class FakeNet: VirtioDevice {
    var deviceType: VirtioDeviceType { .net }
    var features: UInt64 { 1 << 5 }
    var queueMaxSizes: [UInt16] { [256, 256] }
    func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {}
    func reset() {}
    func processQueue(_ index: Int) throws(VirtioDeviceError) {}
}

/// Guest layout used by the driver helper.
enum Layout {
    static let barAddress: UInt64 = 0xe000_0000
    static let descriptors = GuestAddress(0x1000)
    static let available = GuestAddress(0x2000)
    static let used = GuestAddress(0x3000)
    static let buffers: UInt64 = 0x10000
    static let queueSize: UInt16 = 16
}

/// A test acting as the guest driver of one virtio-pci function.
struct Driver {
    let memory: GuestMemory
    let routing = RecordingRouting()
    let transport: VirtioPCIDevice
    var availableIndex: UInt16 = 0

    init(device: any VirtioDevice = VirtioRng(source: CountingEntropy()), translator: (any AddressTranslator)? = nil) throws {
        memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x10_0000)])
        transport = try VirtioPCIDevice(device: device, memory: memory, msixRouting: routing, barAddress: Layout.barAddress,
                                        translator: translator)
    }

    func read(_ offset: UInt64, size: Int) -> UInt64 { transport.readBAR(index: 0, offset: offset, size: size) }
    func write(_ offset: UInt64, size: Int, _ value: UInt64) { transport.writeBAR(index: 0, offset: offset, size: size, value: value) }
    func setStatus(_ value: UInt8) { write(VirtioCommonConfig.deviceStatus, size: 1, UInt64(value)) }
    var status: UInt8 { UInt8(read(VirtioCommonConfig.deviceStatus, size: 1)) }

    /// Writes `features` through both halves of driver_feature.
    func writeDriverFeatures(_ features: UInt64) {
        for half in 0..<2 {
            write(VirtioCommonConfig.driverFeatureSelect, size: 4, UInt64(half))
            write(VirtioCommonConfig.driverFeature, size: 4, (features >> (32 * UInt64(half))) & 0xffff_ffff)
        }
    }

    /// ACKNOWLEDGE, DRIVER, features, FEATURES_OK.
    func negotiate(_ features: UInt64 = VirtioFeature.version1) {
        setStatus(VirtioStatus.acknowledge)
        setStatus(VirtioStatus.acknowledge | VirtioStatus.driver)
        writeDriverFeatures(features)
        setStatus(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK)
    }

    /// Enables MSI-X and unmasks every vector.
    func enableMSIX() {
        let capability = transport.configuration.msixCapabilityOffset!
        _ = transport.writeConfigRegister(capability / 4, offset: 2, size: 2, value: 0x8000)
        for vector in 0..<transport.msix.vectorCount {
            write(VirtioPCILayout.msixTableOffset + UInt64(vector) * 16 + 12, size: 4, 0)
        }
    }

    /// Programs queue 0 at the test layout with `size` and MSI-X vector 1, and enables it.
    func setUpQueue(size: UInt16 = Layout.queueSize, descriptors: GuestAddress = Layout.descriptors) {
        typealias C = VirtioCommonConfig
        write(C.queueSelect, size: 2, 0)
        write(C.queueSize, size: 2, UInt64(size))
        write(C.queueMSIXVector, size: 2, 1)
        write(C.queueDescriptor, size: 4, descriptors.rawValue & 0xffff_ffff)
        write(C.queueDescriptor + 4, size: 4, descriptors.rawValue >> 32)
        write(C.queueDriver, size: 4, Layout.available.rawValue)
        write(C.queueDriver + 4, size: 4, 0)
        write(C.queueDevice, size: 4, Layout.used.rawValue)
        write(C.queueDevice + 4, size: 4, 0)
        write(C.queueEnable, size: 2, 1)
    }

    /// Everything up to DRIVER_OK, with config vector 0 and queue vector 1.
    func bringUp() {
        enableMSIX()
        negotiate()
        write(VirtioCommonConfig.msixConfig, size: 2, 0)
        setUpQueue()
        setStatus(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK)
    }

    /// Writes descriptor `index`.
    func putDescriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) throws {
        let base = GuestAddress(Layout.descriptors.rawValue + 16 * UInt64(index))
        try memory.write(address, at: base)
        try memory.write(length, at: GuestAddress(base.rawValue + 8))
        try memory.write(flags, at: GuestAddress(base.rawValue + 12))
        try memory.write(next, at: GuestAddress(base.rawValue + 14))
    }

    /// Publishes `head` in the available ring.
    mutating func makeAvailable(_ head: UInt16) throws {
        let slot = GuestAddress(Layout.available.rawValue + 4 + 2 * UInt64(availableIndex % Layout.queueSize))
        try memory.write(head, at: slot)
        availableIndex &+= 1
        try memory.write(availableIndex, at: GuestAddress(Layout.available.rawValue + 2))
    }

    /// Notifies queue `queue` through BAR 0.
    func notify(_ queue: Int = 0) {
        write(VirtioPCILayout.notifyOffset + UInt64(queue) * UInt64(VirtioPCILayout.notifyOffMultiplier), size: 2, UInt64(queue))
    }

    /// The used index and the element at `slot`.
    func usedEntry(_ slot: Int) throws -> (index: UInt16, id: UInt32, length: UInt32) {
        let element = GuestAddress(Layout.used.rawValue + 4 + 8 * UInt64(slot))
        return (try memory.read(UInt16.self, at: GuestAddress(Layout.used.rawValue + 2)),
                try memory.read(UInt32.self, at: element),
                try memory.read(UInt32.self, at: GuestAddress(element.rawValue + 4)))
    }
}

/// Walks the capability list: (offset, id, bytes after id and next).
func capabilities(of transport: VirtioPCIDevice) -> [(offset: Int, id: UInt8, body: [UInt8])] {
    let configuration = transport.configuration
    var result: [(Int, UInt8, [UInt8])] = []
    var pointer = Int(configuration.read(offset: 0x34, size: 1))
    while pointer != 0, result.count < 16 {
        let id = UInt8(configuration.read(offset: pointer, size: 1))
        let next = Int(configuration.read(offset: pointer + 1, size: 1))
        let body = (0..<18).map { UInt8(configuration.read(offset: pointer + 2 + $0, size: 1)) }
        result.append((pointer, id, body))
        pointer = next
    }
    return result
}

/// Little-endian 32-bit value at `offset` in `bytes`.
func le32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
    (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
}
