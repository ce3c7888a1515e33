import GuestMemory
import Synchronization
import VirtioQueue

/// A virtio-iommu device (type 23, virtio 1.x section 5.13) as Cloud Hypervisor v53.0
/// offers it: a request queue and an event queue of 256 entries, the features
/// `VIRTIO_IOMMU_F_MAP_UNMAP`, `_PROBE` and `_BYPASS_CONFIG` (and `_INPUT_RANGE` when the
/// address width is under 64 bits), a 4 KiB and 2 MiB page size mask, and a PROBE answer
/// that reserves the MSI doorbell range. Its requests change an ``IommuMapping``, through
/// which the queues of the devices behind it (``IommuEndpoint``) translate their addresses.
/// The event queue is never used (no fault is reported), as in Cloud Hypervisor.
public final class VirtioIommu: VirtioDevice {
    /// Cloud Hypervisor's queue size for both queues.
    public static let queueSize: UInt16 = 256
    /// `VIRTIO_IOMMU_F_INPUT_RANGE`.
    public static let inputRangeFeature: UInt64 = 1 << 0
    /// `VIRTIO_IOMMU_F_MAP_UNMAP`.
    public static let mapUnmapFeature: UInt64 = 1 << 2
    /// `VIRTIO_IOMMU_F_PROBE`.
    public static let probeFeature: UInt64 = 1 << 4
    /// `VIRTIO_IOMMU_F_BYPASS_CONFIG`.
    public static let bypassConfigFeature: UInt64 = 1 << 6
    /// The page sizes offered: 4 KiB and 2 MiB (Cloud Hypervisor's `VIRTIO_IOMMU_PAGE_SIZE_MASK`).
    public static let pageSizeMask: UInt64 = (2 << 20) | (4 << 10)
    /// Offset of the writable `bypass` byte in the configuration space.
    public static let bypassOffset: UInt64 = 36
    /// Bytes of the configuration space (`struct virtio_iommu_config`).
    public static let configSize = 40
    /// The most readable bytes read from one request (the largest request is 72 bytes).
    static let maxRequestBytes = 128

    /// What the device keeps besides the table: the negotiated features and the
    /// configuration's `bypass` byte.
    public struct State: Codable, Sendable, Equatable {
        /// The features the driver accepted.
        public var acknowledgedFeatures: UInt64 = 0
        /// The configuration's `bypass` byte (0 or 1).
        public var bypass: UInt8 = 0

        /// A state with these fields.
        public init(acknowledgedFeatures: UInt64 = 0, bypass: UInt8 = 0) {
            self.acknowledgedFeatures = acknowledgedFeatures
            self.bypass = bypass
        }
    }

    struct Running {
        var memory: GuestMemory
        var queue: SplitQueue
        var interrupt: any VirtioInterrupt
    }

    /// The table the requests change and the endpoints translate through.
    public let mapping: IommuMapping
    /// The limits requests are checked against (MSI range for PROBE, input range).
    public let limits: IommuRequest.Limits
    /// The features offered.
    public let features: UInt64
    let state = Mutex(State())
    let running = Mutex<Running?>(nil)

    /// Creates the device. `msiRange` is the range PROBE reserves for MSI doorbells
    /// (0xfee00000-0xfeefffff on x86-64); `addressWidthBits` under 64 limits the IOVAs to
    /// `0 ..< 2^bits` and offers `VIRTIO_IOMMU_F_INPUT_RANGE`; `accessPlatform` offers
    /// `VIRTIO_F_ACCESS_PLATFORM` (the device itself behind another translation).
    public init(mapping: IommuMapping = IommuMapping(), msiRange: ClosedRange<UInt64>, addressWidthBits: UInt8 = 64,
                accessPlatform: Bool = false) {
        self.mapping = mapping
        var features = Self.mapUnmapFeature | Self.probeFeature | Self.bypassConfigFeature
        var inputRange: ClosedRange<UInt64>?
        if addressWidthBits < 64 {
            features |= Self.inputRangeFeature
            inputRange = 0...((UInt64(1) << addressWidthBits) &- 1)
        }
        if accessPlatform { features |= VirtioFeature.accessPlatform }
        self.features = features
        self.limits = IommuRequest.Limits(msiRange: msiRange, inputRange: inputRange)
    }

    /// ``VirtioDeviceType/iommu``.
    public var deviceType: VirtioDeviceType { .iommu }
    /// The request queue and the event queue.
    public var queueMaxSizes: [UInt16] { [Self.queueSize, Self.queueSize] }
    /// Whether the device is running.
    public var isActivated: Bool { running.withLock { $0 != nil } }
    /// The device's state (features accepted, `bypass`).
    public var currentState: State { state.withLock { $0 } }

    /// The configuration space: page size mask, input range, domain range (0, 0: the
    /// domain range feature is not offered), probe size, bypass.
    public var configBytes: [UInt8] {
        var bytes = IommuRequest.le(Self.pageSizeMask, 8)
        bytes += IommuRequest.le(limits.inputRange?.lowerBound ?? 0, 8)
        bytes += IommuRequest.le(limits.inputRange?.upperBound ?? 0, 8)
        bytes += IommuRequest.le(0, 8)
        bytes += IommuRequest.le(UInt64(IommuRequest.probeSize), 4)
        bytes += [state.withLock { $0.bypass }, 0, 0, 0]
        return bytes
    }

    /// Reads the configuration space.
    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        VirtioConfigSpace.read(configBytes, offset: offset, size: size)
    }

    /// Only the one-byte `bypass` field is writable (bit 0 kept); it takes effect when the
    /// driver accepted `VIRTIO_IOMMU_F_BYPASS_CONFIG`. Other writes are ignored.
    public func writeConfig(offset: UInt64, size: Int, value: UInt64) {
        guard offset == Self.bypassOffset, size == 1 else { return }
        let acked = state.withLock { state in
            state.bypass = UInt8(value & 1)
            return state.acknowledgedFeatures & Self.bypassConfigFeature != 0
        }
        guard acked else { return }
        mapping.table.withLock { $0.bypass = value & 1 == 1 }
    }

    /// Records the accepted features.
    public func acknowledgeFeatures(_ features: UInt64) {
        state.withLock { $0.acknowledgedFeatures = features }
    }

    /// Keeps the request queue, which the driver must have enabled.
    public func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        guard queues.count == 2 else { throw .queueIndexOutOfRange(index: 1, count: queues.count) }
        guard queues[0].isReady else { throw .queueNotEnabled(index: 0) }
        running.withLock { $0 = Running(memory: memory, queue: queues[0], interrupt: interrupt) }
    }

    /// Forgets the queues; the table stays (as Cloud Hypervisor's).
    public func reset() {
        running.withLock { $0 = nil }
    }

    /// Serves the request queue; a notification of the event queue has nothing to do.
    ///
    /// - Throws: ``VirtioDeviceError`` when the driver broke the virtqueue rules; a request
    ///   that is merely wrong gets an error status and the queue goes on.
    public func processQueue(_ index: Int) throws(VirtioDeviceError) {
        guard index == 0 || index == 1 else { throw .queueIndexOutOfRange(index: index, count: 2) }
        let result: Result<Void, VirtioDeviceError>? = running.withLock { running in
            guard running != nil else { return nil }
            return index == 0 ? serve(&running!) : .success(())
        }
        guard let result else { throw .notActivated }
        if case .failure(let error) = result { throw error }
    }

    /// Answers every available request, then signals the driver when it asked to be.
    private func serve(_ running: inout Running) -> Result<Void, VirtioDeviceError> {
        var failure: VirtioDeviceError?
        var used = false
        do throws(QueueError) {
            while let chain = try running.queue.popDescriptorChain(in: running.memory) {
                let length = try answer(chain, memory: running.memory)
                try running.queue.addUsed(head: chain.head, length: length, in: running.memory)
                used = true
            }
        } catch {
            failure = .queue(index: 0, error)
        }
        if used, (try? running.queue.needsNotification(in: running.memory)) == true {
            running.interrupt.signalQueue(0)
        }
        if let failure { return .failure(failure) }
        return .success(())
    }

    /// Applies one request and writes its answer; returns the bytes written. A chain whose
    /// writable part cannot hold the answer is left unapplied and returned with length 0
    /// (the driver then sees an I/O error, as with Cloud Hypervisor).
    private func answer(_ chain: DescriptorChain, memory: GuestMemory) throws(QueueError) -> UInt32 {
        var reader = ChainReader(chain, memory: memory)
        let request = try reader.readBytes(count: min(reader.remaining, Self.maxRequestBytes))
        var writer = ChainWriter(chain, memory: memory)
        let needed = (request.first == IommuRequest.probe ? IommuRequest.probeSize : 0) + IommuRequest.headSize
        guard writer.remaining >= needed else { return 0 }
        let limits = self.limits
        let answer = mapping.table.withLock { table in IommuRequest.apply(request, to: &table, limits: limits) }
        try writer.write(bytes: answer.bytes)
        return UInt32(writer.bytesWritten)
    }
}
