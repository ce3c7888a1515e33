// The vhost-user wire format (the vhost-user protocol specification, "Message
// Specification"): a 12-byte little-endian header (request, flags, payload size) followed by
// the payload. Everything here is a pure byte builder or reader.

/// A vhost-user request code (the header's first field).
public struct VhostUserRequest: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The numeric code.
    public let rawValue: UInt32
    /// Wraps a numeric code.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `VHOST_USER_GET_FEATURES` (1): the back-end's virtio feature bits.
    public static let getFeatures = VhostUserRequest(rawValue: 1)
    /// `VHOST_USER_SET_FEATURES` (2): the feature bits the front-end accepted.
    public static let setFeatures = VhostUserRequest(rawValue: 2)
    /// `VHOST_USER_SET_OWNER` (3): this connection owns the back-end's session.
    public static let setOwner = VhostUserRequest(rawValue: 3)
    /// `VHOST_USER_SET_MEM_TABLE` (5): the guest memory regions, one descriptor each.
    public static let setMemTable = VhostUserRequest(rawValue: 5)
    /// `VHOST_USER_SET_VRING_NUM` (8): a queue's size.
    public static let setVringNum = VhostUserRequest(rawValue: 8)
    /// `VHOST_USER_SET_VRING_ADDR` (9): a queue's rings, as front-end virtual addresses.
    public static let setVringAddr = VhostUserRequest(rawValue: 9)
    /// `VHOST_USER_SET_VRING_BASE` (10): the next available-ring index to process.
    public static let setVringBase = VhostUserRequest(rawValue: 10)
    /// `VHOST_USER_GET_VRING_BASE` (11): stops a queue and returns its next index.
    public static let getVringBase = VhostUserRequest(rawValue: 11)
    /// `VHOST_USER_SET_VRING_KICK` (12): the eventfd the driver's notifications arrive on.
    public static let setVringKick = VhostUserRequest(rawValue: 12)
    /// `VHOST_USER_SET_VRING_CALL` (13): the eventfd the back-end signals used buffers on.
    public static let setVringCall = VhostUserRequest(rawValue: 13)
    /// `VHOST_USER_SET_VRING_ERR` (14): the eventfd the back-end signals errors on.
    public static let setVringErr = VhostUserRequest(rawValue: 14)
    /// `VHOST_USER_GET_PROTOCOL_FEATURES` (15).
    public static let getProtocolFeatures = VhostUserRequest(rawValue: 15)
    /// `VHOST_USER_SET_PROTOCOL_FEATURES` (16).
    public static let setProtocolFeatures = VhostUserRequest(rawValue: 16)
    /// `VHOST_USER_GET_QUEUE_NUM` (17): how many queues the back-end serves.
    public static let getQueueNum = VhostUserRequest(rawValue: 17)
    /// `VHOST_USER_SET_VRING_ENABLE` (18): starts or stops a queue.
    public static let setVringEnable = VhostUserRequest(rawValue: 18)
    /// `VHOST_USER_GET_CONFIG` (24): reads the device configuration space.
    public static let getConfig = VhostUserRequest(rawValue: 24)
    /// `VHOST_USER_SET_CONFIG` (25): writes part of the device configuration space.
    public static let setConfig = VhostUserRequest(rawValue: 25)
    /// `VHOST_USER_ADD_MEM_REG` (37): one more guest memory region, its descriptor with it
    /// (with the `CONFIGURE_MEM_SLOTS` protocol feature).
    public static let addMemReg = VhostUserRequest(rawValue: 37)

    /// Whether the back-end answers this request with a payload of its own (a `GET_`
    /// request); the others are answered only when the front-end asks for an acknowledgement.
    public var hasReply: Bool {
        [Self.getFeatures, .getProtocolFeatures, .getQueueNum, .getVringBase, .getConfig].contains(self)
    }

    /// The request's name in the specification.
    public var description: String {
        switch rawValue {
        case 1: "GET_FEATURES"
        case 2: "SET_FEATURES"
        case 3: "SET_OWNER"
        case 5: "SET_MEM_TABLE"
        case 8: "SET_VRING_NUM"
        case 9: "SET_VRING_ADDR"
        case 10: "SET_VRING_BASE"
        case 11: "GET_VRING_BASE"
        case 12: "SET_VRING_KICK"
        case 13: "SET_VRING_CALL"
        case 14: "SET_VRING_ERR"
        case 15: "GET_PROTOCOL_FEATURES"
        case 16: "SET_PROTOCOL_FEATURES"
        case 17: "GET_QUEUE_NUM"
        case 18: "SET_VRING_ENABLE"
        case 24: "GET_CONFIG"
        case 25: "SET_CONFIG"
        case 37: "ADD_MEM_REG"
        default: "request \(rawValue)"
        }
    }
}

/// The header's flag bits.
public enum VhostUserFlags {
    /// The protocol version in bits 0-1; this is version 1.
    public static let version: UInt32 = 0x1
    /// The mask of the version bits.
    public static let versionMask: UInt32 = 0x3
    /// Set on every message from the back-end.
    public static let reply: UInt32 = 0x4
    /// The front-end asks for an acknowledgement (`REPLY_ACK`).
    public static let needReply: UInt32 = 0x8
}

/// `VHOST_USER_F_PROTOCOL_FEATURES`: the virtio feature bit (30) that says the back-end
/// has protocol features; it is a vhost-user bit, never offered to the guest.
public let vhostUserProtocolFeaturesBit: UInt64 = 1 << 30

/// The flags of `GET_CONFIG` and `SET_CONFIG`, as the rust-vmm `vhost` crate (Cloud
/// Hypervisor's) sends them.
public enum VhostUserConfigFlags {
    /// `WRITABLE`: the access concerns the writable fields.
    public static let writable: UInt32 = 0x1
    /// `LIVE_MIGRATION`: the access is part of a live migration.
    public static let liveMigration: UInt32 = 0x2
}

/// Protocol feature bits (`VHOST_USER_PROTOCOL_F_*`).
public struct VhostUserProtocolFeatures: OptionSet, Hashable, Sendable {
    /// The bits.
    public let rawValue: UInt64
    /// Wraps bits.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// `MQ` (0): several queue pairs; `GET_QUEUE_NUM` is answered.
    public static let multiQueue = VhostUserProtocolFeatures(rawValue: 1 << 0)
    /// `LOG_SHMFD` (1): dirty logging through shared memory.
    public static let logSharedMemory = VhostUserProtocolFeatures(rawValue: 1 << 1)
    /// `REPLY_ACK` (3): requests with `needReply` are acknowledged.
    public static let replyAck = VhostUserProtocolFeatures(rawValue: 1 << 3)
    /// `CONFIG` (9): `GET_CONFIG` and `SET_CONFIG`.
    public static let config = VhostUserProtocolFeatures(rawValue: 1 << 9)
    /// `INFLIGHT_SHMFD` (12): in-flight request tracking in shared memory.
    public static let inflightSharedMemory = VhostUserProtocolFeatures(rawValue: 1 << 12)
    /// `CONFIGURE_MEM_SLOTS` (15): memory regions added and removed one by one.
    public static let configureMemorySlots = VhostUserProtocolFeatures(rawValue: 1 << 15)
}

/// The header of a message.
public struct VhostUserHeader: Equatable, Sendable {
    /// The encoded size of a header.
    public static let size = 12
    /// The largest payload this front-end accepts from a back-end: the biggest reply it
    /// asks for is a `GET_CONFIG` of at most 256 configuration bytes.
    public static let maxReplyPayload: UInt32 = 12 + 256

    /// The request the message is or answers.
    public var request: VhostUserRequest
    /// The flag bits (``VhostUserFlags``).
    public var flags: UInt32
    /// The payload's size in bytes.
    public var size: UInt32

    /// A header.
    public init(request: VhostUserRequest, flags: UInt32, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    /// The 12 bytes on the wire.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.size)
        out.appendLittleEndian(request.rawValue)
        out.appendLittleEndian(flags)
        out.appendLittleEndian(size)
        return out
    }
}

/// One guest memory region as `SET_MEM_TABLE` describes it.
public struct VhostUserMemoryRegion: Equatable, Sendable {
    /// The region's guest-physical start.
    public var guestPhysicalAddress: UInt64
    /// Its size in bytes.
    public var size: UInt64
    /// Where the front-end mapped it (the addresses of `SET_VRING_ADDR` are in this space).
    public var userAddress: UInt64
    /// The region's offset in the file whose descriptor goes with it.
    public var mmapOffset: UInt64

    /// A region.
    public init(guestPhysicalAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.userAddress = userAddress
        self.mmapOffset = mmapOffset
    }
}

/// A queue's ring addresses (`SET_VRING_ADDR`), in the front-end's virtual address space.
public struct VhostUserVringAddress: Equatable, Sendable {
    /// The queue index.
    public var index: UInt32
    /// Flags (bit 0: log used-ring writes); 0 here.
    public var flags: UInt32
    /// The descriptor table.
    public var descriptorTable: UInt64
    /// The used ring.
    public var usedRing: UInt64
    /// The available ring.
    public var availableRing: UInt64
    /// The used-ring log address (unused without dirty logging).
    public var log: UInt64

    /// A queue's addresses.
    public init(index: UInt32, flags: UInt32 = 0, descriptorTable: UInt64, usedRing: UInt64, availableRing: UInt64, log: UInt64 = 0) {
        self.index = index
        self.flags = flags
        self.descriptorTable = descriptorTable
        self.usedRing = usedRing
        self.availableRing = availableRing
        self.log = log
    }
}

/// Builders of request payloads.
public enum VhostUserPayload {
    /// The most regions one `SET_MEM_TABLE` carries (`VHOST_MEMORY_BASELINE_NREGIONS`).
    public static let maxMemoryRegions = 8
    /// `VHOST_USER_VRING_NOFD_MASK`: set in a kick/call/err payload that passes no descriptor.
    public static let noDescriptorFlag: UInt64 = 1 << 8

    /// A `u64` payload.
    public static func u64(_ value: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(value)
        return out
    }

    /// A vring state (`index`, `num`): `SET_VRING_NUM`, `SET_VRING_BASE`, `GET_VRING_BASE`, `SET_VRING_ENABLE`.
    public static func vringState(index: UInt32, value: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(index)
        out.appendLittleEndian(value)
        return out
    }

    /// A vring address payload.
    public static func vringAddress(_ address: VhostUserVringAddress) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(address.index)
        out.appendLittleEndian(address.flags)
        out.appendLittleEndian(address.descriptorTable)
        out.appendLittleEndian(address.usedRing)
        out.appendLittleEndian(address.availableRing)
        out.appendLittleEndian(address.log)
        return out
    }

    /// The memory table: the region count, padding, then each region.
    public static func memoryTable(_ regions: [VhostUserMemoryRegion]) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(UInt32(regions.count))
        out.appendLittleEndian(UInt32(0))
        for region in regions {
            out.appendLittleEndian(region.guestPhysicalAddress)
            out.appendLittleEndian(region.size)
            out.appendLittleEndian(region.userAddress)
            out.appendLittleEndian(region.mmapOffset)
        }
        return out
    }

    /// An `ADD_MEM_REG` payload: eight bytes of padding, then the region.
    public static func memoryRegion(_ region: VhostUserMemoryRegion) -> [UInt8] {
        var out = u64(0)
        out.appendLittleEndian(region.guestPhysicalAddress)
        out.appendLittleEndian(region.size)
        out.appendLittleEndian(region.userAddress)
        out.appendLittleEndian(region.mmapOffset)
        return out
    }

    /// A kick, call or error eventfd payload: the queue index, and the no-descriptor flag when none goes with it.
    public static func vringDescriptor(index: UInt8, hasDescriptor: Bool) -> [UInt8] {
        u64(UInt64(index) | (hasDescriptor ? 0 : noDescriptorFlag))
    }

    /// A `GET_CONFIG` request: offset, size, flags, then `size` zero bytes for the answer.
    public static func config(offset: UInt32, size: UInt32, flags: UInt32 = 0) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(offset)
        out.appendLittleEndian(size)
        out.appendLittleEndian(flags)
        out += [UInt8](repeating: 0, count: Int(size))
        return out
    }

    /// A `SET_CONFIG` request: offset, size, flags, then the bytes written.
    public static func setConfig(offset: UInt32, flags: UInt32, bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(offset)
        out.appendLittleEndian(UInt32(bytes.count))
        out.appendLittleEndian(flags)
        return out + bytes
    }

    /// A whole message: the header (version 1 and `flags`) and `payload`.
    public static func message(_ request: VhostUserRequest, flags: UInt32 = 0, payload: [UInt8] = []) -> [UInt8] {
        VhostUserHeader(request: request, flags: VhostUserFlags.version | flags, size: UInt32(payload.count)).bytes + payload
    }
}

extension Array where Element == UInt8 {
    /// Appends `value` in little-endian order.
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        var v = value.littleEndian
        for _ in 0..<MemoryLayout<T>.size {
            append(UInt8(truncatingIfNeeded: v))
            v >>= 8
        }
    }
}

/// Reads a little-endian integer at `offset` of `bytes`; the caller checked the bounds.
func readLittleEndian<T: FixedWidthInteger>(_ bytes: ArraySlice<UInt8>, at offset: Int, as: T.Type) -> T {
    var value: T = 0
    let base = bytes.startIndex + offset
    for i in (0..<MemoryLayout<T>.size).reversed() {
        value = (value << 8) | T(bytes[base + i])
    }
    return value
}
