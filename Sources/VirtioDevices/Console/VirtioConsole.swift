import GuestMemory
import Synchronization
import VirtioQueue

/// A virtio console (type 3, virtio 1.x section 5.3) with a single port, as Cloud
/// Hypervisor has it: no `VIRTIO_CONSOLE_F_MULTIPORT`, so no control queues.
///
/// - Queue 0, the receiveq, carries host input to the guest: the device copies bytes
///   given to ``enqueueInput(_:)`` into the driver's device-writable buffers.
/// - Queue 1, the transmitq, carries guest output to the host: the device reads each
///   chain's device-readable buffers and hands them to the ``ConsoleOutput``.
///
/// The device offers ``Feature/size`` (the terminal size in `cols`/`rows`, updated by
/// ``resize(cols:rows:)``) and ``Feature/emergencyWrite`` (a 32-bit write to
/// `emerg_wr` prints one character, usable before the driver is set up).
///
/// Host input waits in a bounded buffer (``inputCapacity`` bytes) until the driver
/// posts receive buffers, so a guest that never reads cannot make the host buffer
/// without limit: ``enqueueInput(_:)`` then accepts fewer bytes and the caller keeps
/// the rest (in the kernel's pty or pipe buffer) until ``receiveSpace`` grows. Bytes
/// are never dropped or reordered. Like Cloud Hypervisor, a driver reset forgets the
/// queues but keeps the waiting input, which the next driver receives.
///
/// ```swift
/// let console = VirtioConsole(output: terminal, cols: 80, rows: 24)
/// // Event loop, host input readable:
/// let accepted = console.enqueueInput(bytesReadFromStdin.prefix(console.receiveSpace))
/// // SIGWINCH:
/// console.resize(cols: 120, rows: 40)
/// ```
public final class VirtioConsole: VirtioDevice {
    /// Device-specific feature bits (virtio 1.x, section 5.3.3).
    public enum Feature {
        /// `VIRTIO_CONSOLE_F_SIZE`: `cols` and `rows` in the configuration are valid.
        public static let size: UInt64 = 1 << 0
        /// `VIRTIO_CONSOLE_F_MULTIPORT`: control queues and several ports (not offered).
        public static let multiport: UInt64 = 1 << 1
        /// `VIRTIO_CONSOLE_F_EMERG_WRITE`: writing `emerg_wr` outputs one character.
        public static let emergencyWrite: UInt64 = 1 << 2
    }

    /// Byte offsets of the fields of `struct virtio_console_config`.
    public enum ConfigOffset {
        /// `cols` (16 bits): the terminal width.
        public static let cols: UInt64 = 0
        /// `rows` (16 bits): the terminal height.
        public static let rows: UInt64 = 2
        /// `max_nr_ports` (32 bits): always 1 here.
        public static let maxNumberOfPorts: UInt64 = 4
        /// `emerg_wr` (32 bits, write-only): a write outputs its low byte.
        public static let emergencyWrite: UInt64 = 8
        /// The size of the configuration structure.
        public static let length: UInt64 = 12
    }

    /// The receive queue's index (port 0 input, host to guest).
    public static let receiveQueue = 0
    /// The transmit queue's index (port 0 output, guest to host).
    public static let transmitQueue = 1
    /// The default (and Cloud Hypervisor's) maximum size of both queues.
    public static let defaultQueueSize: UInt16 = 256
    /// The default bound on host input waiting for receive buffers.
    public static let defaultInputCapacity = 64 * 1024
    /// The most bytes handed to the output in one call: a large transmit chain is
    /// read in pieces of this size, so copying it never allocates more.
    public static let outputChunkSize = 64 * 1024

    /// A running queue with what processing it needs.
    struct Link {
        var memory: GuestMemory
        var queue: SplitQueue
        var interrupt: any VirtioInterrupt
    }

    /// The input side: waiting bytes, the receive queue, and a failure met while
    /// delivering from ``enqueueInput(_:)`` (reported at the next notification).
    struct Receiver {
        var pending: ConsoleInputBuffer
        var link: Link?
        var failure: VirtioDeviceError?
    }

    /// The configuration fields and what a configuration interrupt needs.
    struct Settings {
        var cols: UInt16
        var rows: UInt16
        var acknowledged: UInt64 = 0
        var interrupt: (any VirtioInterrupt)?
    }

    let output: any ConsoleOutput
    let maxQueueSize: UInt16
    let receiver: Mutex<Receiver>
    let transmitter = Mutex<Link?>(nil)
    let settings: Mutex<Settings>

    /// Creates the console writing guest output to `output`.
    ///
    /// - Parameters:
    ///   - cols: the initial terminal width reported to the driver (0 when unknown).
    ///   - rows: the initial terminal height (0 when unknown).
    ///   - queueSize: the maximum size of both queues.
    ///   - inputCapacity: the most host bytes kept while the guest posts no receive
    ///     buffers (at least 1).
    public init(output: any ConsoleOutput, cols: UInt16 = 0, rows: UInt16 = 0,
                queueSize: UInt16 = VirtioConsole.defaultQueueSize,
                inputCapacity: Int = VirtioConsole.defaultInputCapacity) {
        self.output = output
        self.maxQueueSize = queueSize
        self.receiver = Mutex(Receiver(pending: ConsoleInputBuffer(capacity: inputCapacity)))
        self.settings = Mutex(Settings(cols: cols, rows: rows))
    }

    // MARK: - Identity

    /// ``VirtioDeviceType/console``.
    public var deviceType: VirtioDeviceType { .console }
    /// ``Feature/size`` and ``Feature/emergencyWrite``; like ``VirtioRng`` no ring
    /// features (event index, indirect descriptors), and no multiport.
    public var features: UInt64 { Feature.size | Feature.emergencyWrite }
    /// The receive queue and the transmit queue.
    public var queueMaxSizes: [UInt16] { [maxQueueSize, maxQueueSize] }
    /// Whether the driver set the device running and no reset followed.
    public var isActivated: Bool { receiver.withLock { $0.link != nil } }

    // MARK: - Host side

    /// The bound on host input waiting for receive buffers.
    public var inputCapacity: Int { receiver.withLock { $0.pending.capacity } }
    /// Host bytes accepted but not yet delivered to the guest.
    public var pendingInputCount: Int { receiver.withLock { $0.pending.count } }
    /// How many more bytes ``enqueueInput(_:)`` is sure to accept now (it may accept
    /// more when the guest has receive buffers posted).
    public var receiveSpace: Int { receiver.withLock { $0.pending.space } }
    /// The failure met while delivering input outside a notification, if any since the
    /// last reset: delivery stops and the next queue notification reports it, so the
    /// transport sets `DEVICE_NEEDS_RESET`.
    public var inputError: VirtioDeviceError? { receiver.withLock { $0.failure } }

    /// The terminal size the configuration reports.
    public var size: (cols: UInt16, rows: UInt16) { settings.withLock { ($0.cols, $0.rows) } }

    /// Queues bytes from the host (a terminal, a pty, a file) for the guest to read.
    ///
    /// When the device is running, copies the bytes already waiting and then the front
    /// of `bytes` into the receive buffers the driver posted, and signals queue 0. What
    /// the guest has no buffer for waits, in order, up to ``inputCapacity``; the caller
    /// keeps what was refused and offers it again once the driver posted buffers
    /// (``receiveSpace`` says how much fits). A broken receive chain is recorded in
    /// ``inputError``, delivery stops, and the bytes stay waiting for the next driver.
    ///
    /// - Returns: how many bytes were accepted, from 0 to `bytes.count`.
    @discardableResult
    public func enqueueInput(_ bytes: some Collection<UInt8>) -> Int {
        let bytes = Array(bytes)
        return receiver.withLock { receiver in
            var rest = bytes[...]
            if receiver.link != nil, receiver.failure == nil,
               case .failure(let error) = Self.deliver(&receiver, extra: &rest) {
                receiver.failure = error
            }
            let kept = receiver.pending.append(rest)
            return bytes.count - rest.count + kept
        }
    }

    /// Sets the terminal size the configuration reports and, when the running driver
    /// negotiated ``Feature/size``, raises a configuration interrupt so it reads it.
    public func resize(cols: UInt16, rows: UInt16) {
        settings.withLock { settings in
            settings.cols = cols
            settings.rows = rows
            if settings.acknowledged & Feature.size != 0, let interrupt = settings.interrupt {
                interrupt.signalConfig()
            }
        }
    }

    // MARK: - Configuration space

    /// Reads `struct virtio_console_config` (little-endian): `cols`, `rows`,
    /// `max_nr_ports` (1) and `emerg_wr` (reads 0). Bytes past its end read 0.
    public func readConfig(offset: UInt64, size: Int) -> UInt64 {
        guard (1...8).contains(size), offset < ConfigOffset.length else { return 0 }
        let (cols, rows) = self.size
        var layout = [UInt8](repeating: 0, count: Int(ConfigOffset.length))
        Self.put(UInt32(cols) | UInt32(rows) << 16, into: &layout, at: Int(ConfigOffset.cols))
        Self.put(1, into: &layout, at: Int(ConfigOffset.maxNumberOfPorts))
        return VirtioConfigSpace.read(layout, offset: offset, size: size)
    }

    /// A 32-bit write to `emerg_wr` outputs its low byte at once (an emergency write,
    /// allowed even before the driver is set up); every other write is ignored, the
    /// other fields being read-only.
    public func writeConfig(offset: UInt64, size: Int, value: UInt64) {
        guard offset == ConfigOffset.emergencyWrite, size == 4 else { return }
        transmitter.withLock { _ in output.write([UInt8(truncatingIfNeeded: value)]) }
    }

    /// Records the features the driver accepted (``Feature/size`` decides whether a
    /// resize interrupts it).
    public func acknowledgeFeatures(_ features: UInt64) {
        settings.withLock { $0.acknowledged = features }
    }

    // MARK: - Lifecycle

    /// Keeps both queues, which the driver must have enabled; delivers input that
    /// waited for the driver, and raises a configuration interrupt when the driver
    /// negotiated ``Feature/size`` (as Cloud Hypervisor does), so it reads the size.
    ///
    /// - Throws: ``VirtioDeviceError/queueIndexOutOfRange(index:count:)`` or
    ///   ``VirtioDeviceError/queueNotEnabled(index:)`` for a missing queue, or the
    ///   failure met while delivering waiting input.
    public func activate(memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        guard queues.count >= 2 else { throw .queueIndexOutOfRange(index: queues.count, count: queues.count) }
        for index in [Self.receiveQueue, Self.transmitQueue] where !queues[index].isReady {
            throw .queueNotEnabled(index: index)
        }
        transmitter.withLock {
            $0 = Link(memory: memory, queue: queues[Self.transmitQueue], interrupt: interrupt)
        }
        let failure: VirtioDeviceError? = receiver.withLock { receiver in
            receiver.failure = nil
            receiver.link = Link(memory: memory, queue: queues[Self.receiveQueue], interrupt: interrupt)
            guard case .failure(let error) = Self.deliver(&receiver) else { return nil }
            return error
        }
        if let failure {
            reset()
            throw failure
        }
        settings.withLock { settings in
            settings.interrupt = interrupt
            if settings.acknowledged & Feature.size != 0 { interrupt.signalConfig() }
        }
    }

    /// Forgets both queues and the negotiated features. Input waiting for the guest is
    /// kept, as Cloud Hypervisor keeps it, and goes to the next driver.
    public func reset() {
        receiver.withLock { receiver in
            receiver.link = nil
            receiver.failure = nil
        }
        transmitter.withLock { $0 = nil }
        settings.withLock { settings in
            settings.acknowledged = 0
            settings.interrupt = nil
        }
    }

    /// Serves queue `index` after the driver notified it: on the receive queue,
    /// delivers waiting input into the new buffers; on the transmit queue, sends every
    /// available chain to the output. Either way the driver is signalled when it asked
    /// to be.
    ///
    /// Stops at the first broken chain; chains finished before it are still signalled.
    ///
    /// - Throws: ``VirtioDeviceError/noWritableBuffer(queue:head:)`` for a receive
    ///   chain without writable buffers, ``VirtioDeviceError/noReadableBuffer(queue:head:)``
    ///   for a transmit chain without readable buffers, ``VirtioDeviceError/queue(index:_:)``
    ///   when the driver broke the virtqueue rules, ``VirtioDeviceError/notActivated``,
    ///   ``VirtioDeviceError/queueIndexOutOfRange(index:count:)``, or the failure an
    ///   earlier ``enqueueInput(_:)`` recorded in ``inputError``.
    public func processQueue(_ index: Int) throws(VirtioDeviceError) {
        switch index {
        case Self.receiveQueue:
            let result: Result<Int, VirtioDeviceError>? = receiver.withLock { receiver in
                guard receiver.link != nil else { return nil }
                if let failure = receiver.failure { return .failure(failure) }
                return Self.deliver(&receiver)
            }
            guard let result else { throw .notActivated }
            if case .failure(let error) = result { throw error }
        case Self.transmitQueue:
            if let failure = receiver.withLock({ $0.failure }) { throw failure }
            let result: Result<Void, VirtioDeviceError>? = transmitter.withLock { link in
                guard link != nil else { return nil }
                return Self.transmit(&link!, to: output)
            }
            guard let result else { throw .notActivated }
            if case .failure(let error) = result { throw error }
        default:
            throw .queueIndexOutOfRange(index: index, count: 2)
        }
    }

    // MARK: - Queue processing

    /// Copies waiting input, then the bytes of `extra` (input being enqueued), into
    /// receive chains, one chain after another, until the bytes or the chains run out;
    /// returns how many bytes were delivered. A chain gets as many bytes as its writable
    /// buffers hold and bytes remain (a partial fill), and bytes leave the input buffer
    /// (or `extra`) only once their chain is in the used ring.
    private static func deliver(_ receiver: inout Receiver, extra: inout ArraySlice<UInt8>) -> Result<Int, VirtioDeviceError> {
        guard let memory = receiver.link?.memory else { return .success(0) }
        let queueIndex = receiveQueue
        var delivered = 0
        var used = false
        var failure: VirtioDeviceError?
        do throws(VirtioDeviceError) {
            while !receiver.pending.isEmpty || !extra.isEmpty,
                  let chain = try step(queueIndex, { () throws(QueueError) in
                      try receiver.link!.queue.popDescriptorChain(in: memory)
                  }) {
                guard !chain.writable.isEmpty else { throw .noWritableBuffer(queue: queueIndex, head: chain.head) }
                var writer = ChainWriter(chain, memory: memory)
                var bytes = receiver.pending.peek(writer.remaining)
                let fromPending = bytes.count
                let fromExtra = min(writer.remaining - fromPending, extra.count)
                bytes += extra.prefix(fromExtra)
                try step(queueIndex) { () throws(QueueError) in try writer.write(bytes: bytes) }
                try step(queueIndex) { () throws(QueueError) in
                    try receiver.link!.queue.addUsed(head: chain.head, length: UInt32(bytes.count), in: memory)
                }
                receiver.pending.removeFirst(fromPending)
                extra = extra.dropFirst(fromExtra)
                delivered += bytes.count
                used = true
            }
        } catch {
            failure = error
        }
        if used { signalIfNeeded(&receiver.link!, queue: queueIndex) }
        if let failure { return .failure(failure) }
        return .success(delivered)
    }

    /// Delivers waiting input only (a notification or the activation).
    private static func deliver(_ receiver: inout Receiver) -> Result<Int, VirtioDeviceError> {
        var nothing: ArraySlice<UInt8> = []
        return deliver(&receiver, extra: &nothing)
    }

    /// Sends every available transmit chain to `output` and returns it with used
    /// length 0 (the device writes nothing into transmit buffers). Device-writable
    /// buffers after the readable ones are ignored.
    private static func transmit(_ link: inout Link, to output: any ConsoleOutput) -> Result<Void, VirtioDeviceError> {
        let queueIndex = transmitQueue
        let memory = link.memory
        var used = false
        var failure: VirtioDeviceError?
        do throws(VirtioDeviceError) {
            while let chain = try step(queueIndex, { () throws(QueueError) in try link.queue.popDescriptorChain(in: memory) }) {
                guard !chain.readable.isEmpty else { throw .noReadableBuffer(queue: queueIndex, head: chain.head) }
                var reader = ChainReader(chain, memory: memory)
                while reader.remaining > 0 {
                    let count = min(reader.remaining, outputChunkSize)
                    let bytes = try step(queueIndex) { () throws(QueueError) in try reader.readBytes(count: count) }
                    output.write(bytes)
                }
                try step(queueIndex) { () throws(QueueError) in try link.queue.addUsed(head: chain.head, length: 0, in: memory) }
                used = true
            }
        } catch {
            failure = error
        }
        if used { signalIfNeeded(&link, queue: queueIndex) }
        if let failure { return .failure(failure) }
        return .success(())
    }

    /// Signals queue `queue` unless the driver suppressed the interrupt.
    private static func signalIfNeeded(_ link: inout Link, queue: Int) {
        if (try? link.queue.needsNotification(in: link.memory)) == true {
            link.interrupt.signalQueue(queue)
        }
    }

    /// Runs a queue operation, wrapping its error for queue `index`.
    private static func step<T>(_ index: Int, _ body: () throws(QueueError) -> T) throws(VirtioDeviceError) -> T {
        do { return try body() } catch { throw .queue(index: index, error) }
    }

    /// Stores `value` little-endian at `offset` in `bytes`.
    private static func put(_ value: UInt32, into bytes: inout [UInt8], at offset: Int) {
        for byte in 0..<4 { bytes[offset + byte] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(byte))) }
    }
}
