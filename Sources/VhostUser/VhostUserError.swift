import HostSystem

/// Why a vhost-user exchange failed. Every reply a back-end sends is checked; whatever it
/// sends ends in one of these, never in a crash of the front-end.
public enum VhostUserError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The reply has fewer bytes than a header.
    case shortHeader(count: Int)
    /// The header's version bits are not 1.
    case badVersion(flags: UInt32)
    /// The message lacks the reply flag.
    case notAReply(request: VhostUserRequest, flags: UInt32)
    /// The reply answers another request.
    case unexpectedRequest(expected: VhostUserRequest, got: VhostUserRequest)
    /// The header announces a payload larger than any reply this front-end asks for.
    case payloadTooLarge(request: VhostUserRequest, size: UInt32)
    /// The payload's size is not the one this request's reply has.
    case wrongPayloadSize(request: VhostUserRequest, expected: Int, got: Int)
    /// The message holds fewer or more payload bytes than its header says.
    case payloadLengthMismatch(request: VhostUserRequest, announced: UInt32, actual: Int)
    /// A vring reply names another queue than the one asked about.
    case wrongQueue(request: VhostUserRequest, expected: UInt32, got: UInt32)
    /// A `GET_CONFIG` reply for another range than the one asked for.
    case wrongConfigRange(expectedOffset: UInt32, expectedSize: UInt32, offset: UInt32, size: UInt32)
    /// The back-end refused a request it acknowledged (`REPLY_ACK` with a non-zero status).
    case refused(request: VhostUserRequest, status: UInt64)
    /// The back-end closed the connection.
    case closed(request: VhostUserRequest)
    /// No reply came in time.
    case timedOut(request: VhostUserRequest, milliseconds: Int32)
    /// The back-end passed descriptors with a reply that carries none.
    case unexpectedDescriptors(request: VhostUserRequest, count: Int)
    /// More memory regions than one `SET_MEM_TABLE` carries.
    case tooManyRegions(Int)
    /// The back-end serves fewer queues than the device needs.
    case tooManyQueues(requested: Int, backend: UInt64)
    /// A socket call failed.
    case system(SystemError)
    /// An earlier exchange failed in a way that may have left a reply unread (`reason`); the
    /// connection is out of step and is not used again.
    case connectionBroken(reason: String)

    /// A sentence that explains the failure.
    public var description: String {
        switch self {
        case let .shortHeader(count):
            "the back-end's reply has \(count) byte(s), less than a 12-byte vhost-user header"
        case let .badVersion(flags):
            "the back-end's reply has version \(flags & VhostUserFlags.versionMask) (flags 0x\(String(flags, radix: 16))); vhost-user is version 1"
        case let .notAReply(request, flags):
            "the back-end's answer to \(request) lacks the reply flag (flags 0x\(String(flags, radix: 16)))"
        case let .unexpectedRequest(expected, got):
            "the back-end answered \(got) where \(expected) was asked"
        case let .payloadTooLarge(request, size):
            "the back-end's reply to \(request) announces \(size) payload bytes, more than the \(VhostUserHeader.maxReplyPayload) any reply may have"
        case let .wrongPayloadSize(request, expected, got):
            "the back-end's reply to \(request) has \(got) payload bytes; it must have \(expected)"
        case let .payloadLengthMismatch(request, announced, actual):
            "the back-end's reply to \(request) announces \(announced) payload bytes but carries \(actual)"
        case let .wrongQueue(request, expected, got):
            "the back-end's reply to \(request) is about queue \(got), not queue \(expected)"
        case let .wrongConfigRange(expectedOffset, expectedSize, offset, size):
            "the back-end's GET_CONFIG reply covers \(size) byte(s) at offset \(offset), not the \(expectedSize) at offset \(expectedOffset) asked for"
        case let .refused(request, status):
            "the back-end refused \(request) (status \(status))"
        case let .closed(request):
            "the back-end closed the connection (during \(request))"
        case let .timedOut(request, milliseconds):
            "the back-end did not answer \(request) within \(milliseconds) ms"
        case let .unexpectedDescriptors(request, count):
            "the back-end passed \(count) descriptor(s) with its reply to \(request), which carries none"
        case let .tooManyRegions(count):
            "guest memory has \(count) regions; one SET_MEM_TABLE carries at most \(VhostUserPayload.maxMemoryRegions)"
        case let .tooManyQueues(requested, backend):
            "the device needs \(requested) queue(s) but the back-end serves \(backend)"
        case let .system(error):
            "the vhost-user socket failed: \(error)"
        case let .connectionBroken(reason):
            "the connection to the back-end is no longer used: an earlier exchange failed (\(reason))"
        }
    }
}
