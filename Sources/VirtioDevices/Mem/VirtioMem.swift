import DeviceModel
import GuestMemory
import Synchronization
import VirtioQueue

/// A virtio-mem device (type 24, virtio 1.2 section 5.15), as Cloud Hypervisor v53.0 has it:
/// one region of guest memory, mapped from boot but outside the guest's memory map, that the
/// driver plugs and unplugs in blocks (2 MiB) on one request queue, up to the size the host
/// requests (``resize(to:)``, announced by a configuration-change interrupt). Unplugged blocks
/// go back to the host (``BalloonMemory/release(_:length:in:)``: punched out of a memory file
/// and dropped with `MADV_DONTNEED`).
///
/// Requests are answered with Cloud Hypervisor's codes: a plug beyond `requested_size` gets
/// NACK; a range that is empty, misaligned, outside the usable region, or whose blocks are not
/// all in the opposite state gets ERROR, as does an unknown request type. A chain too short or
/// with a descriptor of the wrong direction or length is returned unanswered (used length 0).
public final class VirtioMem: VirtioDevice {
    /// The request queue's size.
    public static let queueSize: UInt16 = 128
    /// The region's alignment and size granularity (Linux's memory block, 128 MiB).
    public static let regionAlignment: UInt64 = 128 << 20
    /// Cloud Hypervisor's block size (2 MiB, so that KVM can back blocks with huge pages).
    public static let defaultBlockSize: UInt64 = 2 << 20
    /// `VIRTIO_MEM_F_ACPI_PXM`: `node_id` is meaningful.
    public static let featureACPIPXM: UInt64 = 1 << 0
    /// A request's size (`le16 type`, padding, `le64 addr`, `le16 nb_blocks`, padding).
    public static let requestSize = 24
    /// A response's size (`le16 type`, padding, `le16 state`).
    public static let responseSize = 10

    /// The request types.
    public enum Request: UInt16, Sendable {
        /// `VIRTIO_MEM_REQ_PLUG`.
        case plug = 0
        /// `VIRTIO_MEM_REQ_UNPLUG`.
        case unplug = 1
        /// `VIRTIO_MEM_REQ_UNPLUG_ALL`.
        case unplugAll = 2
        /// `VIRTIO_MEM_REQ_STATE`.
        case state = 3
    }

    /// The response types.
    public enum Response: UInt16, Sendable {
        /// `VIRTIO_MEM_RESP_ACK`: done.
        case ack = 0
        /// `VIRTIO_MEM_RESP_NACK`: refused (plugging beyond the requested size).
        case nack = 1
        /// `VIRTIO_MEM_RESP_BUSY`: try later (Cloud Hypervisor never answers it).
        case busy = 2
        /// `VIRTIO_MEM_RESP_ERROR`: a bad request.
        case error = 3
    }

    /// The block states a STATE request answers.
    public enum BlockState: UInt16, Sendable {
        /// Every block plugged.
        case plugged = 0
        /// Every block unplugged.
        case unplugged = 1
        /// Some of each.
        case mixed = 2
    }

    /// What the device keeps beyond its queue (Cloud Hypervisor's `MemState`).
    public struct State: Codable, Equatable, Sendable {
        /// The features the driver accepted.
        public var features: UInt64
        /// The configuration space.
        public var configuration: VirtioMemConfiguration
        /// One entry per block of the region: plugged or not.
        public var plugged: [Bool]

        /// A state with every field given.
        public init(features: UInt64, configuration: VirtioMemConfiguration, plugged: [Bool]) {
            self.features = features
            self.configuration = configuration
            self.plugged = plugged
        }
    }

    struct Running {
        var memory: GuestMemory
        var queue: SplitQueue
        var interrupt: any VirtioInterrupt
    }

    struct Core {
        var running: Running?
        var negotiated: UInt64 = 0
        var configuration: VirtioMemConfiguration
        var plugged: [Bool]
        /// A restored state whose unplugged blocks still hold the snapshot's bytes, to be
        /// given back to the host once guest memory is at hand (the next activation).
        var releaseUnplugged = false
    }

    private let host: any BalloonMemory
    private let core: Mutex<Core>
    /// `VIRTIO_F_VERSION_1`, and `VIRTIO_MEM_F_ACPI_PXM` with a NUMA node.
    public let features: UInt64
    /// One request queue.
    public let queueMaxSizes: [UInt16] = [queueSize]

    /// A device for the `size` bytes of guest memory at `address`, with `requested` bytes
    /// requested at start (`hotplugged_size`), giving unplugged blocks back to `host`.
    ///
    /// - Throws: ``VirtioMemError`` when the region is not a multiple of 128 MiB, `requested`
    ///   is refused as ``resize(to:)`` would refuse it, or an address or size is not a
    ///   multiple of the block size (Cloud Hypervisor's `Mem::new` checks).
    public init(address: UInt64, size: UInt64, requested: UInt64 = 0, nodeID: UInt16? = nil,
                blockSize: UInt64 = defaultBlockSize, host: any BalloonMemory = HostBalloonMemory()) throws(VirtioMemError) {
        guard size % Self.regionAlignment == 0 else {
            throw VirtioMemError("Virtio-mem size is not aligned with \(Self.regionAlignment): \(size) bytes")
        }
        var configuration = VirtioMemConfiguration(blockSize: blockSize, nodeID: nodeID ?? 0, address: address, regionSize: size)
        try configuration.validate()
        if requested != 0 { try configuration.resize(to: requested) }
        self.host = host
        features = VirtioFeature.version1 | (nodeID == nil ? 0 : Self.featureACPIPXM)
        core = Mutex(Core(configuration: configuration, plugged: Array(repeating: false, count: Int(size / blockSize))))
    }

    /// ``VirtioDeviceType/mem``.
    public var deviceType: VirtioDeviceType { .mem }
    /// Whether the device is running.
    public var isActivated: Bool { core.withLock { $0.running != nil } }
    /// The configuration space as it is now.
    public var configuration: VirtioMemConfiguration { core.withLock { $0.configuration } }
    /// What the driver has plugged, in bytes.
    public var pluggedSize: UInt64 { core.withLock { $0.configuration.pluggedSize } }
    /// The plugged state of every block.
    public var pluggedBlocks: [Bool] { core.withLock { $0.plugged } }

    /// Asks the driver for `size` plugged bytes: sets `requested_size` and raises a
    /// configuration-change interrupt when the driver runs (Cloud Hypervisor's `Mem::resize`).
    ///
    /// - Throws: ``VirtioMemError`` (nothing changed) as ``VirtioMemConfiguration/resize(to:)``.
    public func resize(to size: UInt64) throws(VirtioMemError) {
        let interrupt = try core.withLock { (core: inout Core) throws(VirtioMemError) -> (any VirtioInterrupt)? in
            try core.configuration.resize(to: size)
            return core.running?.interrupt
        }
        interrupt?.signalConfig()
    }

    /// Reads the 56-byte configuration space; bytes beyond it read as 0.
    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        VirtioConfigSpace.read(core.withLock { $0.configuration.bytes }, offset: offset, size: size)
    }

    /// Remembers the accepted features.
    public func acknowledgeFeatures(_ features: UInt64) {
        core.withLock { $0.negotiated = features }
    }

    /// Keeps the request queue, which the driver must have enabled; after a restore of a
    /// device that was not running, gives every unplugged block back to the host.
    public func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        guard let queue = queues.first else { throw .queueIndexOutOfRange(index: 0, count: 0) }
        guard queue.isReady else { throw .queueNotEnabled(index: 0) }
        let host = self.host
        try core.withLock { (core: inout Core) throws(VirtioDeviceError) in
            if core.releaseUnplugged {
                if let error = Self.releaseUnplugged(core, host: host, memory: memory) { throw .backend(error) }
                core.releaseUnplugged = false
            }
            core.running = Running(memory: memory, queue: queue, interrupt: interrupt)
        }
    }

    /// Gives every run of unplugged blocks back to the host; returns the reason it could not.
    private static func releaseUnplugged(_ core: Core, host: any BalloonMemory, memory: GuestMemory) -> String? {
        let block = core.configuration.blockSize
        var index = 0
        while index < core.plugged.count {
            guard !core.plugged[index] else { index += 1; continue }
            let first = index
            while index < core.plugged.count, !core.plugged[index] { index += 1 }
            let start = GuestAddress(core.configuration.address + UInt64(first) * block)
            do { try host.release(start, length: UInt64(index - first) * block, in: memory) } catch {
                return "virtio-mem: cannot give unplugged memory at \(start) back to the host: \(error)"
            }
        }
        return nil
    }

    /// Forgets the queue; the configuration and the plugged blocks stay (as Cloud Hypervisor's).
    public func reset() {
        core.withLock { $0.running = nil }
    }

    /// The features, the configuration space, the plugged blocks, and the queue while it runs.
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        core.withLock { core in
            VirtioDeviceSnapshot(state: .mem(State(features: core.negotiated, configuration: core.configuration, plugged: core.plugged)),
                                 queues: core.running.map { [0: $0.queue.state] } ?? [:])
        }
    }

    /// Takes a saved ``VirtioDeviceState/mem(_:)``.
    ///
    /// - Throws: `DeviceStateError` for another device type, features not offered, or a saved
    ///   region other than this device's (another address or `hotplug_size`).
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .mem(let saved) = state else { throw wrongKind(state) }
        let extra = saved.features & ~(features | VirtioFeature.transportOffered)
        guard extra == 0 else {
            throw DeviceStateError(device: "virtio-mem", reason: "features: bits 0x\(String(extra, radix: 16)) were not offered by this device")
        }
        try core.withLock { (core: inout Core) throws(DeviceStateError) in
            let mine = core.configuration
            let theirs = saved.configuration
            guard theirs.address == mine.address, theirs.regionSize == mine.regionSize, theirs.blockSize == mine.blockSize,
                  saved.plugged.count == core.plugged.count, theirs.usableRegionSize <= theirs.regionSize,
                  theirs.pluggedSize == UInt64(saved.plugged.filter { $0 }.count) * theirs.blockSize else {
                throw DeviceStateError(device: "virtio-mem", reason: "the saved region (0x\(String(theirs.address, radix: 16)), "
                    + "\(theirs.regionSize) bytes, \(saved.plugged.count) blocks, \(theirs.pluggedSize) plugged) does not match this VM's "
                    + "(0x\(String(mine.address, radix: 16)), \(mine.regionSize) bytes): check --memory hotplug_size")
            }
            do throws(VirtioMemError) { try theirs.validate() } catch {
                throw DeviceStateError(device: "virtio-mem", reason: "the saved configuration: \(error)")
            }
            core.negotiated = saved.features
            core.configuration = theirs
            core.plugged = saved.plugged
            // The transport activates a running device before handing it its state: the
            // unplugged blocks are given back now, the plugged ones keep the snapshot's bytes.
            if let memory = core.running?.memory {
                if let error = Self.releaseUnplugged(core, host: host, memory: memory) {
                    throw DeviceStateError(device: "virtio-mem", reason: error)
                }
            } else {
                core.releaseUnplugged = true
            }
        }
    }

    /// Serves the request queue: every chain is answered (or returned unanswered when
    /// malformed) and the driver signalled when it asked to be.
    ///
    /// - Throws: ``VirtioDeviceError/queue(index:_:)`` when the driver broke the virtqueue rules.
    public func processQueue(_ index: Int) throws(VirtioDeviceError) {
        guard index == 0 else { throw .queueIndexOutOfRange(index: index, count: 1) }
        let host = self.host
        let result: Result<Void, VirtioDeviceError>? = core.withLock { core in
            guard core.running != nil else { return nil }
            return Self.serve(&core, host: host)
        }
        guard let result else { throw .notActivated }
        if case .failure(let error) = result { throw error }
    }
}
