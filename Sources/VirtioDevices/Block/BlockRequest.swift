import GuestMemory
import VirtioQueue

/// virtio-blk's constants (virtio 1.x, section 5.2).
public enum VirtioBlockABI {
    /// The sector size every request counts in, whatever the disk's logical block size.
    public static let sectorSize: UInt64 = 512
    /// The request header: type (u32), reserved (u32), sector (u64).
    public static let headerSize = 16
    /// The bytes of a `GET_ID` answer (the serial, NUL-padded, not terminated when 20 long).
    public static let idBytes = 20
    /// One discard / write-zeroes segment: sector (u64), sector count (u32), flags (u32).
    public static let segmentSize = 16

    /// Feature bits.
    public enum Feature {
        /// `VIRTIO_BLK_F_SIZE_MAX`: `size_max` holds the largest buffer.
        public static let sizeMax: UInt64 = 1 << 1
        /// `VIRTIO_BLK_F_SEG_MAX`: `seg_max` holds the most data buffers per request.
        public static let segMax: UInt64 = 1 << 2
        /// `VIRTIO_BLK_F_RO`: the disk is read-only.
        public static let readOnly: UInt64 = 1 << 5
        /// `VIRTIO_BLK_F_BLK_SIZE`: `blk_size` holds the logical block size.
        public static let blockSize: UInt64 = 1 << 6
        /// `VIRTIO_BLK_F_FLUSH`: flush requests and a write-back cache.
        public static let flush: UInt64 = 1 << 9
        /// `VIRTIO_BLK_F_TOPOLOGY`: the topology fields are valid.
        public static let topology: UInt64 = 1 << 10
        /// `VIRTIO_BLK_F_CONFIG_WCE`: the driver may switch write-back/write-through.
        public static let configWCE: UInt64 = 1 << 11
        /// `VIRTIO_BLK_F_MQ`: `num_queues` request queues.
        public static let multiQueue: UInt64 = 1 << 12
        /// `VIRTIO_BLK_F_DISCARD`.
        public static let discard: UInt64 = 1 << 13
        /// `VIRTIO_BLK_F_WRITE_ZEROES`.
        public static let writeZeroes: UInt64 = 1 << 14
    }

    /// Request types.
    public enum RequestType: UInt32, Sendable {
        /// `VIRTIO_BLK_T_IN`: read sectors into the writable buffers.
        case read = 0
        /// `VIRTIO_BLK_T_OUT`: write the readable buffers to sectors.
        case write = 1
        /// `VIRTIO_BLK_T_FLUSH`.
        case flush = 4
        /// `VIRTIO_BLK_T_GET_ID`: the serial.
        case getID = 8
        /// `VIRTIO_BLK_T_DISCARD`.
        case discard = 11
        /// `VIRTIO_BLK_T_WRITE_ZEROES`.
        case writeZeroes = 13
    }

    /// Request status byte values.
    public enum Status: UInt8, Sendable {
        /// `VIRTIO_BLK_S_OK`.
        case ok = 0
        /// `VIRTIO_BLK_S_IOERR`.
        case ioError = 1
        /// `VIRTIO_BLK_S_UNSUPP`.
        case unsupported = 2
    }
}

/// A byte range of a descriptor chain mapped to guest memory: the pieces of the chain's
/// readable (or writable) bytes between two offsets.
struct ChainSpan {
    /// The guest ranges, in chain order.
    var pieces: [(address: GuestAddress, length: Int)] = []
    /// Their total length.
    var length: Int { pieces.reduce(0) { $0 + $1.length } }

    /// The bytes `[start, start + count)` of `descriptors` taken as one stream.
    init(_ descriptors: ArraySlice<Descriptor>, start: Int, count: Int) {
        pieces.reserveCapacity(descriptors.count)
        Self.forEachPiece(descriptors, start: start, count: count) { descriptor, offset, length in
            // A validated chain's buffers do not wrap the address space.
            pieces.append((GuestAddress(descriptor.address.rawValue + UInt64(offset)), length))
        }
    }

    /// Calls `body` with the descriptor, the offset in it and the length of each piece of the
    /// bytes `[start, start + count)` of `descriptors` taken as one stream, in chain order.
    @inline(__always)
    static func forEachPiece<E: Error>(_ descriptors: ArraySlice<Descriptor>, start: Int, count: Int,
                                       _ body: (Descriptor, Int, Int) throws(E) -> Void) throws(E) {
        var skip = start
        var left = count
        for descriptor in descriptors where left > 0 {
            let length = Int(descriptor.length)
            if skip >= length {
                skip -= length
                continue
            }
            let take = min(length - skip, left)
            try body(descriptor, skip, take)
            left -= take
            skip = 0
        }
    }

    /// Host views of the pieces (valid while the guest memory lives).
    func hostBuffers(in memory: GuestMemory) throws(GuestMemoryError) -> [UnsafeMutableRawBufferPointer] {
        var buffers: [UnsafeMutableRawBufferPointer] = []
        buffers.reserveCapacity(pieces.count)
        for piece in pieces where piece.length > 0 {
            // A piece inside one region (the usual case) maps to one host buffer.
            if let pointer = try? memory.hostAddress(for: piece.address, length: piece.length) {
                buffers.append(UnsafeMutableRawBufferPointer(start: pointer, count: piece.length))
            } else {
                buffers += try memory.hostBuffers(for: piece.address, length: piece.length)
            }
        }
        return buffers
    }
}

extension ChainSpan {
    /// The guest address of the last byte of `descriptors` taken as one stream (the status
    /// byte of a request), or nil when they hold no byte. The same byte as
    /// `ChainSpan(descriptors, start: length - 1, count: 1)`, found without building a span.
    static func lastByte(of descriptors: ArraySlice<Descriptor>) -> GuestAddress? {
        for descriptor in descriptors.reversed() where descriptor.length > 0 {
            // A validated chain's buffers do not wrap the address space.
            return GuestAddress(descriptor.address.rawValue + UInt64(descriptor.length) - 1)
        }
        return nil
    }

    /// Calls `body` with the host view of each piece of the bytes `[start, start + count)`
    /// of `descriptors` taken as one stream, in order: the pieces `ChainSpan(descriptors,
    /// start:count:)` and ``hostBuffers(in:)`` give, without building either array (a piece
    /// that crosses guest memory regions still gives one view per region).
    static func forEachHostBuffer(_ descriptors: ArraySlice<Descriptor>, start: Int, count: Int, in memory: GuestMemory,
                                  _ body: (UnsafeMutableRawBufferPointer) -> Void) throws(GuestMemoryError) {
        try forEachPiece(descriptors, start: start, count: count) { (descriptor, offset, take) throws(GuestMemoryError) in
            if let host = descriptor.host {
                // SAFETY: the queue mapped the whole buffer in one region when it validated it,
                // and [offset, offset + take) lies inside the buffer.
                body(UnsafeMutableRawBufferPointer(start: host + offset, count: take))
                return
            }
            // A buffer across regions (or built by hand): looked up, one view per region.
            // A validated chain's buffers do not wrap the address space.
            let address = GuestAddress(descriptor.address.rawValue + UInt64(offset))
            if let pointer = try? memory.hostAddress(for: address, length: take) {
                body(UnsafeMutableRawBufferPointer(start: pointer, count: take))
            } else {
                for buffer in try memory.hostBuffers(for: address, length: take) { body(buffer) }
            }
        }
    }
}

/// A queue's reusable room for one request's host buffers: serving a request allocates
/// nothing once the arrays have grown to the longest chain seen.
struct RequestScratch {
    /// A read's destinations.
    var destinations: [UnsafeMutableRawBufferPointer] = []
    /// A write's sources.
    var sources: [UnsafeRawBufferPointer] = []
}
