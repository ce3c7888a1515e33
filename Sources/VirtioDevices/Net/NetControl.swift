import GuestMemory
import VirtioQueue

/// What the control queue's state-changing commands act on: the device that owns the
/// queue (``VirtioNet``, or a vhost-user-net front-end whose back-end serves only the data
/// rings while the VMM serves the control queue).
public protocol VirtioNetControlTarget {
    /// The queue pairs the device has (`VQ_PAIRS_SET` accepts 1 to this).
    var queuePairCount: Int { get }
    /// `VQ_PAIRS_SET`: the driver now uses `count` pairs (already checked against ``queuePairCount``).
    func setActiveQueuePairs(_ count: Int)
    /// `MAC_ADDR_SET`: the configuration's new (unicast) address.
    func setMAC(_ address: MACAddress)
    /// `GUEST_OFFLOADS_SET`: the receive offloads (feature bits) the driver wants now, already
    /// checked against the negotiated ones. A thrown error answers the command with an error.
    func setGuestOffloads(_ features: UInt64) throws
}

/// The control queue (virtio 1.x, section 5.1.6.5): each chain carries a class and
/// command byte and the command's data in its device-readable part, and the
/// acknowledgement byte first in its device-writable part.
public enum VirtioNetControl {
    /// Runs every available command on `queue` (queue `index`) against `target` and signals
    /// the driver through `interrupt` when it should be.
    ///
    /// - Throws: ``VirtioDeviceError/noWritableBuffer(queue:head:)`` for a command with no
    ///   room for its acknowledgement, ``VirtioDeviceError/queue(index:_:)`` when the
    ///   driver broke the ring rules, ``VirtioDeviceError/queueNotEnabled(index:)``.
    public static func serve(_ queue: inout SplitQueue, index: Int, memory: GuestMemory, features: UInt64,
                             interrupt: any VirtioInterrupt, target: some VirtioNetControlTarget) throws(VirtioDeviceError) {
        guard queue.isReady else { throw .queueNotEnabled(index: index) }
        var used = false
        var failure: VirtioDeviceError?
        do throws(VirtioDeviceError) {
            repeat {
                while let chain = try step(index, { () throws(QueueError) in try queue.popDescriptorChain(in: memory) }) {
                    guard chain.writableLength >= 1 else { throw .noWritableBuffer(queue: index, head: chain.head) }
                    let ack = try execute(chain, memory: memory, features: features, queue: index, target: target)
                    // `ack` is the first device-writable byte (as QEMU and Cloud Hypervisor place it).
                    let address = ChainSpan(chain.writable, start: 0, count: 1).pieces[0].address
                    do throws(GuestMemoryError) {
                        try memory.write(ack.rawValue, at: address)
                    } catch {
                        throw .queue(index: index, .memory(error))
                    }
                    try step(index) { () throws(QueueError) in try queue.addUsed(head: chain.head, length: 1, in: memory) }
                    used = true
                }
            } while try step(index, { () throws(QueueError) in try queue.enableNotification(in: memory) })
        } catch {
            failure = error
        }
        if used, (try? queue.needsNotification(in: memory)) == true { interrupt.signalQueue(index) }
        if let failure { throw failure }
    }

    /// Decodes and runs one command; a malformed or refused one answers
    /// ``VirtioNetABI/Ack/error``.
    private static func execute(_ chain: DescriptorChain, memory: GuestMemory, features: UInt64, queue: Int,
                                target: some VirtioNetControlTarget) throws(VirtioDeviceError) -> VirtioNetABI.Ack {
        var reader = ChainReader(chain, memory: memory)
        do throws(QueueError) {
            let rawClass: UInt8 = try reader.read()
            let command: UInt8 = try reader.read()
            guard let commandClass = VirtioNetABI.ControlClass(rawValue: rawClass) else { return .error }
            switch commandClass {
            case .receiveMode:
                // The device filters nothing (it does not offer VIRTIO_NET_F_CTRL_RX): every
                // frame the backend gives is delivered, and the guest's stack filters.
                guard VirtioNetABI.receiveModeCommands.contains(command), reader.remaining >= 1 else { return .error }
                _ = try reader.read(UInt8.self)
                return .ok
            case .mac:
                return try macCommand(command, &reader, target: target)
            case .multiQueue:
                guard command == VirtioNetABI.queuePairsSet, features & VirtioNetABI.Feature.multiQueue != 0 else { return .error }
                let requested = Int(try reader.read(UInt16.self))
                guard (1...target.queuePairCount).contains(requested) else { return .error }
                target.setActiveQueuePairs(requested)
                return .ok
            case .guestOffloads:
                guard command == VirtioNetABI.guestOffloadsSet,
                      features & VirtioNetABI.Feature.controlGuestOffloads != 0 else { return .error }
                let requested = try reader.read(UInt64.self)
                // Only receive offloads the driver negotiated may be switched on.
                guard requested & ~(features & VirtioNetABI.Feature.guestOffloads) == 0 else { return .error }
                do {
                    try target.setGuestOffloads(requested)
                } catch {
                    return .error
                }
                return .ok
            case .vlan, .announce:
                return .error
            }
        } catch {
            if case .memory(let cause) = error { throw .queue(index: queue, .memory(cause)) }
            // The command's data is shorter than the command needs.
            return .error
        }
    }

    /// `MAC_TABLE_SET` (two tables, each a le32 count and that many addresses, accepted
    /// when well formed; the device filters nothing) and `MAC_ADDR_SET` (six bytes, the
    /// new address in the configuration).
    private static func macCommand(_ command: UInt8, _ reader: inout ChainReader,
                                   target: some VirtioNetControlTarget) throws(QueueError) -> VirtioNetABI.Ack {
        switch command {
        case VirtioNetABI.macTableSet:
            for _ in 0..<2 {
                let entries = try reader.read(UInt32.self)
                let bytes = UInt64(entries) * 6
                guard bytes <= UInt64(reader.remaining) else { return .error }
                try reader.skip(Int(bytes))
            }
            return reader.remaining == 0 ? .ok : .error
        case VirtioNetABI.macAddressSet:
            guard reader.remaining == 6 else { return .error }
            guard let address = MACAddress(bytes: try reader.readBytes(count: 6)), !address.isMulticast else { return .error }
            target.setMAC(address)
            return .ok
        default:
            return .error
        }
    }

    /// Runs a queue operation, wrapping its error for queue `index`.
    private static func step<T>(_ index: Int, _ body: () throws(QueueError) -> T) throws(VirtioDeviceError) -> T {
        do { return try body() } catch { throw .queue(index: index, error) }
    }
}

extension VirtioNet {
    /// Runs every available command on the control queue and signals the driver
    /// (``VirtioNetControl/serve(_:index:memory:features:interrupt:target:)``).
    func serveControl(index: Int, session running: Session) throws(VirtioDeviceError) {
        let target = ControlTarget(device: self)
        let error: VirtioDeviceError? = control.withLock { queue in
            // No queue: a reset raced with the notification.
            guard queue != nil else { return .notActivated }
            do throws(VirtioDeviceError) {
                try VirtioNetControl.serve(&queue!, index: index, memory: running.memory, features: running.features,
                                           interrupt: running.interrupt, target: target)
                return nil
            } catch {
                return error
            }
        }
        if let error { throw error }
    }

    /// The device as the control commands see it: pairs, MAC and offloads in its core state,
    /// offloads given to every backend.
    private struct ControlTarget: VirtioNetControlTarget {
        let device: VirtioNet
        var queuePairCount: Int { device.pairs.count }
        func setActiveQueuePairs(_ count: Int) { device.core.withLock { $0.activePairs = count } }
        func setMAC(_ address: MACAddress) { device.core.withLock { $0.mac = address } }
        func setGuestOffloads(_ features: UInt64) throws {
            try device.applyOffloads(VirtioNetABI.offloads(forGuestFeatures: features))
            device.core.withLock { $0.guestOffloads = features }
        }
    }
}
