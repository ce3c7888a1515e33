import HostSystem
import VhostUser

/// Request codes a back-end handles beyond those the front-end library sends.
enum BackendRequestCode {
    static let resetOwner: UInt32 = 4
    static let setConfig: UInt32 = 25
    static let resetDevice: UInt32 = 34
    static let getMaxMemSlots: UInt32 = 36
    static let addMemReg: UInt32 = 37
    static let remMemReg: UInt32 = 38
}

/// One front-end request, decoded: every field checked against its payload's size.
public enum BackendRequest: Sendable, Equatable {
    /// `GET_FEATURES`.
    case getFeatures
    /// `SET_FEATURES`: the features the driver and front-end accepted.
    case setFeatures(UInt64)
    /// `SET_OWNER`.
    case setOwner
    /// `RESET_OWNER` or `RESET_DEVICE`: stop every ring.
    case reset
    /// `GET_PROTOCOL_FEATURES`.
    case getProtocolFeatures
    /// `SET_PROTOCOL_FEATURES`.
    case setProtocolFeatures(UInt64)
    /// `GET_QUEUE_NUM`.
    case getQueueNum
    /// `GET_MAX_MEM_SLOTS`.
    case getMaxMemSlots
    /// `SET_MEM_TABLE`: the regions; their descriptors arrive with the message, one each.
    case setMemTable([VhostUserMemoryRegion])
    /// `ADD_MEM_REG`: one region, its descriptor with the message.
    case addMemoryRegion(VhostUserMemoryRegion)
    /// `REM_MEM_REG`: the region that starts at this guest address with this size.
    case removeMemoryRegion(VhostUserMemoryRegion)
    /// `SET_VRING_NUM`.
    case setVringNum(index: UInt32, size: UInt32)
    /// `SET_VRING_ADDR`: addresses in the front-end's address space.
    case setVringAddr(VhostUserVringAddress)
    /// `SET_VRING_BASE`: the next available index to serve.
    case setVringBase(index: UInt32, base: UInt32)
    /// `GET_VRING_BASE`: stop the ring and answer its next available index.
    case getVringBase(index: UInt32)
    /// `SET_VRING_KICK`, `SET_VRING_CALL`, `SET_VRING_ERR`: the ring and whether a descriptor came.
    case setVringKick(index: UInt8, hasDescriptor: Bool)
    /// See ``setVringKick(index:hasDescriptor:)``.
    case setVringCall(index: UInt8, hasDescriptor: Bool)
    /// See ``setVringKick(index:hasDescriptor:)``.
    case setVringErr(index: UInt8, hasDescriptor: Bool)
    /// `SET_VRING_ENABLE`.
    case setVringEnable(index: UInt32, enabled: Bool)
    /// `GET_CONFIG`: a range of the device's configuration space.
    case getConfig(offset: UInt32, size: UInt32, flags: UInt32)
    /// `SET_CONFIG`: bytes written into the configuration space.
    case setConfig(offset: UInt32, flags: UInt32, data: [UInt8])
    /// A request this back-end does not serve.
    case unsupported(VhostUserRequest)
}

/// Why a front-end message was refused (the connection then ends).
public enum BackendMessageError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The header's flags lack version 1 or carry the reply bit.
    case badFlags(UInt32)
    /// The payload is longer than any request this back-end reads.
    case payloadTooLarge(request: VhostUserRequest, size: UInt32)
    /// The payload's size does not fit the request.
    case badPayloadSize(request: VhostUserRequest, size: Int, expected: String)
    /// The memory table declares more regions than it carries or than the protocol allows.
    case badRegionCount(declared: UInt32, carried: Int)
    /// The number of descriptors passed does not match the request.
    case descriptorMismatch(request: VhostUserRequest, passed: Int, expected: Int)

    /// What was wrong.
    public var description: String {
        switch self {
        case .badFlags(let flags): "front-end message flags 0x\(String(flags, radix: 16)): not version 1 or a reply"
        case .payloadTooLarge(let request, let size): "\(request): a \(size)-byte payload is larger than any request's"
        case .badPayloadSize(let request, let size, let expected): "\(request): a \(size)-byte payload, expected \(expected)"
        case .badRegionCount(let declared, let carried):
            "SET_MEM_TABLE: \(declared) regions declared, \(carried) carried (at most \(VhostUserPayload.maxMemoryRegions))"
        case .descriptorMismatch(let request, let passed, let expected): "\(request): \(passed) descriptors passed, expected \(expected)"
        }
    }
}

/// Decodes front-end messages: a 12-byte header, then its payload.
public enum BackendMessage {
    /// The largest payload read: `SET_CONFIG` with the 256-byte configuration space.
    public static let maxPayload: UInt32 = 12 + 256

    /// Checks a header: version 1, not a reply, a payload no larger than ``maxPayload``.
    public static func header(_ bytes: [UInt8]) throws(BackendMessageError) -> VhostUserHeader {
        precondition(bytes.count == VhostUserHeader.size)
        let request = VhostUserRequest(rawValue: le(bytes[...], 0, UInt32.self))
        let flags = le(bytes[...], 4, UInt32.self)
        let size = le(bytes[...], 8, UInt32.self)
        guard flags & VhostUserFlags.versionMask == VhostUserFlags.version, flags & VhostUserFlags.reply == 0 else {
            throw .badFlags(flags)
        }
        guard size <= maxPayload else { throw .payloadTooLarge(request: request, size: size) }
        return VhostUserHeader(request: request, flags: flags, size: size)
    }

    /// Decodes the payload of `request`, with `descriptors` the number of descriptors that came with it.
    public static func decode(_ request: VhostUserRequest, payload p: [UInt8], descriptors: Int) throws(BackendMessageError) -> BackendRequest {
        func size(_ expected: Int) throws(BackendMessageError) {
            guard p.count == expected else { throw .badPayloadSize(request: request, size: p.count, expected: "\(expected) bytes") }
        }
        func noDescriptors() throws(BackendMessageError) {
            guard descriptors == 0 else { throw .descriptorMismatch(request: request, passed: descriptors, expected: 0) }
        }
        let s = p[...]
        switch request.rawValue {
        case VhostUserRequest.getFeatures.rawValue: return .getFeatures
        case VhostUserRequest.setOwner.rawValue: return .setOwner
        case BackendRequestCode.resetOwner, BackendRequestCode.resetDevice: return .reset
        case VhostUserRequest.getProtocolFeatures.rawValue: return .getProtocolFeatures
        case VhostUserRequest.getQueueNum.rawValue: return .getQueueNum
        case BackendRequestCode.getMaxMemSlots: return .getMaxMemSlots
        case VhostUserRequest.setFeatures.rawValue:
            try size(8); try noDescriptors()
            return .setFeatures(le(s, 0, UInt64.self))
        case VhostUserRequest.setProtocolFeatures.rawValue:
            try size(8); try noDescriptors()
            return .setProtocolFeatures(le(s, 0, UInt64.self))
        case VhostUserRequest.setMemTable.rawValue:
            guard p.count >= 8 else { throw .badPayloadSize(request: request, size: p.count, expected: "at least 8 bytes") }
            let count = le(s, 0, UInt32.self)
            let carried = (p.count - 8) / 32
            guard count <= VhostUserPayload.maxMemoryRegions, Int(count) == carried, p.count == 8 + carried * 32 else {
                throw .badRegionCount(declared: count, carried: carried)
            }
            guard descriptors == Int(count) else { throw .descriptorMismatch(request: request, passed: descriptors, expected: Int(count)) }
            return .setMemTable((0..<carried).map { region(s, 8 + 32 * $0) })
        case BackendRequestCode.addMemReg, BackendRequestCode.remMemReg:
            try size(40)
            let expected = request.rawValue == BackendRequestCode.addMemReg ? 1 : 0
            guard descriptors == expected else { throw .descriptorMismatch(request: request, passed: descriptors, expected: expected) }
            let r = region(s, 8)
            return expected == 1 ? .addMemoryRegion(r) : .removeMemoryRegion(r)
        case VhostUserRequest.setVringNum.rawValue, VhostUserRequest.setVringBase.rawValue,
             VhostUserRequest.getVringBase.rawValue, VhostUserRequest.setVringEnable.rawValue:
            try size(8); try noDescriptors()
            let index = le(s, 0, UInt32.self), value = le(s, 4, UInt32.self)
            switch request {
            case .setVringNum: return .setVringNum(index: index, size: value)
            case .setVringBase: return .setVringBase(index: index, base: value)
            case .getVringBase: return .getVringBase(index: index)
            default: return .setVringEnable(index: index, enabled: value != 0)
            }
        case VhostUserRequest.setVringAddr.rawValue:
            try size(40); try noDescriptors()
            return .setVringAddr(VhostUserVringAddress(index: le(s, 0, UInt32.self), flags: le(s, 4, UInt32.self),
                                                       descriptorTable: le(s, 8, UInt64.self), usedRing: le(s, 16, UInt64.self),
                                                       availableRing: le(s, 24, UInt64.self), log: le(s, 32, UInt64.self)))
        case VhostUserRequest.setVringKick.rawValue, VhostUserRequest.setVringCall.rawValue, VhostUserRequest.setVringErr.rawValue:
            try size(8)
            let value = le(s, 0, UInt64.self)
            let has = value & VhostUserPayload.noDescriptorFlag == 0
            guard descriptors == (has ? 1 : 0) else { throw .descriptorMismatch(request: request, passed: descriptors, expected: has ? 1 : 0) }
            let index = UInt8(truncatingIfNeeded: value)
            switch request {
            case .setVringKick: return .setVringKick(index: index, hasDescriptor: has)
            case .setVringCall: return .setVringCall(index: index, hasDescriptor: has)
            default: return .setVringErr(index: index, hasDescriptor: has)
            }
        case VhostUserRequest.getConfig.rawValue, BackendRequestCode.setConfig:
            guard p.count >= 12 else { throw .badPayloadSize(request: request, size: p.count, expected: "at least 12 bytes") }
            try noDescriptors()
            let offset = le(s, 0, UInt32.self), length = le(s, 4, UInt32.self), flags = le(s, 8, UInt32.self)
            guard p.count == 12 + Int(length) else {
                throw .badPayloadSize(request: request, size: p.count, expected: "12 + \(length) bytes")
            }
            if request == .getConfig { return .getConfig(offset: offset, size: length, flags: flags) }
            return .setConfig(offset: offset, flags: flags, data: Array(p[12...]))
        default:
            return .unsupported(request)
        }
    }

    /// A reply: the header with the reply bit and `payload`.
    public static func reply(_ request: VhostUserRequest, payload: [UInt8]) -> [UInt8] {
        VhostUserHeader(request: request, flags: VhostUserFlags.version | VhostUserFlags.reply, size: UInt32(payload.count)).bytes + payload
    }

    private static func region(_ s: ArraySlice<UInt8>, _ at: Int) -> VhostUserMemoryRegion {
        VhostUserMemoryRegion(guestPhysicalAddress: le(s, at, UInt64.self), size: le(s, at + 8, UInt64.self),
                              userAddress: le(s, at + 16, UInt64.self), mmapOffset: le(s, at + 24, UInt64.self))
    }
}

/// A little-endian integer at `offset` of `bytes`; the caller checked the bounds.
func le<T: FixedWidthInteger>(_ bytes: ArraySlice<UInt8>, _ offset: Int, _: T.Type) -> T {
    var value: T = 0
    let base = bytes.startIndex + offset
    for i in (0..<MemoryLayout<T>.size).reversed() { value = (value << 8) | T(bytes[base + i]) }
    return value
}
