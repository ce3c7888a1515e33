import DeviceModel
import GuestMemory
import Synchronization
import VirtioQueue

/// A traditional virtio memory balloon (type 5, virtio 1.2 section 5.5), as Cloud Hypervisor
/// v53.0 has it: the host sets how many 4 KiB pages it wants (`num_pages`), the guest driver
/// hands pages over on the inflate queue and takes them back on the deflate queue, and writes
/// how many it holds (`actual`). Pages handed over go back to the host (``BalloonMemory``).
///
/// Queues: inflate (0) and deflate (1) of 128 entries, and with free page reporting a third of
/// 32 on which the guest reports free ranges, which go back to the host the same way. There is
/// no statistics queue (Cloud Hypervisor has none). A hostile guest gets no further than its
/// own device: a page number outside guest RAM, a descriptor of a wrong direction or length is
/// skipped and counted; only a chain that breaks the virtqueue rules stops the device (the
/// transport then sets `DEVICE_NEEDS_RESET`).
public final class VirtioBalloon: VirtioDevice {
    /// The inflate and deflate queues' size.
    public static let queueSize: UInt16 = 128
    /// The free page reporting queue's size.
    public static let reportingQueueSize: UInt16 = 32
    /// The balloon's page: page numbers on the queues count 4 KiB pages (`VIRTIO_BALLOON_PFN_SHIFT`).
    public static let pfnSize: UInt64 = 4096
    /// `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: the guest may deflate when it runs out of memory.
    public static let featureDeflateOnOOM: UInt64 = 1 << 2
    /// `VIRTIO_BALLOON_F_REPORTING`: the guest reports free pages on a third queue.
    public static let featureReporting: UInt64 = 1 << 5
    /// The longest inflate or deflate descriptor served (Linux sends at most 256 page numbers).
    public static let maxPFNBytes: UInt32 = 256 * 4
    /// The configuration space's size: `le32 num_pages`, `le32 actual`.
    public static let configSize = 8

    /// What the device keeps beyond its queues.
    public struct State: Codable, Equatable, Sendable {
        /// The features the driver accepted.
        public var features: UInt64
        /// `num_pages`: 4 KiB pages the host wants the guest to give up.
        public var numPages: UInt32
        /// `actual`: 4 KiB pages the guest says the balloon holds.
        public var actual: UInt32

        /// A state with every field given.
        public init(features: UInt64, numPages: UInt32, actual: UInt32) {
            self.features = features
            self.numPages = numPages
            self.actual = actual
        }
    }

    /// What the device has done since it was made (not part of the guest-visible state).
    public struct Counters: Equatable, Sendable {
        /// 4 KiB pages received on the inflate queue and handed to the host.
        public var inflatedPages: UInt64 = 0
        /// 4 KiB pages received on the deflate queue.
        public var deflatedPages: UInt64 = 0
        /// Bytes of free ranges the guest reported and the host took back.
        public var reportedBytes: UInt64 = 0
        /// Page numbers or reported ranges the host could not take (outside guest RAM, refused).
        public var refused: UInt64 = 0
        /// Descriptors skipped: device-writable, a length not a multiple of 4 or above 1 KiB.
        public var skippedDescriptors: UInt64 = 0
    }

    /// How the device is made: the balloon's size and features (`--balloon`).
    public struct Options: Sendable {
        /// The size wanted at boot, in bytes (rounded down to 4 KiB pages).
        public var size: UInt64
        /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
        public var deflateOnOOM: Bool
        /// Offer `VIRTIO_BALLOON_F_REPORTING` and its queue.
        public var freePageReporting: Bool

        /// Options with every field given.
        public init(size: UInt64, deflateOnOOM: Bool = false, freePageReporting: Bool = false) {
            self.size = size
            self.deflateOnOOM = deflateOnOOM
            self.freePageReporting = freePageReporting
        }
    }

    struct Running {
        var memory: GuestMemory
        /// The queues served, by index (the reporting queue only when negotiated and enabled).
        var queues: [Int: SplitQueue]
        var interrupt: any VirtioInterrupt
        var partial: PartialHostPage?
    }

    struct Core {
        var running: Running?
        var negotiated: UInt64 = 0
        var numPages: UInt32
        var actual: UInt32 = 0
        var counters = Counters()
    }

    private let host: any BalloonMemory
    private let core: Mutex<Core>
    /// The feature bits offered.
    public let features: UInt64
    /// Two queues, or three with free page reporting.
    public let queueMaxSizes: [UInt16]

    /// Creates the balloon with `options`, returning pages to `host`.
    public init(options: Options, host: any BalloonMemory = HostBalloonMemory()) {
        self.host = host
        var features: UInt64 = 0
        if options.deflateOnOOM { features |= Self.featureDeflateOnOOM }
        if options.freePageReporting { features |= Self.featureReporting }
        self.features = features
        queueMaxSizes = [Self.queueSize, Self.queueSize] + (options.freePageReporting ? [Self.reportingQueueSize] : [])
        core = Mutex(Core(numPages: Self.pages(options.size)))
    }

    /// ``VirtioDeviceType/balloon``.
    public var deviceType: VirtioDeviceType { .balloon }
    /// Whether the device is running.
    public var isActivated: Bool { core.withLock { $0.running != nil } }
    /// What the device has done so far.
    public var counters: Counters { core.withLock { $0.counters } }
    /// The balloon's size as the guest reports it (`actual`), in bytes.
    public var actualSize: UInt64 { UInt64(core.withLock { $0.actual }) * Self.pfnSize }
    /// The size the host asks for (`num_pages`), in bytes.
    public var targetSize: UInt64 { UInt64(core.withLock { $0.numPages }) * Self.pfnSize }

    /// `size` in 4 KiB pages, truncated to 32 bits as Cloud Hypervisor's `num_pages` is.
    static func pages(_ size: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: size / pfnSize) }

    /// Asks the guest for a balloon of `size` bytes: sets `num_pages` and raises a
    /// configuration-change interrupt when the driver runs (Cloud Hypervisor's `Balloon::resize`).
    public func resize(to size: UInt64) {
        let interrupt = core.withLock { core -> (any VirtioInterrupt)? in
            core.numPages = Self.pages(size)
            return core.running?.interrupt
        }
        interrupt?.signalConfig()
    }

    /// Reads the configuration space (`num_pages`, `actual`, little-endian); bytes beyond it read as 0.
    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        let (numPages, actual) = core.withLock { ($0.numPages, $0.actual) }
        let word = UInt64(numPages) | UInt64(actual) << 32
        var value: UInt64 = 0
        for index in 0..<size where offset + UInt64(index) < UInt64(Self.configSize) {
            value |= ((word >> ((offset + UInt64(index)) * 8)) & 0xFF) << (UInt64(index) * 8)
        }
        return value
    }

    /// Takes a 4-byte write of `actual` (offset 4), the only field the driver may write; other
    /// writes are ignored, as Cloud Hypervisor does.
    public func writeConfig(offset: UInt64, size: Int, value: UInt64) {
        guard offset == 4, size == 4 else { return }
        core.withLock { $0.actual = UInt32(truncatingIfNeeded: value) }
    }

    /// Remembers the accepted features (the reporting queue runs only when they include it).
    public func acknowledgeFeatures(_ features: UInt64) {
        core.withLock { $0.negotiated = features }
    }

    /// Keeps the inflate and deflate queues, which the driver must have enabled, and the
    /// reporting queue when the driver accepted free page reporting and enabled it.
    public func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        guard queues.count >= 2 else { throw .queueIndexOutOfRange(index: queues.count, count: queues.count) }
        for index in 0..<2 where !queues[index].isReady { throw .queueNotEnabled(index: index) }
        core.withLock { core in
            var served = [0: queues[0], 1: queues[1]]
            if core.negotiated & Self.featureReporting != 0, queues.count > 2, queues[2].isReady { served[2] = queues[2] }
            core.running = Running(memory: memory, queues: served, interrupt: interrupt)
        }
    }

    /// Forgets the queues; `num_pages` and `actual` stay (Cloud Hypervisor keeps its config).
    public func reset() {
        core.withLock { $0.running = nil }
    }

    /// The features, `num_pages`, `actual`, and the queues' positions while it runs.
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        core.withLock { core in
            VirtioDeviceSnapshot(state: .balloon(State(features: core.negotiated, numPages: core.numPages, actual: core.actual)),
                                 queues: core.running.map { $0.queues.mapValues(\.state) } ?? [:])
        }
    }

    /// Takes a saved ``VirtioDeviceState/balloon(_:)``.
    ///
    /// - Throws: `DeviceStateError` for another device type or features this device does not offer.
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .balloon(let saved) = state else { throw wrongKind(state) }
        let extra = saved.features & ~(features | VirtioFeature.transportOffered)
        guard extra == 0 else {
            throw DeviceStateError(device: "virtio-balloon", reason: "features: bits 0x\(String(extra, radix: 16)) were not offered by this device (check deflate_on_oom and free_page_reporting)")
        }
        core.withLock { core in
            core.negotiated = saved.features
            core.numPages = saved.numPages
            core.actual = saved.actual
        }
    }

    /// Serves queue `index`: pages handed over (0) or taken back (1), free ranges reported (2);
    /// every chain is returned used and the driver signalled when it asked to be.
    ///
    /// - Throws: ``VirtioDeviceError/queue(index:_:)`` when the driver broke the virtqueue
    ///   rules; chains finished before it are still signalled.
    public func processQueue(_ index: Int) throws(VirtioDeviceError) {
        guard queueMaxSizes.indices.contains(index) else { throw .queueIndexOutOfRange(index: index, count: queueMaxSizes.count) }
        let host = self.host
        let result: Result<Void, VirtioDeviceError>? = core.withLock { core in
            guard core.running != nil else { return nil }
            guard core.running!.queues[index] != nil else { return .failure(.queueNotEnabled(index: index)) }
            return Self.serve(&core, index: index, host: host)
        }
        guard let result else { throw .notActivated }
        if case .failure(let error) = result { throw error }
    }
}

extension VirtioBalloon {
    private static func serve(_ core: inout Core, index: Int, host: any BalloonMemory) -> Result<Void, VirtioDeviceError> {
        let memory = core.running!.memory
        var failure: VirtioDeviceError?
        var used = false
        func step<T>(_ body: () throws(QueueError) -> T) throws(VirtioDeviceError) -> T {
            do { return try body() } catch { throw .queue(index: index, error) }
        }
        do throws(VirtioDeviceError) {
            repeat {
                while let chain = try step({ () throws(QueueError) in try core.running!.queues[index]!.popDescriptorChain(in: memory) }) {
                    var length: UInt32 = 0
                    switch index {
                    case 0: inflate(chain, memory: memory, host: host, core: &core)
                    case 1: deflate(chain, memory: memory, host: host, counters: &core.counters)
                    default: length = report(chain, memory: memory, host: host, counters: &core.counters)
                    }
                    try step { () throws(QueueError) in try core.running!.queues[index]!.addUsed(head: chain.head, length: length, in: memory) }
                    used = true
                }
            } while try step({ () throws(QueueError) in try core.running!.queues[index]!.enableNotification(in: memory) })
        } catch {
            failure = error
        }
        if used, (try? core.running!.queues[index]!.needsNotification(in: memory)) == true {
            core.running!.interrupt.signalQueue(index)
        }
        if let failure { return .failure(failure) }
        return .success(())
    }

    /// The page numbers in the chain's device-readable descriptors; a descriptor that is
    /// device-writable, not a whole number of 4-byte entries or longer than 1 KiB is skipped,
    /// and one whose entries cannot be read stops at the first unreadable entry.
    private static func pageNumbers(_ chain: DescriptorChain, memory: GuestMemory, counters: inout Counters) -> [UInt32] {
        var numbers: [UInt32] = []
        for descriptor in chain.descriptors {
            guard !descriptor.isWritable, descriptor.length % 4 == 0, descriptor.length <= maxPFNBytes else {
                counters.skippedDescriptors += 1
                continue
            }
            var offset: UInt64 = 0
            while offset < UInt64(descriptor.length) {
                guard let address = descriptor.address.checkedAdd(offset),
                      let number = try? memory.read(UInt32.self, at: address) else { break }
                numbers.append(number)
                offset += 4
            }
        }
        return numbers
    }

    /// Hands each page to the host, whole host pages at a time when they are larger than 4 KiB.
    private static func inflate(_ chain: DescriptorChain, memory: GuestMemory, host: any BalloonMemory, core: inout Core) {
        let pageSize = host.pageSize
        for number in pageNumbers(chain, memory: memory, counters: &core.counters) {
            let address = UInt64(number) * pfnSize
            var release: (address: UInt64, length: UInt64)? = (address, pfnSize)
            if pageSize > pfnSize {
                var partial = core.running!.partial ?? PartialHostPage(pageSize: pageSize)
                release = partial.add(address, pageSize: pageSize).map { ($0, pageSize) }
                core.running!.partial = partial
            }
            core.counters.inflatedPages += 1
            guard let release else { continue }
            do { try host.release(GuestAddress(release.address), length: release.length, in: memory) } catch { core.counters.refused += 1 }
        }
    }

    /// Tells the host each page taken back will be used again (its host page, `MADV_WILLNEED`).
    private static func deflate(_ chain: DescriptorChain, memory: GuestMemory, host: any BalloonMemory, counters: inout Counters) {
        let pageSize = host.pageSize
        for number in pageNumbers(chain, memory: memory, counters: &counters) {
            let base = (UInt64(number) * pfnSize) & ~(pageSize - 1)
            counters.deflatedPages += 1
            do { try host.willNeed(GuestAddress(base), length: pageSize, in: memory) } catch { counters.refused += 1 }
        }
    }

    /// Hands each reported free range to the host (clamped to its memory region); the used
    /// length is the chain's total length, as Cloud Hypervisor returns it.
    private static func report(_ chain: DescriptorChain, memory: GuestMemory, host: any BalloonMemory, counters: inout Counters) -> UInt32 {
        var total: UInt32 = 0
        for descriptor in chain.descriptors {
            total &+= descriptor.length
            do {
                try host.release(descriptor.address, length: UInt64(descriptor.length), in: memory)
                counters.reportedBytes += UInt64(descriptor.length)
            } catch {
                counters.refused += 1
            }
        }
        return total
    }
}
