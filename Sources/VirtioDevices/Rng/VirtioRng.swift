import DeviceModel
import GuestMemory
import Synchronization
import VirtioQueue

/// A virtio entropy device (type 4, virtio 1.x section 5.4): one request queue whose
/// device-writable buffers it fills with bytes from an ``EntropySource``.
public final class VirtioRng: VirtioDevice {
    /// The default (and Cloud Hypervisor's) maximum queue size.
    public static let defaultQueueSize: UInt16 = 256
    /// The most bytes written into one chain; a larger buffer gets a partial fill,
    /// which the used length reports (the driver asks again).
    public static let maxBytesPerChain = 64 * 1024

    struct Running {
        var memory: GuestMemory
        var queue: SplitQueue
        var interrupt: any VirtioInterrupt
    }

    private let source: any EntropySource
    private let running = Mutex<Running?>(nil)
    private let maxQueueSize: UInt16

    /// Creates the device over `source` with a request queue of at most `queueSize` entries.
    public init(source: any EntropySource, queueSize: UInt16 = VirtioRng.defaultQueueSize) {
        self.source = source
        self.maxQueueSize = queueSize
    }

    /// ``VirtioDeviceType/rng``.
    public var deviceType: VirtioDeviceType { .rng }
    /// No device-specific features.
    public var features: UInt64 { 0 }
    /// One request queue.
    public var queueMaxSizes: [UInt16] { [maxQueueSize] }
    /// Whether the device is running.
    public var isActivated: Bool { running.withLock { $0 != nil } }

    /// Keeps the request queue, which the driver must have enabled.
    public func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        guard let queue = queues.first else { throw .queueIndexOutOfRange(index: 0, count: 0) }
        guard queue.isReady else { throw .queueNotEnabled(index: 0) }
        running.withLock { $0 = Running(memory: memory, queue: queue, interrupt: interrupt) }
    }

    /// Forgets the queue.
    public func reset() {
        running.withLock { $0 = nil }
    }

    /// Nothing of its own; the request queue's position while it runs.
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        running.withLock { running in
            VirtioDeviceSnapshot(state: .rng, queues: running.map { [0: $0.queue.state] } ?? [:])
        }
    }

    /// Accepts ``VirtioDeviceState/rng``: the queue, restored by the transport, is everything.
    ///
    /// - Throws: `DeviceStateError` for a state of another device type.
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .rng = state else { throw wrongKind(state) }
    }

    /// Fills every available chain with entropy, returns it in the used ring and
    /// signals the driver when it asked to be.
    ///
    /// Stops at the first broken chain; chains finished before it are still signalled.
    public func processQueue(_ index: Int) throws(VirtioDeviceError) {
        guard index == 0 else { throw .queueIndexOutOfRange(index: index, count: 1) }
        let result: Result<Bool, VirtioDeviceError>? = running.withLock { running in
            guard running != nil else { return nil }
            return Self.serve(&running!, source: source)
        }
        guard let result else { throw .notActivated }
        if case .failure(let error) = result { throw error }
    }

    /// Serves the queue; the result says whether the driver was interrupted.
    private static func serve(_ running: inout Running, source: any EntropySource) -> Result<Bool, VirtioDeviceError> {
        var failure: VirtioDeviceError?
        var used = false
        do {
            while let chain = try queueStep({ () throws(QueueError) in try running.queue.popDescriptorChain(in: running.memory) }) {
                let length = try fill(chain, memory: running.memory, source: source)
                try queueStep { () throws(QueueError) in try running.queue.addUsed(head: chain.head, length: length, in: running.memory) }
                used = true
            }
        } catch {
            failure = error
        }
        var signalled = false
        if used, (try? running.queue.needsNotification(in: running.memory)) == true {
            running.interrupt.signalQueue(0)
            signalled = true
        }
        if let failure { return .failure(failure) }
        return .success(signalled)
    }

    /// Writes entropy into the writable buffers of `chain`; returns the bytes written.
    private static func fill(_ chain: DescriptorChain, memory: GuestMemory, source: any EntropySource) throws(VirtioDeviceError) -> UInt32 {
        guard !chain.writable.isEmpty else { throw .noWritableBuffer(queue: 0, head: chain.head) }
        var writer = ChainWriter(chain, memory: memory)
        let bytes = try source.randomBytes(count: min(writer.remaining, maxBytesPerChain))
        try queueStep { () throws(QueueError) in try writer.write(bytes: bytes) }
        return UInt32(writer.bytesWritten)
    }

    /// Runs a queue operation, wrapping its error for queue 0.
    private static func queueStep<T>(_ body: () throws(QueueError) -> T) throws(VirtioDeviceError) -> T {
        do { return try body() } catch { throw .queue(index: 0, error) }
    }
}
