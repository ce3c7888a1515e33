/// The failures of a network backend, each naming the operation and the reason.
public enum NetBackendError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The host refused an operation: `call` names it, `errno` says why.
    case host(call: String, errno: Int32)
    /// Anything else the backend has to say.
    case other(String)

    /// A sentence that explains the failure.
    public var description: String {
        switch self {
        case let .host(call, errno): "\(call) failed (errno \(errno))"
        case let .other(message): message
        }
    }
}

/// The offloads a driver accepted, as a TAP device takes them (`TUNSETOFFLOAD`): which
/// packets the backend may hand over with a partial checksum or as one large segment.
public struct NetOffloads: OptionSet, Sendable, Hashable {
    /// The `TUN_F_*` bits.
    public let rawValue: UInt32
    /// Creates a set from its `TUN_F_*` bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `TUN_F_CSUM`: packets may carry a partial checksum (`VIRTIO_NET_F_GUEST_CSUM`).
    public static let checksum = NetOffloads(rawValue: 0x01)
    /// `TUN_F_TSO4`: TCP over IPv4 segmentation (`VIRTIO_NET_F_GUEST_TSO4`).
    public static let tso4 = NetOffloads(rawValue: 0x02)
    /// `TUN_F_TSO6`: TCP over IPv6 segmentation (`VIRTIO_NET_F_GUEST_TSO6`).
    public static let tso6 = NetOffloads(rawValue: 0x04)
    /// `TUN_F_TSO_ECN`: segmentation of packets with ECN (`VIRTIO_NET_F_GUEST_ECN`).
    public static let tsoECN = NetOffloads(rawValue: 0x08)
    /// `TUN_F_UFO`: UDP fragmentation (`VIRTIO_NET_F_GUEST_UFO`).
    public static let ufo = NetOffloads(rawValue: 0x10)
}

/// Where one queue pair of a virtio-net device sends and receives packets: a TAP queue
/// on the host, or memory in tests.
///
/// Every packet crossing this interface starts with the 12-byte `struct
/// virtio_net_hdr_v1` (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers; little-endian) followed by the Ethernet frame, exactly as a TAP device
/// opened with `IFF_VNET_HDR` and a header size of 12 exchanges them. The backend never
/// writes `num_buffers`; the device fills it in.
///
/// Backends are non-blocking: ``receive(into:)`` answers `nil` when nothing waits, and
/// the VMM watches ``readinessDescriptor`` to call the device again when packets arrive.
/// Buffers are borrowed for the call only, so a device can move packets straight between
/// the backend and guest memory.
public protocol NetBackend: AnyObject, Sendable {
    /// A descriptor that becomes readable when ``receive(into:)`` has a packet to give,
    /// for the VMM's event loop (`nil` when the backend has no descriptor, as in tests).
    var readinessDescriptor: Int32? { get }

    /// Reads the next waiting packet (header and frame) into `buffers`, in order, and
    /// returns its length in bytes, or `nil` when no packet waits. A packet longer than
    /// the buffers is cut at their end (the returned length is what was stored).
    func receive(into buffers: [UnsafeMutableRawBufferPointer]) throws(NetBackendError) -> Int?
    /// Sends one packet (header and frame) gathered from `buffers`, in order. Returns
    /// `false` when the backend cannot take it now (its queue is full) and dropped it.
    func send(_ buffers: [UnsafeRawBufferPointer]) throws(NetBackendError) -> Bool
    /// Tells the backend which offloaded packets the driver accepts on receive.
    func setOffloads(_ offloads: NetOffloads) throws(NetBackendError)
}
