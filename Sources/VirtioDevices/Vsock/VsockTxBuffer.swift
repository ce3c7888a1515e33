/// Guest data for one connection that the host stream did not take yet: a ring of
/// ``Vsock/connectionBufferSize`` bytes (the credit the device advertises), allocated on
/// first use.
struct VsockTxBuffer {
    private var storage: [UInt8] = []
    private var head = 0
    /// The bytes waiting.
    private(set) var count = 0

    static let capacity = Int(Vsock.connectionBufferSize)

    /// Whether nothing waits.
    var isEmpty: Bool { count == 0 }

    /// Appends `bytes`; false (and nothing kept) when they do not fit.
    mutating func push(_ bytes: ArraySlice<UInt8>) -> Bool {
        guard count + bytes.count <= Self.capacity else { return false }
        if bytes.isEmpty { return true }
        if storage.isEmpty { storage = [UInt8](repeating: 0, count: Self.capacity) }
        var tail = (head + count) % Self.capacity
        for byte in bytes {
            storage[tail] = byte
            tail = tail + 1 == Self.capacity ? 0 : tail + 1
        }
        count += bytes.count
        return true
    }

    /// Writes as much as `stream` takes; returns the bytes written, or the failure of a
    /// write that moved nothing (`wouldBlock` is not a failure: it returns what was written).
    mutating func flush(to stream: any VsockHostStream) -> Result<Int, VsockFlushError> {
        var written = 0
        while count > 0 {
            let run = min(count, Self.capacity - head)
            switch stream.write(storage[head..<(head + run)]) {
            case .bytes(let moved):
                head = (head + moved) % Self.capacity
                count -= moved
                written += moved
                if moved < run { return .success(written) }
            case .wouldBlock, .endOfStream:
                return .success(written)
            case .failed(let reason):
                return .failure(VsockFlushError(written: written, reason: reason))
            }
        }
        return .success(written)
    }
}

/// A flush that failed after writing `written` bytes.
struct VsockFlushError: Error {
    var written: Int
    var reason: String
}
