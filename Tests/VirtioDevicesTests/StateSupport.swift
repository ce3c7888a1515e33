import Foundation
import GuestMemory
import PCI
import VirtioDevices
import VirtioQueue

/// A guest driver of one virtio-pci function with several queues (queue `q` at
/// `0x1000 + q * 0x4000`), for the snapshot tests: it can build a second transport over
/// the same guest memory and restore into it.
final class StateDriver {
    let memory: GuestMemory
    let routing = RecordingRouting()
    let transport: VirtioPCIDevice
    let queueSize: UInt16 = 16
    private var nextDescriptor: [Int: UInt16] = [:]
    private var availableIndex: [Int: UInt16] = [:]
    private var nextBuffer: UInt64 = 0x40000

    init(device: any VirtioDevice, memory: GuestMemory? = nil) throws {
        self.memory = try memory ?? GuestMemory.anonymous([(start: GuestAddress(0), size: 0x10_0000)])
        transport = try VirtioPCIDevice(device: device, memory: self.memory, msixRouting: routing, barAddress: 0xe000_0000)
    }

    static func descriptors(_ queue: Int) -> UInt64 { 0x1000 + UInt64(queue) * 0x4000 }
    static func available(_ queue: Int) -> UInt64 { descriptors(queue) + 0x1000 }
    static func used(_ queue: Int) -> UInt64 { descriptors(queue) + 0x2000 }

    func write(_ offset: UInt64, size: Int, _ value: UInt64) { transport.writeBAR(index: 0, offset: offset, size: size, value: value) }
    func setStatus(_ value: UInt8) { write(VirtioCommonConfig.deviceStatus, size: 1, UInt64(value)) }

    /// MSI-X on and unmasked, features, config vector 0, queue `q` (of `queues`) on vector `q + 1`, DRIVER_OK.
    func bringUp(features: UInt64, queues: [Int]) {
        let capability = transport.configuration.msixCapabilityOffset!
        _ = transport.writeConfigRegister(capability / 4, offset: 2, size: 2, value: 0x8000)
        for vector in 0..<transport.msix.vectorCount {
            write(VirtioPCILayout.msixTableOffset + UInt64(vector) * 16 + 12, size: 4, 0)
        }
        typealias C = VirtioCommonConfig
        setStatus(VirtioStatus.acknowledge | VirtioStatus.driver)
        for half in 0..<2 {
            write(C.driverFeatureSelect, size: 4, UInt64(half))
            write(C.driverFeature, size: 4, (features >> (32 * UInt64(half))) & 0xffff_ffff)
        }
        setStatus(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK)
        write(C.msixConfig, size: 2, 0)
        for queue in queues {
            write(C.queueSelect, size: 2, UInt64(queue))
            write(C.queueSize, size: 2, UInt64(queueSize))
            write(C.queueMSIXVector, size: 2, UInt64(queue + 1))
            write(C.queueDescriptor, size: 8, Self.descriptors(queue))
            write(C.queueDriver, size: 8, Self.available(queue))
            write(C.queueDevice, size: 8, Self.used(queue))
            write(C.queueEnable, size: 2, 1)
        }
        setStatus(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK)
    }

    /// Guest memory for `bytes` (or `length` zero bytes); returns its address.
    func buffer(_ bytes: [UInt8]) throws -> UInt64 {
        let address = nextBuffer
        nextBuffer += (UInt64(bytes.count) + 0xfff) & ~0xfff
        try memory.write(bytes: bytes[...], at: GuestAddress(address))
        return address
    }

    /// Writes a chain of (address, length, writable) buffers into queue `queue`; returns its head.
    @discardableResult
    func post(_ queue: Int, _ buffers: [(UInt64, Int, Bool)]) throws -> UInt16 {
        let head = nextDescriptor[queue, default: 0]
        for (offset, (address, length, writable)) in buffers.enumerated() {
            let index = head + UInt16(offset)
            let base = GuestAddress(Self.descriptors(queue) + 16 * UInt64(index))
            let last = offset == buffers.count - 1
            try memory.write(address, at: base)
            try memory.write(UInt32(length), at: GuestAddress(base.rawValue + 8))
            try memory.write(UInt16((last ? 0 : 1) | (writable ? 2 : 0)), at: GuestAddress(base.rawValue + 12))
            try memory.write(last ? 0 : index + 1, at: GuestAddress(base.rawValue + 14))
        }
        nextDescriptor[queue] = head + UInt16(buffers.count)
        let slot = availableIndex[queue, default: 0]
        try memory.write(head, at: GuestAddress(Self.available(queue) + 4 + 2 * UInt64(slot % queueSize)))
        availableIndex[queue] = slot &+ 1
        try memory.write(slot &+ 1, at: GuestAddress(Self.available(queue) + 2))
        return head
    }

    /// Notifies queue `queue` through BAR 0.
    func notify(_ queue: Int) {
        write(VirtioPCILayout.notifyOffset + UInt64(queue) * UInt64(VirtioPCILayout.notifyOffMultiplier), size: 2, UInt64(queue))
    }

    /// The used index and the (head, length) entries of queue `queue`.
    func used(_ queue: Int) throws -> (index: UInt16, entries: [(UInt32, UInt32)]) {
        let index = try memory.read(UInt16.self, at: GuestAddress(Self.used(queue) + 2))
        let entries = try (0..<Int(index)).map { slot in
            let element = GuestAddress(Self.used(queue) + 4 + 8 * UInt64(slot))
            return (try memory.read(UInt32.self, at: element), try memory.read(UInt32.self, at: GuestAddress(element.rawValue + 4)))
        }
        return (index, entries)
    }
}

/// The state through JSON, as a snapshot file carries it.
func throughJSON(_ state: VirtioPCIDevice.State) throws -> VirtioPCIDevice.State {
    try JSONDecoder().decode(VirtioPCIDevice.State.self, from: JSONEncoder().encode(state))
}
