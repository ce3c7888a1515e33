/// A connection of the muxer: the host port and the guest port.
struct VsockConnectionKey: Hashable, Sendable {
    var localPort: UInt32
    var peerPort: UInt32
}

/// Something the muxer owes the guest: a connection's next packet, or a reset for a
/// connection it does not have.
enum VsockRxItem: Equatable {
    case connection(VsockConnectionKey)
    case reset(localPort: UInt32, peerPort: UInt32)
}

/// The muxer's bounded queue of owed packets, kept as Cloud Hypervisor keeps it: when it
/// overflows it stops being "in sync" with the connections and is rebuilt from them once
/// drained; a reset for an unknown connection takes the place of a connection entry (which
/// the rebuild finds again), and is dropped only when the queue holds nothing but resets.
struct VsockRxQueue {
    static let capacity = 256
    private(set) var items: [VsockRxItem] = []
    private var head = 0
    /// False after an overflow: some connection with pending packets is not listed.
    private(set) var isSynced = true

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }

    /// Whether anything is owed (listed, or lost in an overflow).
    var hasPending: Bool { !isEmpty || !isSynced }

    /// Appends `item`; false when it had to be dropped.
    @discardableResult
    mutating func push(_ item: VsockRxItem) -> Bool {
        if isSynced && count < Self.capacity {
            items.append(item)
            return true
        }
        switch item {
        case .reset:
            for index in stride(from: items.count - 1, through: head, by: -1) {
                if case .connection = items[index] {
                    items[index] = item
                    isSynced = false
                    return true
                }
            }
        case .connection:
            isSynced = false
        }
        return false
    }

    var first: VsockRxItem? { isEmpty ? nil : items[head] }

    mutating func removeFirst() {
        guard !isEmpty else { return }
        head += 1
        if head == items.count || head > 64 {
            items.removeFirst(head)
            head = 0
        }
    }

    /// A queue listing the connections in `keys` (those with packets owed), in sync unless
    /// they are more than the capacity.
    static func rebuilt(from keys: [VsockConnectionKey]) -> VsockRxQueue {
        var queue = VsockRxQueue()
        for key in keys {
            if queue.count >= capacity {
                queue.isSynced = false
                break
            }
            queue.items.append(.connection(key))
        }
        return queue
    }
}
