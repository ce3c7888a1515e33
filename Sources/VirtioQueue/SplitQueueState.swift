import GuestMemory

/// Everything a ``SplitQueue`` keeps, as one `Codable` value for snapshot and restore
/// (virtio-queue's `QueueState`): the driver's configuration, the ready bit, and the
/// device's private ring positions. The rings themselves live in guest memory, which the
/// snapshot carries separately.
public struct SplitQueueState: Codable, Equatable, Sendable {
    /// The largest size the device offers (must match the queue restored into).
    public var maxSize: UInt16
    /// The size the driver chose.
    public var size: UInt16
    /// Whether the queue was activated (the driver enabled it and it validated).
    public var ready: Bool
    /// Guest address of the descriptor table.
    public var descriptorTable: GuestAddress
    /// Guest address of the available ring.
    public var availableRing: GuestAddress
    /// Guest address of the used ring.
    public var usedRing: GuestAddress
    /// Whether `VIRTIO_F_EVENT_IDX` notification suppression is on.
    public var eventIndex: Bool
    /// The available index of the next chain to pop (`last_avail_idx`), a wrapping 16-bit index.
    public var nextAvailable: UInt16
    /// The used index the next used entry gets, a wrapping 16-bit index.
    public var nextUsed: UInt16
    /// The used index at the last notification decision with event index (`nil`: none yet).
    public var signalledUsed: UInt16?

    /// A state with every field given.
    public init(maxSize: UInt16, size: UInt16, ready: Bool, descriptorTable: GuestAddress, availableRing: GuestAddress,
                usedRing: GuestAddress, eventIndex: Bool, nextAvailable: UInt16, nextUsed: UInt16, signalledUsed: UInt16?) {
        self.maxSize = maxSize
        self.size = size
        self.ready = ready
        self.descriptorTable = descriptorTable
        self.availableRing = availableRing
        self.usedRing = usedRing
        self.eventIndex = eventIndex
        self.nextAvailable = nextAvailable
        self.nextUsed = nextUsed
        self.signalledUsed = signalledUsed
    }
}

/// Why a saved ``SplitQueueState`` cannot be restored: the field and what is wrong with it.
public struct QueueStateError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The offending field of ``SplitQueueState``.
    public var field: String
    /// What is wrong with it.
    public var reason: String

    /// An error naming `field`.
    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    /// One sentence naming the field.
    public var description: String { "queue state field \(field): \(reason)" }
}

extension SplitQueue {
    /// The queue's whole state.
    public var state: SplitQueueState {
        SplitQueueState(maxSize: maxSize, size: size, ready: isReady, descriptorTable: descriptorTable,
                        availableRing: availableRing, usedRing: usedRing, eventIndex: eventIndex,
                        nextAvailable: nextAvailable, nextUsed: nextUsed, signalledUsed: signalledUsed)
    }

    /// Rebuilds a queue from a saved state, checking it first.
    ///
    /// A ready queue must have a power-of-two size within ``maxSize``, rings aligned as
    /// virtio requires (16, 2, 4 bytes) and, when `memory` is given, inside guest memory,
    /// and no more chains in flight (`nextAvailable - nextUsed`) than its size. The indices
    /// themselves wrap and may hold any value. A queue that was not ready keeps whatever
    /// the driver had written.
    ///
    /// With a `translator` (a device behind a virtual IOMMU) the saved ring addresses are
    /// I/O virtual addresses and a ready queue's rings must be mapped.
    ///
    /// - Throws: ``QueueStateError`` naming the first bad field.
    public init(restoring state: SplitQueueState, memory: GuestMemory? = nil,
                translator: (any AddressTranslator)? = nil) throws(QueueStateError) {
        do {
            self = try SplitQueue(maxSize: state.maxSize)
        } catch {
            throw QueueStateError(field: "maxSize", reason: "\(error)")
        }
        self.translator = translator
        size = state.size
        descriptorTable = state.descriptorTable
        availableRing = state.availableRing
        usedRing = state.usedRing
        eventIndex = state.eventIndex
        nextAvailable = state.nextAvailable
        nextUsed = state.nextUsed
        guard state.ready else {
            restoreSignalled(state.signalledUsed)
            return
        }
        if let memory {
            do { try activate(in: memory) } catch { throw Self.stateError(error) }
        } else {
            do { try markReady() } catch { throw Self.stateError(error) }
        }
        let inFlight = state.nextAvailable &- state.nextUsed
        guard inFlight <= state.size else {
            throw QueueStateError(field: "nextUsed", reason: "\(state.nextUsed) is \(inFlight) entries behind "
                + "nextAvailable \(state.nextAvailable), more than the queue size \(state.size)")
        }
        restoreSignalled(state.signalledUsed)
    }

    /// Replaces this queue's state with `state`, which must have the same ``maxSize``;
    /// nothing changes when it throws.
    ///
    /// - Throws: ``QueueStateError`` as ``init(restoring:memory:)`` does, or for another maximum size.
    public mutating func restore(_ state: SplitQueueState, memory: GuestMemory? = nil) throws(QueueStateError) {
        guard state.maxSize == maxSize else {
            throw QueueStateError(field: "maxSize", reason: "saved \(state.maxSize) but this queue offers \(maxSize)")
        }
        self = try SplitQueue(restoring: state, memory: memory, translator: translator)
    }

    /// Maps a configuration error to the state field it concerns.
    private static func stateError(_ error: QueueError) -> QueueStateError {
        let field: String
        switch error {
        case .invalidSize: field = "size"
        case .misalignedRing(let part, _, _), .ringOutOfMemory(let part, _, _), .ringNotMapped(let part, _, _):
            switch part {
            case .descriptorTable: field = "descriptorTable"
            case .availableRing: field = "availableRing"
            case .usedRing: field = "usedRing"
            }
        default: field = "ready"
        }
        return QueueStateError(field: field, reason: "\(error)")
    }
}
