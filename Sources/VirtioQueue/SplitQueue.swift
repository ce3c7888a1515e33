import GuestMemory
import Synchronization

/// The device side of a split virtqueue (virtio 1.x, section 2.7).
///
/// The queue holds only configuration and the device's private indices; the rings live
/// in guest memory, passed to each call. Guest memory is foreign: every index and
/// descriptor is copied out once, validated, then used, and any breach of the virtio
/// rules is reported as a `QueueError` without touching the queue's state, so the
/// caller can set `DEVICE_NEEDS_RESET`.
///
/// ```swift
/// var queue = try SplitQueue(maxSize: 256)
/// queue.size = 128
/// queue.descriptorTable = GuestAddress(0x10000)
/// queue.availableRing = GuestAddress(0x11000)
/// queue.usedRing = GuestAddress(0x12000)
/// try queue.activate(in: memory)
/// while let chain = try queue.popDescriptorChain(in: memory) {
///     var writer = ChainWriter(chain, memory: memory)
///     try writer.write(UInt8(0))
///     try queue.addUsed(head: chain.head, length: UInt32(writer.bytesWritten), in: memory)
/// }
/// if try queue.needsNotification(in: memory) { /* signal the guest */ }
/// ```
public struct SplitQueue: Sendable {
    /// The largest queue size the virtio specification allows for a split queue.
    public static let maximumSize: UInt16 = 32768
    /// Size in bytes of one descriptor table entry (`struct virtq_desc`).
    public static let descriptorSize = 16
    /// `VIRTQ_AVAIL_F_NO_INTERRUPT`: the driver asks not to be interrupted (without event index).
    public static let availableNoInterrupt: UInt16 = 1
    /// `VIRTQ_USED_F_NO_NOTIFY`: the device asks not to be notified (without event index).
    public static let usedNoNotify: UInt16 = 1

    /// The largest size the device offers for this queue.
    public let maxSize: UInt16
    /// The queue size the driver chose. Changing it takes the queue out of the ready state.
    public var size: UInt16 { didSet { isReady = false } }
    /// Guest address of the descriptor table. Changing it takes the queue out of the ready state.
    public var descriptorTable = GuestAddress.zero { didSet { isReady = false } }
    /// Guest address of the available ring. Changing it takes the queue out of the ready state.
    public var availableRing = GuestAddress.zero { didSet { isReady = false } }
    /// Guest address of the used ring. Changing it takes the queue out of the ready state.
    public var usedRing = GuestAddress.zero { didSet { isReady = false } }
    /// Whether `VIRTIO_F_EVENT_IDX` was negotiated (event-index notification suppression).
    public var eventIndex = false
    /// Whether `activate(in:)` validated the current configuration.
    public internal(set) var isReady = false
    /// The available index of the next chain to pop (the device's `last_avail_idx`).
    public var nextAvailable: UInt16 = 0
    /// The used index the next `addUsed` writes (published as `used->idx`).
    public var nextUsed: UInt16 = 0
    /// The used index at the last notification decision with event index, if any.
    public internal(set) var signalledUsed: UInt16?
    /// The available index as last read from the ring (with acquire ordering), or `nil`
    /// when it must be read again. The chains before it were published before that read,
    /// so they can be popped without reading the index once per chain; the index is read
    /// again when they run out.
    private var knownAvailable: UInt16?
    /// Used entries written by ``stageUsed(head:length:in:)`` and not yet published (the
    /// used index in guest memory is `nextUsed - stagedUsed`).
    public private(set) var stagedUsed: UInt16 = 0
    /// Maps the driver's addresses (rings and buffers) to guest physical addresses, for a
    /// device behind a virtual IOMMU; `nil` when the driver's addresses are guest physical.
    /// It survives ``reset()``. Changing it takes the queue out of the ready state.
    public var translator: (any AddressTranslator)? { didSet { isReady = false } }
    /// Where the three ring areas are in guest physical memory: the configured addresses,
    /// or their translations, fixed by activation.
    private var mappedRings = (descriptors: GuestAddress.zero, available: GuestAddress.zero, used: GuestAddress.zero)
    /// The storage of the chain popped last, reused by the next pop once that chain is
    /// dropped (then no pop allocates).
    private var spareDescriptors: [Descriptor] = []
    /// Whether ``translator`` was set at activation (checked per descriptor without copying it).
    private var translates = false
    /// The host addresses of the ring areas in `ringMemory`, the guest memory the queue served
    /// last (looked up once, not per chain); cleared whenever the rings are mapped again.
    private var ringHosts = RingHosts()
    /// The memory `ringHosts` points into; holding it keeps those mappings alive.
    private var ringMemory: GuestMemory?

    /// Where each ring area lies in one guest memory's host mappings (nil for an area that
    /// crosses regions: that one is accessed through the memory's checked accessors).
    private struct RingHosts: @unchecked Sendable {
        var table: UnsafeMutableRawPointer?
        var available: UnsafeMutableRawPointer?
        var used: UnsafeMutableRawPointer?
    }

    /// Creates a queue that offers `maxSize` entries; its size starts at `maxSize`.
    ///
    /// - Throws: `.invalidMaxSize` unless `maxSize` is a power of two between 1 and 32768.
    public init(maxSize: UInt16) throws(QueueError) {
        guard maxSize != 0, maxSize <= Self.maximumSize, maxSize & (maxSize - 1) == 0 else {
            throw .invalidMaxSize(maxSize)
        }
        self.maxSize = maxSize
        self.size = maxSize
    }

    /// Bytes the descriptor table occupies for `size` entries.
    public static func descriptorTableLength(size: UInt16) -> Int { descriptorSize * Int(size) }
    /// Bytes the available ring occupies for `size` entries (flags, idx, ring, used_event).
    public static func availableRingLength(size: UInt16) -> Int { 6 + 2 * Int(size) }
    /// Bytes the used ring occupies for `size` entries (flags, idx, ring, avail_event).
    public static func usedRingLength(size: UInt16) -> Int { 6 + 8 * Int(size) }

    /// Checks the configuration: the size is a power of two no larger than `maxSize`, and
    /// each ring area is aligned (16, 2, 4 bytes) and entirely inside guest memory.
    ///
    /// - Throws: `.invalidSize`, `.misalignedRing`, `.ringOutOfMemory`.
    /// With a ``translator``, the translated areas are checked; an area it does not map
    /// entirely is `.ringNotMapped`.
    public func validate(in memory: GuestMemory) throws(QueueError) {
        _ = try mappedAreas(in: memory)
    }

    /// Checks the layout, translates the ring areas and checks them against guest memory.
    private func mappedAreas(in memory: GuestMemory?) throws(QueueError) -> (GuestAddress, GuestAddress, GuestAddress) {
        try checkLayout()
        var mapped: [GuestAddress] = []
        for (part, address, _, length) in areas {
            var physical = address
            if let translator {
                guard let value = translator.translate(address.rawValue, length: UInt64(length)) else {
                    throw .ringNotMapped(part, address: address.rawValue, length: length)
                }
                physical = GuestAddress(value)
            }
            if let memory, !memory.isValidRange(physical, length: length) {
                throw .ringOutOfMemory(part, address: physical, length: length)
            }
            mapped.append(physical)
        }
        return (mapped[0], mapped[1], mapped[2])
    }

    /// The three ring areas: part, address, alignment and length.
    private var areas: [(QueuePart, GuestAddress, Int, Int)] {
        [
            (.descriptorTable, descriptorTable, 16, Self.descriptorTableLength(size: size)),
            (.availableRing, availableRing, 2, Self.availableRingLength(size: size)),
            (.usedRing, usedRing, 4, Self.usedRingLength(size: size)),
        ]
    }

    /// Checks the size and the rings' alignment, without guest memory.
    ///
    /// - Throws: `.invalidSize`, `.misalignedRing`.
    func checkLayout() throws(QueueError) {
        guard size != 0, size <= maxSize, size & (size - 1) == 0 else {
            throw .invalidSize(size: size, maxSize: maxSize)
        }
        for (part, address, alignment, _) in areas where !address.isAligned(to: UInt64(alignment)) {
            throw .misalignedRing(part, address: address, alignment: alignment)
        }
    }

    /// Translates the rings and marks the queue ready (a restore without guest memory at hand).
    mutating func markReady() throws(QueueError) {
        mappedRings = try mappedAreas(in: nil)
        ringMemory = nil
        translates = translator != nil
        knownAvailable = nil
        stagedUsed = 0
        isReady = true
    }

    /// Sets the event-index bookkeeping of a restored queue.
    mutating func restoreSignalled(_ value: UInt16?) { signalledUsed = value }

    /// Validates the configuration and marks the queue ready (the driver wrote `queue_enable`).
    ///
    /// - Throws: whatever `validate(in:)` throws; the queue then stays not ready.
    public mutating func activate(in memory: GuestMemory) throws(QueueError) {
        mappedRings = try mappedAreas(in: memory)
        ringMemory = nil
        translates = translator != nil
        knownAvailable = nil
        stagedUsed = 0
        isReady = true
    }

    /// Returns the queue to its reset state: not ready, size `maxSize`, zero addresses and indices.
    public mutating func reset() {
        size = maxSize
        descriptorTable = .zero
        availableRing = .zero
        usedRing = .zero
        eventIndex = false
        nextAvailable = 0
        nextUsed = 0
        signalledUsed = nil
        knownAvailable = nil
        stagedUsed = 0
        mappedRings = (.zero, .zero, .zero)
        ringMemory = nil
        isReady = false
    }

    // MARK: - Guest memory accessors

    /// The ring areas' host addresses in `memory`, looked up on the first use with it.
    @inline(__always)
    private mutating func hosts(in memory: GuestMemory) -> RingHosts {
        if ringMemory !== memory { mapRings(in: memory) }
        return ringHosts
    }

    private mutating func mapRings(in memory: GuestMemory) {
        let queueSize = Int(size)
        ringHosts = RingHosts(
            table: try? memory.hostAddress(for: mappedRings.descriptors, length: 16 * queueSize),
            available: try? memory.hostAddress(for: mappedRings.available, length: 6 + 2 * queueSize),
            // Written through: only where the region is writable (a read-only one is refused
            // by the checked accessor instead of faulting).
            used: (try? memory.checkedHostAddress(mappedRings.used, length: 6 + 8 * queueSize, writing: true)) ?? nil)
        ringMemory = memory
    }

    private var availableIndexAddress: GuestAddress { GuestAddress(mappedRings.available.rawValue + 2) }
    private var usedEventAddress: GuestAddress { GuestAddress(mappedRings.available.rawValue + 4 + 2 * UInt64(size)) }
    private var usedIndexAddress: GuestAddress { GuestAddress(mappedRings.used.rawValue + 2) }
    private var availableEventAddress: GuestAddress { GuestAddress(mappedRings.used.rawValue + 4 + 8 * UInt64(size)) }

    private func check() throws(QueueError) {
        guard isReady else { throw .notReady }
    }

    /// Runs a guest memory access, wrapping its error.
    private static func access<T>(_ body: () throws(GuestMemoryError) -> T) throws(QueueError) -> T {
        do { return try body() } catch { throw .memory(error) }
    }

    /// The available index the driver last published, read with acquire ordering.
    ///
    /// - Throws: `.notReady`, `.memory`.
    public func availableIndex(in memory: GuestMemory) throws(QueueError) -> UInt16 {
        try check()
        let address = availableIndexAddress
        return try Self.access { () throws(GuestMemoryError) in try memory.loadAcquire(UInt16.self, at: address) }
    }

    /// The used index as it stands in the used ring (what a device serving the queue outside
    /// this process, a vhost-user back-end, has published), read with acquire ordering.
    ///
    /// - Throws: `.notReady`, `.memory`.
    public func publishedUsedIndex(in memory: GuestMemory) throws(QueueError) -> UInt16 {
        try check()
        let address = GuestAddress(mappedRings.used.rawValue &+ 2)
        return try Self.access { () throws(GuestMemoryError) in try memory.loadAcquire(UInt16.self, at: address) }
    }

    /// How many chains the driver has made available and the device has not popped yet.
    ///
    /// - Throws: `.availableIndexJump` when the driver moved its index more than `size` ahead.
    public func pendingCount(in memory: GuestMemory) throws(QueueError) -> Int {
        let published = try availableIndex(in: memory)
        let pending = published &- nextAvailable
        guard pending <= size else {
            throw .availableIndexJump(lastSeen: nextAvailable, published: published, size: size)
        }
        return Int(pending)
    }

    /// Chains known to be available and not popped: from the cached available index when
    /// it still covers chains after `nextAvailable`, otherwise from a fresh read (cached).
    ///
    /// - Throws: `.notReady`, `.availableIndexJump`, `.memory`.
    private mutating func knownPending(in memory: GuestMemory) throws(QueueError) -> Int {
        try check()
        if let knownAvailable {
            let pending = knownAvailable &- nextAvailable
            // Zero: the known chains ran out. Above `size`: `nextAvailable` was moved
            // (a restore or a caller) past the cached index; read it again.
            if pending != 0, pending <= size { return Int(pending) }
        }
        let pending = try pendingCount(in: memory)
        knownAvailable = nextAvailable &+ UInt16(pending)
        return pending
    }

    // MARK: - Popping chains

    /// Takes the next available descriptor chain, validating every descriptor, or returns
    /// `nil` when the driver has made nothing new available.
    ///
    /// On success `nextAvailable` advances by one; on error nothing changes and the
    /// device should be marked `DEVICE_NEEDS_RESET`.
    ///
    /// - Throws: `.notReady`, `.availableIndexJump`, `.headIndexOutOfRange`,
    ///   `.nextIndexOutOfRange`, `.chainTooLong`, `.descriptorAddressOverflow`,
    ///   `.descriptorOutOfMemory`, `.emptyIndirectTable`, `.indirectTableLengthNotMultiple`,
    ///   `.indirectTableTooLarge`, `.indirectTableOutOfMemory`, `.nestedIndirect`,
    ///   `.indirectWithNext`, `.readableAfterWritable`, `.memory`.
    ///
    /// The available index is read (with acquire ordering, so the ring entries before it
    /// are read after it) only when the chains known from the last read have all been
    /// popped; a batch of chains costs one read of the index.
    public mutating func popDescriptorChain(in memory: GuestMemory) throws(QueueError) -> DescriptorChain? {
        guard try knownPending(in: memory) > 0 else { return nil }
        let slot = UInt64(nextAvailable % size)
        let rings = hosts(in: memory)
        let head: UInt16
        if let available = rings.available {
            // SAFETY: slot < size, so the entry lies in the available ring, mapped in one live region.
            head = UInt16(littleEndian: (available + 4 + 2 * Int(slot)).loadUnaligned(as: UInt16.self))
        } else {
            let slotAddress = GuestAddress(mappedRings.available.rawValue + 4 + 2 * slot)
            head = try Self.access { () throws(GuestMemoryError) in try memory.read(UInt16.self, at: slotAddress) }
        }
        var buffers = spareDescriptors
        spareDescriptors = []
        // Unique again when the last chain is gone: emptied in place, no allocation.
        buffers.removeAll(keepingCapacity: true)
        let chain = try walkChain(head: head, into: &buffers, table: rings.table, in: memory)
        spareDescriptors = buffers
        nextAvailable &+= 1
        return chain
    }

    /// Gives back the chain popped last: the next ``popDescriptorChain(in:)`` returns it
    /// again (a device that cannot serve it now, for example under a rate limit). Call it
    /// only right after a successful pop, before ``addUsed(head:length:in:)``.
    public mutating func undoPop() {
        nextAvailable &-= 1
    }

    /// One descriptor as copied out of guest memory, before validation.
    private struct RawDescriptor {
        let address: UInt64
        let length: UInt32
        let flags: DescriptorFlags
        let next: UInt16

        /// Decodes the two little-endian 64-bit halves of a `struct virtq_desc`.
        init(low: UInt64, high: UInt64) {
            address = low
            length = UInt32(truncatingIfNeeded: high)
            flags = DescriptorFlags(rawValue: UInt16(truncatingIfNeeded: high >> 32))
            next = UInt16(truncatingIfNeeded: high >> 48)
        }
    }

    /// Follows the chain starting at `head` and returns its validated buffers, collected in
    /// `buffers` (empty on entry).
    private func walkChain(head: UInt16, into buffers: inout [Descriptor], table host: UnsafeMutableRawPointer?,
                           in memory: GuestMemory) throws(QueueError) -> DescriptorChain {
        guard head < size else { throw .headIndexOutOfRange(head: head, size: size) }
        let table = mappedRings.descriptors.rawValue
        // The table was checked at activation; when it lies in one region (as it does unless
        // it straddles two), `host` is its host address, looked up once (``hosts(in:)``).
        buffers.reserveCapacity(4)
        var index = head
        var count = 0
        while true {
            count += 1
            guard count <= Int(size) else { throw .chainTooLong(head: head, limit: Int(size)) }
            // Both halves lie inside the validated table; each byte is read exactly once.
            let raw: RawDescriptor
            if let host {
                // SAFETY: index < size, so the entry's 16 bytes lie inside the table that
                // hostAddress found mapped in one live region.
                let entry = host + Int(index) * 16
                raw = RawDescriptor(low: UInt64(littleEndian: entry.loadUnaligned(as: UInt64.self)),
                                    high: UInt64(littleEndian: (entry + 8).loadUnaligned(as: UInt64.self)))
            } else {
                let entry = table + UInt64(index) * 16
                raw = try Self.access { () throws(GuestMemoryError) in
                    RawDescriptor(low: try memory.read(UInt64.self, at: GuestAddress(entry)),
                                  high: try memory.read(UInt64.self, at: GuestAddress(entry + 8)))
                }
            }
            if raw.flags.contains(.indirect) {
                guard !raw.flags.contains(.next) else { throw .indirectWithNext(head: head) }
                let (address, entryCount) = try indirectTable(raw, head: head, in: memory)
                if let tableHost = try? memory.checkedHostAddress(address, length: Int(raw.length), writing: false) {
                    // In one region (as a driver's kmalloc'd table is): read in place, no copy.
                    try walkIndirect(count: entryCount, head: head, into: &buffers, in: memory) { entry in
                        // SAFETY: entry < entryCount, so its 16 bytes lie inside the table that
                        // checkedHostAddress found mapped in one live region.
                        let at = tableHost + entry * 16
                        return RawDescriptor(low: UInt64(littleEndian: at.loadUnaligned(as: UInt64.self)),
                                             high: UInt64(littleEndian: (at + 8).loadUnaligned(as: UInt64.self)))
                    }
                } else {
                    let bytes = try Self.access { () throws(GuestMemoryError) in
                        try memory.readBytes(count: Int(raw.length), at: address)
                    }
                    try walkIndirect(count: entryCount, head: head, into: &buffers, in: memory) { entry in
                        RawDescriptor(low: Self.littleEndian(bytes, entry * 16), high: Self.littleEndian(bytes, entry * 16 + 8))
                    }
                }
                return try DescriptorChain(head: head, descriptors: buffers, isIndirect: true)
            }
            buffers.append(try validated(raw, head: head, in: memory))
            guard raw.flags.contains(.next) else { break }
            guard raw.next < size else { throw .nextIndexOutOfRange(head: head, next: raw.next, limit: Int(size)) }
            index = raw.next
        }
        return try DescriptorChain(head: head, descriptors: buffers)
    }

    /// Checks an indirect descriptor: its table's guest address and entry count.
    private func indirectTable(_ raw: RawDescriptor, head: UInt16, in memory: GuestMemory)
        throws(QueueError) -> (address: GuestAddress, count: Int)
    {
        guard raw.length != 0 else { throw .emptyIndirectTable(head: head) }
        guard raw.length % 16 == 0 else { throw .indirectTableLengthNotMultiple(head: head, length: raw.length) }
        let entryCount = raw.length / 16
        guard entryCount <= UInt32(size) else {
            throw .indirectTableTooLarge(head: head, entries: entryCount, limit: size)
        }
        let address = try physical(raw, head: head)
        guard address.checkedAdd(UInt64(raw.length)) != nil, memory.isValidRange(address, length: Int(raw.length)) else {
            throw .indirectTableOutOfMemory(head: head, address: address, length: raw.length)
        }
        return (address, Int(entryCount))
    }

    /// Walks an indirect table of `count` entries from entry 0; `entry(i)` reads entry `i`
    /// (each visit reads it once: a table the driver changes meanwhile is checked as read).
    private func walkIndirect(count entryCount: Int, head: UInt16, into buffers: inout [Descriptor], in memory: GuestMemory,
                              _ entry: (Int) -> RawDescriptor) throws(QueueError)
    {
        var index = 0
        var count = 0
        while true {
            count += 1
            guard count <= entryCount else { throw .chainTooLong(head: head, limit: entryCount) }
            let raw = entry(index)
            guard !raw.flags.contains(.indirect) else { throw .nestedIndirect(head: head) }
            buffers.append(try validated(raw, head: head, in: memory))
            guard raw.flags.contains(.next) else { return }
            guard Int(raw.next) < entryCount else {
                throw .nextIndexOutOfRange(head: head, next: raw.next, limit: entryCount)
            }
            index = Int(raw.next)
        }
    }

    /// Checks that a buffer descriptor names usable guest memory.
    private func validated(_ raw: RawDescriptor, head: UInt16, in memory: GuestMemory) throws(QueueError) -> Descriptor {
        guard GuestAddress(raw.address).checkedAdd(UInt64(raw.length)) != nil else {
            throw .descriptorAddressOverflow(head: head, address: GuestAddress(raw.address), length: raw.length)
        }
        let address = try physical(raw, head: head)
        let writable = raw.flags.contains(.write)
        let host: UnsafeMutableRawPointer?
        do {
            host = try memory.checkedHostAddress(address, length: Int(raw.length), writing: writable)
        } catch {
            throw .descriptorOutOfMemory(head: head, address: address, length: raw.length, cause: error)
        }
        return Descriptor(address: address, length: raw.length, isWritable: writable, host: host)
    }

    /// The guest physical address of a descriptor's buffer: its address, or the
    /// translator's mapping of its whole length (of one byte for an empty buffer).
    private func physical(_ raw: RawDescriptor, head: UInt16) throws(QueueError) -> GuestAddress {
        // A ready queue's translator is the one it was activated with (changing it un-readies
        // the queue); the flag spares the untranslated path a copy of the existential.
        guard translates, let translator else { return GuestAddress(raw.address) }
        guard let value = translator.translate(raw.address, length: UInt64(max(raw.length, 1))) else {
            throw .descriptorNotMapped(head: head, address: raw.address, length: raw.length)
        }
        return GuestAddress(value)
    }

    private static func littleEndian(_ bytes: [UInt8], _ base: Int) -> UInt64 {
        var value: UInt64 = 0
        for offset in 0..<8 { value |= UInt64(bytes[base + offset]) << (offset * 8) }
        return value
    }

    // MARK: - Returning chains

    /// Puts a finished chain in the used ring and publishes the new used index with
    /// release ordering, so the guest sees the written buffers before the index (with any
    /// entries staged before it).
    ///
    /// - Parameters:
    ///   - head: the chain's head index, as popped.
    ///   - length: the number of bytes the device wrote into the chain's writable buffers.
    /// - Throws: `.notReady`, `.usedHeadOutOfRange`, `.memory`.
    public mutating func addUsed(head: UInt16, length: UInt32, in memory: GuestMemory) throws(QueueError) {
        try stageUsed(head: head, length: length, in: memory)
        try publishUsed(in: memory)
    }

    /// Writes a finished chain's used entry without publishing it: the guest sees it only
    /// after ``publishUsed(in:)`` (or ``addUsed(head:length:in:)``, or
    /// ``needsNotification(in:)``, which publish the staged entries first). A device that
    /// returns several chains at once (a packet across mergeable buffers, a batch of
    /// transmitted packets) stages them and publishes the used index once.
    ///
    /// - Throws: `.notReady`, `.usedHeadOutOfRange`, `.memory`; on error nothing changes.
    public mutating func stageUsed(head: UInt16, length: UInt32, in memory: GuestMemory) throws(QueueError) {
        try check()
        guard head < size else { throw .usedHeadOutOfRange(head: head, size: size) }
        let slot = UInt64(nextUsed % size)
        let element = GuestAddress(mappedRings.used.rawValue + 4 + 8 * slot)
        // `struct virtq_used_elem` is id then len, two little-endian 32-bit fields: one
        // 64-bit little-endian store writes both (the guest reads them only once published).
        let entry = UInt64(head) | UInt64(length) << 32
        if let used = hosts(in: memory).used {
            // SAFETY: slot < size, so the element lies in the used ring, mapped in one live region.
            (used + 4 + 8 * Int(slot)).storeBytes(of: entry.littleEndian, as: UInt64.self)
            if memory.dirtyTracking { memory.markDirty(element, length: 8) }
        } else {
            try Self.access { () throws(GuestMemoryError) in try memory.write(entry, at: element) }
        }
        nextUsed &+= 1
        stagedUsed &+= 1
    }

    /// Publishes the staged used entries: stores `nextUsed` as the used index with release
    /// ordering, so the guest sees the entries and the buffers written before them first.
    /// Does nothing when nothing is staged.
    ///
    /// - Throws: `.notReady`, `.memory`.
    public mutating func publishUsed(in memory: GuestMemory) throws(QueueError) {
        try check()
        guard stagedUsed != 0 else { return }
        let indexAddress = usedIndexAddress
        let newIndex = nextUsed
        try Self.access { () throws(GuestMemoryError) in try memory.storeRelease(newIndex, at: indexAddress) }
        stagedUsed = 0
    }

    // MARK: - Notifications

    /// Whether the device should interrupt the driver now, after adding used entries
    /// (staged entries are published first).
    ///
    /// With event index this is `vring_need_event(used_event, nextUsed, signalledUsed)`
    /// (always true the first time) and records `nextUsed` as signalled; without it, it
    /// is true unless the driver set `VIRTQ_AVAIL_F_NO_INTERRUPT`.
    ///
    /// - Throws: `.notReady`, `.memory`.
    public mutating func needsNotification(in memory: GuestMemory) throws(QueueError) -> Bool {
        try publishUsed(in: memory)
        // Order the used-ring stores before reading the driver's suppression fields.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let address = usedEventAddress
            let usedEvent = try Self.access { () throws(GuestMemoryError) in
                try memory.loadAcquire(UInt16.self, at: address)
            }
            let previous = signalledUsed
            signalledUsed = nextUsed
            guard let previous else { return true }
            return Self.needsEvent(event: usedEvent, new: nextUsed, old: previous)
        }
        let flagsAddress = mappedRings.available
        let flags = try Self.access { () throws(GuestMemoryError) in try memory.loadAcquire(UInt16.self, at: flagsAddress) }
        return flags & Self.availableNoInterrupt == 0
    }

    /// The virtio `vring_need_event` test: whether the used index, moving from `old` to
    /// `new`, passed the driver's `event` (that is, `event` lies in `[old, new)`), computed
    /// with 16-bit wrapping arithmetic.
    public static func needsEvent(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        (new &- event &- 1) < (new &- old)
    }

    /// Asks the driver to notify the device of new chains: with event index, writes the
    /// next available index to `avail_event`; otherwise clears `VIRTQ_USED_F_NO_NOTIFY`.
    ///
    /// - Returns: whether chains are already pending, so the caller should poll again
    ///   instead of waiting (closing the race with a driver that published meanwhile).
    /// - Throws: `.notReady`, `.availableIndexJump`, `.memory`.
    @discardableResult
    public mutating func enableNotification(in memory: GuestMemory) throws(QueueError) -> Bool {
        try check()
        if eventIndex {
            let address = availableEventAddress
            let value = nextAvailable
            try Self.access { () throws(GuestMemoryError) in try memory.storeRelease(value, at: address) }
        } else {
            try setUsedFlags(noNotify: false, in: memory)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        // A fresh read (and cache) of the index: chains the driver published before it saw
        // the re-armed notification must not be missed.
        knownAvailable = nil
        return try knownPending(in: memory) > 0
    }

    /// Asks the driver not to notify the device: sets `VIRTQ_USED_F_NO_NOTIFY` without
    /// event index; with event index there is nothing to write (the driver only notifies
    /// when it passes `avail_event`).
    ///
    /// - Throws: `.notReady`, `.memory`.
    public mutating func disableNotification(in memory: GuestMemory) throws(QueueError) {
        try check()
        guard !eventIndex else { return }
        try setUsedFlags(noNotify: true, in: memory)
    }

    private func setUsedFlags(noNotify: Bool, in memory: GuestMemory) throws(QueueError) {
        let address = mappedRings.used
        try Self.access { () throws(GuestMemoryError) in
            try memory.storeRelease(noNotify ? Self.usedNoNotify : 0, at: address)
        }
    }
}
