/// A back-end's reply, decoded. The decoder is total: any byte string gives a reply or a
/// ``VhostUserError``.
public enum VhostUserReply: Equatable, Sendable {
    /// A `u64` (features, protocol features, queue count, or a `REPLY_ACK` status).
    case u64(UInt64)
    /// A vring state (`GET_VRING_BASE`): the queue and its next available index.
    case vringState(index: UInt32, value: UInt32)
    /// A `GET_CONFIG` answer: the range and its bytes.
    case config(offset: UInt32, flags: UInt32, bytes: [UInt8])

    /// What a reply to `request` must look like, besides its header.
    public enum Expectation: Equatable, Sendable {
        /// A `u64`.
        case u64
        /// A vring state for queue `index`.
        case vringState(index: UInt32)
        /// A configuration range of `size` bytes at `offset`.
        case config(offset: UInt32, size: UInt32)
    }

    /// The expectation for a reply to `request` (an acknowledgement when it is not a `GET_`):
    /// `queue` for `GET_VRING_BASE`, `config` for `GET_CONFIG`.
    public static func expectation(for request: VhostUserRequest, queue: UInt32 = 0,
                                   config: (offset: UInt32, size: UInt32) = (0, 0)) -> Expectation {
        switch request {
        case .getVringBase: .vringState(index: queue)
        case .getConfig: .config(offset: config.offset, size: config.size)
        default: .u64
        }
    }

    /// Checks a reply's 12 header bytes: version 1, the reply flag, the request answered,
    /// and a payload no larger than any reply has. Returns the header.
    public static func decodeHeader(_ bytes: ArraySlice<UInt8>, for request: VhostUserRequest) throws(VhostUserError) -> VhostUserHeader {
        guard bytes.count >= VhostUserHeader.size else { throw .shortHeader(count: bytes.count) }
        let header = VhostUserHeader(request: VhostUserRequest(rawValue: readLittleEndian(bytes, at: 0, as: UInt32.self)),
                                     flags: readLittleEndian(bytes, at: 4, as: UInt32.self),
                                     size: readLittleEndian(bytes, at: 8, as: UInt32.self))
        guard header.flags & VhostUserFlags.versionMask == VhostUserFlags.version else { throw .badVersion(flags: header.flags) }
        guard header.flags & VhostUserFlags.reply != 0 else { throw .notAReply(request: header.request, flags: header.flags) }
        guard header.request == request else { throw .unexpectedRequest(expected: request, got: header.request) }
        guard header.size <= VhostUserHeader.maxReplyPayload else { throw .payloadTooLarge(request: request, size: header.size) }
        return header
    }

    /// Decodes a whole reply (header and payload) to `request`, as `expectation` says it must be.
    public static func decode(_ bytes: [UInt8], for request: VhostUserRequest, expecting expectation: Expectation) throws(VhostUserError) -> VhostUserReply {
        let header = try decodeHeader(bytes[...], for: request)
        let payload = bytes[VhostUserHeader.size...]
        guard payload.count == Int(header.size) else {
            throw .payloadLengthMismatch(request: request, announced: header.size, actual: payload.count)
        }
        return try decodePayload(payload, for: request, expecting: expectation)
    }

    /// Decodes a reply's payload (its header already checked).
    public static func decodePayload(_ payload: ArraySlice<UInt8>, for request: VhostUserRequest,
                                     expecting expectation: Expectation) throws(VhostUserError) -> VhostUserReply {
        switch expectation {
        case .u64:
            guard payload.count == 8 else { throw .wrongPayloadSize(request: request, expected: 8, got: payload.count) }
            return .u64(readLittleEndian(payload, at: 0, as: UInt64.self))
        case let .vringState(index):
            guard payload.count == 8 else { throw .wrongPayloadSize(request: request, expected: 8, got: payload.count) }
            let got = readLittleEndian(payload, at: 0, as: UInt32.self)
            guard got == index else { throw .wrongQueue(request: request, expected: index, got: got) }
            return .vringState(index: got, value: readLittleEndian(payload, at: 4, as: UInt32.self))
        case let .config(offset, size):
            guard payload.count >= 12 else { throw .wrongPayloadSize(request: request, expected: 12 + Int(size), got: payload.count) }
            let gotOffset = readLittleEndian(payload, at: 0, as: UInt32.self)
            let gotSize = readLittleEndian(payload, at: 4, as: UInt32.self)
            guard gotOffset == offset, gotSize == size else {
                throw .wrongConfigRange(expectedOffset: offset, expectedSize: size, offset: gotOffset, size: gotSize)
            }
            guard payload.count == 12 + Int(size) else {
                throw .wrongPayloadSize(request: request, expected: 12 + Int(size), got: payload.count)
            }
            return .config(offset: gotOffset, flags: readLittleEndian(payload, at: 8, as: UInt32.self),
                           bytes: Array(payload.dropFirst(12)))
        }
    }
}
