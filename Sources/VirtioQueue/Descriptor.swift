import GuestMemory

/// The flag bits of a split-virtqueue descriptor (`struct virtq_desc.flags`).
public struct DescriptorFlags: OptionSet, Sendable, Hashable {
    /// The raw 16-bit flags as the driver wrote them.
    public let rawValue: UInt16
    /// Wraps raw descriptor flags.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// `VIRTQ_DESC_F_NEXT`: the chain continues at the `next` field.
    public static let next = DescriptorFlags(rawValue: 1)
    /// `VIRTQ_DESC_F_WRITE`: the buffer is device-writable (otherwise device-readable).
    public static let write = DescriptorFlags(rawValue: 2)
    /// `VIRTQ_DESC_F_INDIRECT`: the buffer is a table of further descriptors.
    public static let indirect = DescriptorFlags(rawValue: 4)
}

/// One validated buffer of a descriptor chain: a guest range the device may read or write.
///
/// The range is known to be backed by guest memory (writable memory when `isWritable`)
/// and not to overflow the address space.
public struct Descriptor: @unchecked Sendable, Hashable {
    /// The guest physical address of the buffer.
    public let address: GuestAddress
    /// The buffer length in bytes.
    public let length: UInt32
    /// Whether the device may write the buffer (`VIRTQ_DESC_F_WRITE`); otherwise it may only read it.
    public let isWritable: Bool
    /// The buffer's host address, found when the queue validated it, if the whole buffer lies
    /// in one region of that guest memory; nil when it crosses regions, is empty, or the
    /// descriptor was built by hand. Valid while that `GuestMemory` lives; writing through it
    /// bypasses dirty tracking. Not part of equality: it is where `address` is mapped.
    public let host: UnsafeMutableRawPointer?

    /// Describes a buffer (no validation; chains build these after checking them, with `host`
    /// from ``GuestMemory/checkedHostAddress(_:length:writing:)``).
    public init(address: GuestAddress, length: UInt32, isWritable: Bool, host: UnsafeMutableRawPointer? = nil) {
        self.address = address
        self.length = length
        self.isWritable = isWritable
        self.host = host
    }

    /// Equal buffers: the same guest range and direction.
    public static func == (lhs: Descriptor, rhs: Descriptor) -> Bool {
        lhs.address == rhs.address && lhs.length == rhs.length && lhs.isWritable == rhs.isWritable
    }

    /// Hashes the guest range and direction.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(address)
        hasher.combine(length)
        hasher.combine(isWritable)
    }
}

/// A descriptor chain popped from a virtqueue and fully validated.
///
/// The device-readable descriptors always come first, followed by the device-writable
/// ones: a chain that breaks this rule is refused when popped. Hand `head` back to
/// `SplitQueue.addUsed(head:length:in:)` once the request is done.
public struct DescriptorChain: Sendable, Hashable {
    /// The index of the chain's first descriptor in the descriptor table.
    public let head: UInt16
    /// The chain's buffers in order (with an indirect table, the table's entries).
    public let descriptors: [Descriptor]
    /// Whether the buffers came from an indirect descriptor table.
    public let isIndirect: Bool
    /// The position in `descriptors` of the first device-writable buffer (`descriptors.count` if none).
    public let firstWritable: Int

    /// Builds a chain, checking that no readable descriptor follows a writable one.
    ///
    /// - Throws: `QueueError.readableAfterWritable` naming the offending position.
    public init(head: UInt16, descriptors: [Descriptor], isIndirect: Bool = false) throws(QueueError) {
        var firstWritable = descriptors.count
        for (position, descriptor) in descriptors.enumerated() {
            if descriptor.isWritable {
                if firstWritable == descriptors.count { firstWritable = position }
            } else if firstWritable < descriptors.count {
                throw .readableAfterWritable(head: head, position: position)
            }
        }
        self.head = head
        self.descriptors = descriptors
        self.isIndirect = isIndirect
        self.firstWritable = firstWritable
    }

    /// The device-readable buffers (the request the driver sent).
    public var readable: ArraySlice<Descriptor> { descriptors[..<firstWritable] }
    /// The device-writable buffers (room for the device's response).
    public var writable: ArraySlice<Descriptor> { descriptors[firstWritable...] }
    /// The total length of the device-readable buffers.
    public var readableLength: Int { readable.reduce(0) { $0 + Int($1.length) } }
    /// The total length of the device-writable buffers.
    public var writableLength: Int { writable.reduce(0) { $0 + Int($1.length) } }
}
