import DeviceModel
import GuestMemory
import Synchronization
import VirtioQueue

/// A virtio persistent-memory device (type 27, virtio 1.2 section 5.19): it tells the guest
/// where its persistent memory lies (`start`, `size` in the configuration space) and flushes
/// the backing file when the guest asks, on its one request queue.
///
/// The memory itself is not the device's business: the VMM maps the backing file into the
/// guest-physical range `[start, start + size)` as a memory slot of its own. A request is a
/// device-readable `le32 type` (0: flush) followed by a device-writable `le32 ret` (0: done,
/// 1: failed, including an unknown type). As Cloud Hypervisor does, a chain without both
/// parts is returned used with length 0 and nothing written; only a chain that breaks the
/// virtqueue rules stops the device (the transport then sets `DEVICE_NEEDS_RESET`).
public final class VirtioPmem: VirtioDevice {
    /// Cloud Hypervisor's queue size.
    public static let defaultQueueSize: UInt16 = 256
    /// `VIRTIO_PMEM_REQ_TYPE_FLUSH`.
    public static let requestFlush: UInt32 = 0
    /// `VIRTIO_PMEM_RESP_TYPE_OK`.
    public static let responseOK: UInt32 = 0
    /// `VIRTIO_PMEM_RESP_TYPE_EIO`.
    public static let responseError: UInt32 = 1
    /// The configuration space's size: `le64 start`, `le64 size`.
    public static let configSize = 16

    /// What the device keeps beyond its queue.
    public struct State: Codable, Equatable, Sendable {
        /// The features the driver accepted.
        public var features: UInt64
        /// The guest-physical address of the persistent memory.
        public var start: UInt64
        /// Its size in bytes.
        public var size: UInt64

        /// A state with every field given.
        public init(features: UInt64, start: UInt64, size: UInt64) {
            self.features = features
            self.start = start
            self.size = size
        }
    }

    /// Requests served since the device was made (not part of the guest-visible state).
    public struct Counters: Equatable, Sendable {
        /// Flushes answered OK.
        public var flushes: UInt64 = 0
        /// Requests answered with an error (a failed flush or an unknown type).
        public var errors: UInt64 = 0
        /// Chains returned without an answer because they lacked the request or the status.
        public var malformed: UInt64 = 0
    }

    struct Running {
        var memory: GuestMemory
        var queue: SplitQueue
        var interrupt: any VirtioInterrupt
    }

    struct Core {
        var running: Running?
        var negotiated: UInt64 = 0
        var counters = Counters()
    }

    private let backend: any PmemBackend
    private let core = Mutex(Core())
    private let maxQueueSize: UInt16
    /// The guest-physical address of the persistent memory.
    public let start: UInt64
    /// Its size in bytes.
    public let size: UInt64

    /// Creates the device for persistent memory at guest-physical `start`, `size` bytes long,
    /// flushed through `backend`.
    public init(start: UInt64, size: UInt64, backend: any PmemBackend, queueSize: UInt16 = VirtioPmem.defaultQueueSize) {
        self.start = start
        self.size = size
        self.backend = backend
        self.maxQueueSize = queueSize
    }

    /// ``VirtioDeviceType/pmem``.
    public var deviceType: VirtioDeviceType { .pmem }
    /// No device-specific features (the transport offers `VIRTIO_F_VERSION_1`).
    public var features: UInt64 { 0 }
    /// One request queue.
    public var queueMaxSizes: [UInt16] { [maxQueueSize] }
    /// Whether the device is running.
    public var isActivated: Bool { core.withLock { $0.running != nil } }
    /// The requests served so far.
    public var counters: Counters { core.withLock { $0.counters } }

    /// The configuration space: `start` then `size`, little-endian.
    var configSpace: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: start >> ($0 * 8)) } + (0..<8).map { UInt8(truncatingIfNeeded: size >> ($0 * 8)) }
    }

    /// Reads the configuration space; bytes beyond it read as 0.
    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        VirtioConfigSpace.read(configSpace, offset: offset, size: size)
    }

    /// Remembers the accepted features (for the saved state).
    public func acknowledgeFeatures(_ features: UInt64) {
        core.withLock { $0.negotiated = features }
    }

    /// Keeps the request queue, which the driver must have enabled.
    public func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        guard let queue = queues.first else { throw .queueIndexOutOfRange(index: 0, count: 0) }
        guard queue.isReady else { throw .queueNotEnabled(index: 0) }
        core.withLock { $0.running = Running(memory: memory, queue: queue, interrupt: interrupt) }
    }

    /// Forgets the queue.
    public func reset() {
        core.withLock { $0.running = nil }
    }

    /// The features, the range, and the request queue's position while it runs.
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        core.withLock { core in
            VirtioDeviceSnapshot(state: .pmem(State(features: core.negotiated, start: start, size: size)),
                                 queues: core.running.map { [0: $0.queue.state] } ?? [:])
        }
    }

    /// Takes a saved ``VirtioDeviceState/pmem(_:)``: its range must be this device's (the
    /// guest kernel has the saved range mapped; the VMM maps the file there again).
    ///
    /// - Throws: `DeviceStateError` for another device type, features this device does not
    ///   offer, or another range.
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .pmem(let saved) = state else { throw wrongKind(state) }
        func refuse(_ reason: String) -> DeviceStateError { DeviceStateError(device: "virtio-pmem", reason: reason) }
        guard saved.start == start, saved.size == size else {
            throw refuse("start, size: saved at 0x\(String(saved.start, radix: 16)) (\(saved.size) bytes) but this device maps 0x\(String(start, radix: 16)) (\(size) bytes); the guest would lose its persistent memory")
        }
        let extra = saved.features & ~(features | VirtioFeature.transportOffered)
        guard extra == 0 else { throw refuse("features: bits 0x\(String(extra, radix: 16)) were not offered by this device") }
        core.withLock { $0.negotiated = saved.features }
    }

    /// Answers every available request, returns it in the used ring and signals the driver
    /// when it asked to be.
    ///
    /// - Throws: ``VirtioDeviceError/queue(index:_:)`` when the driver broke the virtqueue
    ///   rules; chains finished before it are still signalled.
    public func processQueue(_ index: Int) throws(VirtioDeviceError) {
        guard index == 0 else { throw .queueIndexOutOfRange(index: index, count: 1) }
        let result: Result<Void, VirtioDeviceError>? = core.withLock { core in
            guard core.running != nil else { return nil }
            return Self.serve(&core, backend: backend)
        }
        guard let result else { throw .notActivated }
        if case .failure(let error) = result { throw error }
    }

    private static func serve(_ core: inout Core, backend: any PmemBackend) -> Result<Void, VirtioDeviceError> {
        let memory = core.running!.memory
        var failure: VirtioDeviceError?
        var used = false
        do throws(VirtioDeviceError) {
            repeat {
                while let chain = try queueStep({ () throws(QueueError) in try core.running!.queue.popDescriptorChain(in: memory) }) {
                    let length = answer(chain, memory: memory, backend: backend, counters: &core.counters)
                    try queueStep { () throws(QueueError) in try core.running!.queue.addUsed(head: chain.head, length: length, in: memory) }
                    used = true
                }
            } while try queueStep({ () throws(QueueError) in try core.running!.queue.enableNotification(in: memory) })
        } catch {
            failure = error
        }
        if used, (try? core.running!.queue.needsNotification(in: memory)) == true {
            core.running!.interrupt.signalQueue(0)
        }
        if let failure { return .failure(failure) }
        return .success(())
    }

    /// Reads the request, runs it and writes the answer; returns the used length (4, or 0 for
    /// a chain without a 4-byte request or a 4-byte status).
    private static func answer(_ chain: DescriptorChain, memory: GuestMemory, backend: any PmemBackend,
                               counters: inout Counters) -> UInt32 {
        guard chain.readableLength >= 4, chain.writableLength >= 4 else {
            counters.malformed += 1
            return 0
        }
        var reader = ChainReader(chain, memory: memory)
        guard let type = try? reader.read(UInt32.self) else {
            counters.malformed += 1
            return 0
        }
        var status = responseError
        if type == requestFlush {
            do {
                try backend.flush()
                status = responseOK
            } catch {
                status = responseError
            }
        }
        if status == responseOK { counters.flushes += 1 } else { counters.errors += 1 }
        var writer = ChainWriter(chain, memory: memory)
        guard (try? writer.write(status)) != nil else {
            counters.malformed += 1
            return 0
        }
        return 4
    }

    private static func queueStep<T>(_ body: () throws(QueueError) -> T) throws(VirtioDeviceError) -> T {
        do { return try body() } catch { throw .queue(index: 0, error) }
    }
}
