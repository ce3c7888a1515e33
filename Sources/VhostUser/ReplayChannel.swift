import Synchronization

/// A channel whose back-end is a fixed byte string: every read takes the next bytes of
/// `replies`, every sent message is recorded. For tests and fuzzing of the front-end
/// against hand-made or hostile back-ends.
public final class ReplayVhostUserChannel: VhostUserChannel {
    private struct State {
        var replies: [UInt8]
        var position = 0
        var sent: [(bytes: [UInt8], descriptors: [Int32])] = []
    }
    private let state: Mutex<State>

    /// A channel that answers with `replies`, then reports the connection closed.
    public init(replies: [UInt8]) {
        state = Mutex(State(replies: replies))
    }

    /// The messages sent so far, with the descriptors passed with each.
    public var sent: [(bytes: [UInt8], descriptors: [Int32])] { state.withLock { $0.sent } }

    /// Records the message.
    public func send(_ bytes: [UInt8], descriptors: [Int32], request: VhostUserRequest) throws(VhostUserError) {
        state.withLock { $0.sent.append((bytes, descriptors)) }
    }

    /// The next `count` bytes of the replies; a closed connection when fewer are left.
    public func receive(count: Int, request: VhostUserRequest) throws(VhostUserError) -> (bytes: [UInt8], descriptors: Int) {
        try state.withLock { (s: inout State) throws(VhostUserError) -> (bytes: [UInt8], descriptors: Int) in
            guard count <= s.replies.count - s.position else {
                s.position = s.replies.count
                throw .closed(request: request)
            }
            defer { s.position += count }
            return (Array(s.replies[s.position..<(s.position + count)]), 0)
        }
    }
}
