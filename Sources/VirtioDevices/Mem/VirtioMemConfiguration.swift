/// The virtio-mem configuration space (virtio 1.2 section 5.15.4) with Cloud Hypervisor's rules
/// for it: 56 bytes, little-endian, `block_size` at 0, `node_id` at 8, `addr` at 16,
/// `region_size` at 24, `usable_region_size` at 32, `plugged_size` at 40, `requested_size` at 48.
public struct VirtioMemConfiguration: Codable, Equatable, Sendable {
    /// The size of the configuration space in bytes.
    public static let size = 56

    /// Plug granularity in bytes; never changes.
    public var blockSize: UInt64
    /// The NUMA node (meaningful with `VIRTIO_MEM_F_ACPI_PXM`); never changes.
    public var nodeID: UInt16
    /// The guest-physical start of the device's region; never changes.
    public var address: UInt64
    /// The region's size; never changes.
    public var regionSize: UInt64
    /// The part of the region the driver may plug (the whole region, as Cloud Hypervisor keeps it).
    public var usableRegionSize: UInt64
    /// What the driver has plugged.
    public var pluggedSize: UInt64
    /// What the host asks the driver to plug; plug requests beyond it are refused.
    public var requestedSize: UInt64

    /// A configuration for a region of `regionSize` bytes at `address`, nothing plugged or requested.
    public init(blockSize: UInt64, nodeID: UInt16 = 0, address: UInt64, regionSize: UInt64) {
        self.blockSize = blockSize
        self.nodeID = nodeID
        self.address = address
        self.regionSize = regionSize
        usableRegionSize = regionSize
        pluggedSize = 0
        requestedSize = 0
    }

    /// The 56 bytes the driver reads.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.size)
        func put(_ value: UInt64, _ count: Int) { for index in 0..<count { out.append(UInt8(truncatingIfNeeded: value >> (8 * index))) } }
        put(blockSize, 8)
        put(UInt64(nodeID), 2)
        put(0, 6)
        for value in [address, regionSize, usableRegionSize, pluggedSize, requestedSize] { put(value, 8) }
        return out
    }

    /// Checks every address and size is a multiple of `block_size` (Cloud Hypervisor's
    /// `VirtioMemConfig::validate`), naming the first that is not.
    public func validate() throws(VirtioMemError) {
        guard blockSize > 0 else { throw VirtioMemError("block_size is 0") }
        for (name, value) in [("addr", address), ("region_size", regionSize), ("usable_region_size", usableRegionSize),
                              ("plugged_size", pluggedSize), ("requested_size", requestedSize)] where value % blockSize != 0 {
            throw VirtioMemError("\(name) 0x\(String(value, radix: 16)) is not aligned on block_size 0x\(String(blockSize, radix: 16))")
        }
    }

    /// Sets `requested_size` to `size` (Cloud Hypervisor's `VirtioMemConfig::resize`).
    ///
    /// - Throws: ``VirtioMemError`` with Cloud Hypervisor's reason when `size` equals the
    ///   requested size already, passes `region_size` or is not a multiple of `block_size`.
    public mutating func resize(to size: UInt64) throws(VirtioMemError) {
        if size == requestedSize {
            throw VirtioMemError("new size 0x\(String(size, radix: 16)) and requested_size are identical")
        }
        if size > regionSize {
            throw VirtioMemError("new size 0x\(String(size, radix: 16)) is bigger than region_size 0x\(String(regionSize, radix: 16))")
        }
        if size % blockSize != 0 {
            throw VirtioMemError("new size 0x\(String(size, radix: 16)) is not aligned on block_size 0x\(String(blockSize, radix: 16))")
        }
        requestedSize = size
    }

    /// Whether `[address, address + size)` is a non-empty, block-aligned range inside the
    /// usable region (guest-controlled values: an overflowing sum is refused).
    public func isValidRange(_ start: UInt64, size: UInt64) -> Bool {
        guard case let (end, false) = start.addingReportingOverflow(size) else { return false }
        return start % blockSize == 0 && size > 0 && start >= address && end <= address + usableRegionSize
    }
}

/// A virtio-mem refusal or failure, with its reason.
public struct VirtioMemError: Error, Equatable, CustomStringConvertible {
    /// The reason.
    public let description: String

    /// An error with `description`.
    public init(_ description: String) { self.description = description }
}
