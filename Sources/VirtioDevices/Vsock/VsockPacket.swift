// The virtio-vsock packet header (virtio 1.2, section 5.10.6): 44 little-endian bytes in
// front of every packet on the receive and transmit queues.

/// The operation a vsock packet carries (`VIRTIO_VSOCK_OP_*`).
public enum VsockOp: UInt16, Sendable, CaseIterable {
    /// Asks the peer to accept a connection (`VIRTIO_VSOCK_OP_REQUEST`).
    case request = 1
    /// Accepts a requested connection (`VIRTIO_VSOCK_OP_RESPONSE`).
    case response = 2
    /// Ends a connection at once, or refuses one (`VIRTIO_VSOCK_OP_RST`).
    case reset = 3
    /// Says the sender will receive and/or send no more (`VIRTIO_VSOCK_OP_SHUTDOWN`).
    case shutdown = 4
    /// Carries stream data (`VIRTIO_VSOCK_OP_RW`).
    case readWrite = 5
    /// Tells the peer the sender's buffer space and forwarded count (`VIRTIO_VSOCK_OP_CREDIT_UPDATE`).
    case creditUpdate = 6
    /// Asks the peer for a credit update (`VIRTIO_VSOCK_OP_CREDIT_REQUEST`).
    case creditRequest = 7
}

/// The virtio-vsock constants Cloud Hypervisor's device works with.
public enum Vsock {
    /// The size of the packet header.
    public static let headerSize = 44
    /// The host's context id (`VMADDR_CID_HOST`), the only destination the device serves.
    public static let hostCID: UInt64 = 2
    /// The only socket type: streams (`VIRTIO_VSOCK_TYPE_STREAM`).
    public static let streamType: UInt16 = 1
    /// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more data.
    public static let shutdownReceive: UInt32 = 1
    /// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more data.
    public static let shutdownSend: UInt32 = 2
    /// The largest payload one packet may carry (64 KiB), as Cloud Hypervisor enforces.
    public static let maxPayload = 64 * 1024
    /// The buffer space each connection advertises to the guest (`buf_alloc`), 64 KiB.
    public static let connectionBufferSize: UInt32 = 64 * 1024
    /// A credit update is sent when the guest's view of free buffer space falls below this.
    public static let creditUpdateThreshold: UInt32 = 4 * 1024
    /// How long a host-initiated request or a graceful shutdown may wait for the guest (ms).
    public static let connectionTimeoutMilliseconds: UInt64 = 2000
    /// The most connections one device keeps at once.
    public static let maxConnections = 1023
}

/// The 44-byte header of a vsock packet, as plain values. Encoded and decoded explicitly,
/// little-endian: `src_cid` u64 @0, `dst_cid` u64 @8, `src_port` u32 @16, `dst_port` u32 @20,
/// `len` u32 @24, `type` u16 @28, `op` u16 @30, `flags` u32 @32, `buf_alloc` u32 @36,
/// `fwd_cnt` u32 @40.
public struct VsockHeader: Equatable, Sendable, CustomStringConvertible {
    /// The sender's context id.
    public var sourceCID: UInt64 = 0
    /// The receiver's context id.
    public var destinationCID: UInt64 = 0
    /// The sender's port.
    public var sourcePort: UInt32 = 0
    /// The receiver's port.
    public var destinationPort: UInt32 = 0
    /// The payload length that follows the header.
    public var length: UInt32 = 0
    /// The socket type (1, stream).
    public var type: UInt16 = 0
    /// The operation, raw (an unknown value is kept as it came).
    public var op: UInt16 = 0
    /// Operation flags (the shutdown bits for `SHUTDOWN`).
    public var flags: UInt32 = 0
    /// The sender's receive buffer size for this connection.
    public var bufferAllocation: UInt32 = 0
    /// The bytes the sender has consumed from its receive buffer, wrapping.
    public var forwardCount: UInt32 = 0

    /// An all-zero header.
    public init() {}

    /// A header with the given fields.
    public init(sourceCID: UInt64, destinationCID: UInt64, sourcePort: UInt32, destinationPort: UInt32,
                length: UInt32 = 0, type: UInt16 = Vsock.streamType, op: VsockOp, flags: UInt32 = 0,
                bufferAllocation: UInt32 = 0, forwardCount: UInt32 = 0) {
        self.sourceCID = sourceCID
        self.destinationCID = destinationCID
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.length = length
        self.type = type
        self.op = op.rawValue
        self.flags = flags
        self.bufferAllocation = bufferAllocation
        self.forwardCount = forwardCount
    }

    /// Decodes the first 44 bytes of `bytes`; nil when fewer are there.
    public init?(decoding bytes: some Collection<UInt8>) {
        let b = Array(bytes.prefix(Vsock.headerSize))
        guard b.count == Vsock.headerSize else { return nil }
        func field<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            (0..<MemoryLayout<T>.size).reduce(T(0)) { $0 | T(b[offset + $1]) << ($1 * 8) }
        }
        sourceCID = field(0, UInt64.self)
        destinationCID = field(8, UInt64.self)
        sourcePort = field(16, UInt32.self)
        destinationPort = field(20, UInt32.self)
        length = field(24, UInt32.self)
        type = field(28, UInt16.self)
        op = field(30, UInt16.self)
        flags = field(32, UInt32.self)
        bufferAllocation = field(36, UInt32.self)
        forwardCount = field(40, UInt32.self)
    }

    /// The 44 header bytes.
    public var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Vsock.headerSize)
        func put<T: FixedWidthInteger>(_ value: T) {
            for index in 0..<MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: value >> (index * 8))) }
        }
        put(sourceCID); put(destinationCID); put(sourcePort); put(destinationPort); put(length)
        put(type); put(op); put(flags); put(bufferAllocation); put(forwardCount)
        return bytes
    }

    /// The operation, when it is one of the seven known ones.
    public var operation: VsockOp? { VsockOp(rawValue: op) }

    /// `"REQUEST 3:1234 -> 2:5000 len 0 ..."`, for logs.
    public var description: String {
        let name = operation.map { "\($0)" } ?? "op \(op)"
        return "\(name) \(sourceCID):\(sourcePort) -> \(destinationCID):\(destinationPort) len \(length) type \(type) "
            + "flags \(flags) buf_alloc \(bufferAllocation) fwd_cnt \(forwardCount)"
    }
}

/// A packet the device hands the guest: a header and the payload (`header.length` bytes).
public struct VsockPacket: Equatable, Sendable {
    /// The header.
    public var header: VsockHeader
    /// The payload.
    public var payload: [UInt8]

    /// A packet of `header` and `payload`.
    public init(header: VsockHeader, payload: [UInt8] = []) {
        self.header = header
        self.payload = payload
    }
}
