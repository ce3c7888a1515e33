import Synchronization

/// The front-end (the VMM) side of one vhost-user connection: each call sends one request
/// and, when the request has a reply or the back-end acknowledges requests (`REPLY_ACK`),
/// reads and checks it. Calls from several threads are serialized, so a request and its
/// reply are never interleaved with another's.
///
/// ```swift
/// let frontend = VhostUserFrontend(channel: try UnixVhostUserChannel.connect(path: "/run/virtiofsd.sock"))
/// let (features, protocol) = try frontend.negotiate(features: wanted, protocolFeatures: [.multiQueue, .replyAck])
/// try frontend.setMemTable(regions, descriptors: fds)
/// try frontend.setVringNum(index: 0, size: 1024)
/// ```
public final class VhostUserFrontend: Sendable {
    /// The connection.
    public let channel: any VhostUserChannel
    private struct Session {
        /// Whether REPLY_ACK was negotiated.
        var replyAck = false
        /// Why the connection went out of step, once it did.
        var broken: String?
        /// Whether `SET_OWNER` was sent on this connection (once per connection).
        var owned = false
    }
    private let session = Mutex(Session())

    /// A front-end on a connected channel.
    public init(channel: any VhostUserChannel) {
        self.channel = channel
    }

    /// Whether requests without a reply of their own ask for an acknowledgement.
    public var acknowledgesRequests: Bool { session.withLock { $0.replyAck } }

    /// Whether the connection is still in step: no request failed in a way that may have left
    /// bytes unread or unsent (a refusal leaves it in step).
    public var isInStep: Bool { session.withLock { $0.broken == nil } }

    /// Whether this connection already claimed the back-end (`SET_OWNER`): a device built
    /// anew over it (a VM's in-place reboot keeps its back-end connections) negotiates
    /// without claiming it again, which back-ends refuse.
    public var isOwner: Bool { session.withLock { $0.owned } }

    /// Sends `request` and reads its reply: the request's own (a `GET_`) or, with `REPLY_ACK`,
    /// the acknowledgement, whose non-zero status fails the call.
    @discardableResult
    func exchange(_ request: VhostUserRequest, payload: [UInt8] = [], descriptors: [Int32] = [],
                  expecting: VhostUserReply.Expectation = .u64) throws(VhostUserError) -> VhostUserReply? {
        try session.withLock { (session: inout Session) throws(VhostUserError) -> VhostUserReply? in
            if let reason = session.broken { throw .connectionBroken(reason: reason) }
            do throws(VhostUserError) {
                return try Self.exchange(request, payload: payload, descriptors: descriptors, expecting: expecting,
                                         replyAck: session.replyAck, channel: channel)
            } catch {
                // A refusal is a whole reply; anything else may leave bytes unread or unsent.
                if case .refused = error {} else { session.broken = "\(request): \(error)" }
                throw error
            }
        }
    }

    private static func exchange(_ request: VhostUserRequest, payload: [UInt8], descriptors: [Int32], expecting: VhostUserReply.Expectation,
                                 replyAck: Bool, channel: any VhostUserChannel) throws(VhostUserError) -> VhostUserReply? {
        let acknowledged = !request.hasReply && replyAck
        let message = VhostUserPayload.message(request, flags: acknowledged ? VhostUserFlags.needReply : 0, payload: payload)
        try channel.send(message, descriptors: descriptors, request: request)
        guard request.hasReply || acknowledged else { return nil }
        let (head, headDescriptors) = try channel.receive(count: VhostUserHeader.size, request: request)
        let header = try VhostUserReply.decodeHeader(head[...], for: request)
        let (body, bodyDescriptors) = header.size == 0 ? ([], 0) : try channel.receive(count: Int(header.size), request: request)
        if headDescriptors + bodyDescriptors > 0 {
            throw .unexpectedDescriptors(request: request, count: headDescriptors + bodyDescriptors)
        }
        let reply = try VhostUserReply.decodePayload(body[...], for: request, expecting: expecting)
        if acknowledged, case let .u64(status) = reply, status != 0 { throw .refused(request: request, status: status) }
        return reply
    }

    private func u64(_ request: VhostUserRequest) throws(VhostUserError) -> UInt64 {
        guard case let .u64(value) = try exchange(request) else { return 0 }
        return value
    }

    // MARK: - Session

    /// `SET_OWNER`: this connection owns the back-end.
    public func setOwner() throws(VhostUserError) {
        try exchange(.setOwner)
        session.withLock { $0.owned = true }
    }

    /// `GET_FEATURES`: the back-end's virtio feature bits.
    public func getFeatures() throws(VhostUserError) -> UInt64 { try u64(.getFeatures) }

    /// `SET_FEATURES`: the bits the front-end and the guest accepted.
    public func setFeatures(_ features: UInt64) throws(VhostUserError) {
        try exchange(.setFeatures, payload: VhostUserPayload.u64(features))
    }

    /// `GET_PROTOCOL_FEATURES`.
    public func getProtocolFeatures() throws(VhostUserError) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures(rawValue: try u64(.getProtocolFeatures))
    }

    /// `SET_PROTOCOL_FEATURES`; with `replyAck` among them, later requests ask for acknowledgements.
    public func setProtocolFeatures(_ features: VhostUserProtocolFeatures) throws(VhostUserError) {
        try exchange(.setProtocolFeatures, payload: VhostUserPayload.u64(features.rawValue))
        session.withLock { $0.replyAck = features.contains(.replyAck) }
    }

    /// `GET_QUEUE_NUM`: how many queues the back-end serves (with `MQ`).
    public func getQueueNum() throws(VhostUserError) -> UInt64 { try u64(.getQueueNum) }

    /// Cloud Hypervisor's negotiation: `SET_OWNER` (unless this connection sent it already),
    /// `GET_FEATURES`, and when the back-end has
    /// protocol features and `features` asks for them, `GET_PROTOCOL_FEATURES` and
    /// `SET_PROTOCOL_FEATURES` with the common ones. Returns the common virtio features (bit
    /// 30 included when both have it) and protocol features.
    public func negotiate(features: UInt64, protocolFeatures: VhostUserProtocolFeatures)
        throws(VhostUserError) -> (features: UInt64, protocolFeatures: VhostUserProtocolFeatures) {
        if !isOwner { try setOwner() }
        let acked = features & (try getFeatures())
        guard acked & vhostUserProtocolFeaturesBit != 0 else { return (acked, []) }
        let common = protocolFeatures.intersection(try getProtocolFeatures())
        try setProtocolFeatures(common)
        return (acked, common)
    }

    // MARK: - Memory and queues

    /// `SET_MEM_TABLE`: the guest memory regions, each with its file's descriptor.
    public func setMemTable(_ regions: [VhostUserMemoryRegion], descriptors: [Int32]) throws(VhostUserError) {
        guard regions.count <= VhostUserPayload.maxMemoryRegions else { throw .tooManyRegions(regions.count) }
        precondition(regions.count == descriptors.count, "one descriptor per memory region")
        try exchange(.setMemTable, payload: VhostUserPayload.memoryTable(regions), descriptors: descriptors)
    }

    /// `ADD_MEM_REG`: one more guest memory region with its file's descriptor (needs the
    /// `CONFIGURE_MEM_SLOTS` protocol feature).
    public func addMemReg(_ region: VhostUserMemoryRegion, descriptor: Int32) throws(VhostUserError) {
        try exchange(.addMemReg, payload: VhostUserPayload.memoryRegion(region), descriptors: [descriptor])
    }

    /// `SET_VRING_NUM`: queue `index` has `size` entries.
    public func setVringNum(index: UInt32, size: UInt32) throws(VhostUserError) {
        try exchange(.setVringNum, payload: VhostUserPayload.vringState(index: index, value: size))
    }

    /// `SET_VRING_ADDR`: the queue's rings.
    public func setVringAddr(_ address: VhostUserVringAddress) throws(VhostUserError) {
        try exchange(.setVringAddr, payload: VhostUserPayload.vringAddress(address))
    }

    /// `SET_VRING_BASE`: the first available-ring index the back-end processes.
    public func setVringBase(index: UInt32, base: UInt32) throws(VhostUserError) {
        try exchange(.setVringBase, payload: VhostUserPayload.vringState(index: index, value: base))
    }

    /// `GET_VRING_BASE`: stops queue `index` and returns its next available index.
    public func getVringBase(index: UInt32) throws(VhostUserError) -> UInt32 {
        let reply = try exchange(.getVringBase, payload: VhostUserPayload.vringState(index: index, value: 0),
                                 expecting: .vringState(index: index))
        guard case let .vringState(_, value) = reply else { return 0 }
        return value
    }

    /// `SET_VRING_KICK`: the eventfd the guest's notifications of queue `index` arrive on.
    public func setVringKick(index: UInt8, descriptor: Int32?) throws(VhostUserError) {
        try vringDescriptor(.setVringKick, index: index, descriptor: descriptor)
    }

    /// `SET_VRING_CALL`: the eventfd the back-end signals queue `index`'s used buffers on.
    public func setVringCall(index: UInt8, descriptor: Int32?) throws(VhostUserError) {
        try vringDescriptor(.setVringCall, index: index, descriptor: descriptor)
    }

    /// `SET_VRING_ERR`: the eventfd the back-end signals queue `index`'s errors on.
    public func setVringErr(index: UInt8, descriptor: Int32?) throws(VhostUserError) {
        try vringDescriptor(.setVringErr, index: index, descriptor: descriptor)
    }

    private func vringDescriptor(_ request: VhostUserRequest, index: UInt8, descriptor: Int32?) throws(VhostUserError) {
        try exchange(request, payload: VhostUserPayload.vringDescriptor(index: index, hasDescriptor: descriptor != nil),
                     descriptors: descriptor.map { [$0] } ?? [])
    }

    /// `SET_VRING_ENABLE`: starts or stops queue `index` (with protocol features, queues start stopped).
    public func setVringEnable(index: UInt32, enabled: Bool) throws(VhostUserError) {
        try exchange(.setVringEnable, payload: VhostUserPayload.vringState(index: index, value: enabled ? 1 : 0))
    }

    /// `GET_CONFIG`: `size` bytes of the device configuration space at `offset` (needs the `CONFIG` protocol feature).
    public func getConfig(offset: UInt32, size: UInt32, flags: UInt32 = VhostUserConfigFlags.writable) throws(VhostUserError) -> [UInt8] {
        let reply = try exchange(.getConfig, payload: VhostUserPayload.config(offset: offset, size: size, flags: flags),
                                 expecting: .config(offset: offset, size: size))
        guard case let .config(_, _, bytes) = reply else { return [] }
        return bytes
    }

    /// `SET_CONFIG`: writes `bytes` at `offset` of the device configuration space (needs the `CONFIG` protocol feature).
    public func setConfig(offset: UInt32, bytes: [UInt8], flags: UInt32 = VhostUserConfigFlags.writable) throws(VhostUserError) {
        try exchange(.setConfig, payload: VhostUserPayload.setConfig(offset: offset, flags: flags, bytes: bytes))
    }
}
