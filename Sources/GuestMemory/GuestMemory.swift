import CLinux
import HostSystem
import Synchronization

/// The guest's physical memory: a sorted set of non-overlapping regions, with
/// bounds-checked little-endian reads and writes that may span contiguous regions.
///
/// Every access is checked as a whole before any byte moves: if any byte of the range is
/// not backed by a region (a gap, below the first region, past the end), or the range
/// overflows 64 bits, the access throws and nothing is read or written. Accesses may
/// cross from one region into the next only where the second starts exactly where the
/// first ends. Guest memory is foreign memory: bytes are copied in and out with raw
/// copies and never bound to Swift types.
///
/// The class is `@unchecked Sendable`: regions are only ever appended (``append(_:)``, for
/// memory hotplug) into room reserved at `init`, and a new one is published by a release
/// store of the count after its entry is written, so readers that acquire the count see
/// whole entries; the dirty-tracking switch is an atomic, and region bitmaps are updated
/// atomically. The
/// guest itself writes this memory concurrently, which is the nature of guest RAM:
/// validate what you copy out, and read shared ring indices with `loadAcquire`.
public final class GuestMemory: @unchecked Sendable {
    /// The regions, sorted by start address, none overlapping (a copy of the list at the
    /// time of the call: hot-added regions come after it).
    public var regions: [GuestMemoryRegion] {
        Array(UnsafeBufferPointer(start: regionStorage, count: count.load(ordering: .acquiring)))
    }

    // A plain copy of each region's bounds and host address, so the hot path searches an
    // array of trivial values (no reference counting) and never re-derives them.
    struct Span {
        let start: UInt64
        let end: UInt64
        let size: Int
        let host: UnsafeMutableRawPointer
        let writable: Bool
    }

    // A checked range: the region it starts in, the offset there, and its length.
    struct Location {
        let index: Int
        let offset: Int
        let length: Int
    }

    /// The published spans (entries below the count are written once and never change).
    var spans: UnsafeBufferPointer<Span> {
        UnsafeBufferPointer(start: spanStorage, count: count.load(ordering: .acquiring))
    }

    /// Region `index` of the published ones.
    @inline(__always)
    func region(at index: Int) -> GuestMemoryRegion { regionStorage[index] }

    // Room for `capacity` regions; the first `count` are initialised and published.
    private let capacity: Int
    private let spanStorage: UnsafeMutablePointer<Span>
    private let regionStorage: UnsafeMutablePointer<GuestMemoryRegion>
    private let count: Atomic<Int>
    // Serialises appenders (readers never take it).
    private let appending = Mutex<Void>(())
    private let tracking: Atomic<Bool>

    /// Builds guest memory from `regions` (in any order).
    ///
    /// - Parameters:
    ///   - dirtyTracking: whether writes through this object mark pages dirty from the start
    ///     (see `dirtyTracking`).
    ///   - spareRegions: how many regions ``append(_:)`` may add later (memory hotplug).
    /// - Throws: `.noRegions` for an empty list, `.overlappingRegions` when two regions share
    ///   a byte (including the same region given twice).
    public init(regions: [GuestMemoryRegion], dirtyTracking: Bool = false, spareRegions: Int = 0) throws(GuestMemoryError) {
        try Self.checkLayout(regions.map { ($0.start, $0.size) })
        let sorted = regions.sorted { $0.start < $1.start }
        capacity = sorted.count + max(spareRegions, 0)
        spanStorage = .allocate(capacity: capacity)
        regionStorage = .allocate(capacity: capacity)
        for (index, region) in sorted.enumerated() {
            (spanStorage + index).initialize(to: Self.span(of: region))
            (regionStorage + index).initialize(to: region)
        }
        count = Atomic(sorted.count)
        tracking = Atomic(dirtyTracking)
    }

    deinit {
        let published = count.load(ordering: .acquiring)
        spanStorage.deinitialize(count: published)
        regionStorage.deinitialize(count: published)
        spanStorage.deallocate()
        regionStorage.deallocate()
    }

    static func span(of region: GuestMemoryRegion) -> Span {
        Span(start: region.start.rawValue, end: region.end.rawValue, size: Int(region.size),
             host: region.hostAddress, writable: !region.isReadOnly)
    }

    /// How many more regions ``append(_:)`` accepts.
    public var spareRegions: Int { appending.withLock { _ in capacity - count.load(ordering: .relaxed) } }

    /// Adds `region` after the last one (hot-added memory): accesses made after this returns,
    /// from any thread, reach it; accesses in flight are unaffected.
    ///
    /// - Throws: `.noSpareRegion` when the room reserved at `init` is used up,
    ///   `.overlappingRegions` when `region` does not start at or after the end of the last
    ///   region (regions stay sorted).
    public func append(_ region: GuestMemoryRegion) throws(GuestMemoryError) {
        try appending.withLock { (_: inout Void) throws(GuestMemoryError) in
            let published = count.load(ordering: .relaxed)
            guard published < capacity else { throw .noSpareRegion(region.start, capacity: capacity) }
            let last = regionStorage[published - 1]
            guard region.start >= last.end else { throw .overlappingRegions(last.start, region.start) }
            (spanStorage + published).initialize(to: Self.span(of: region))
            (regionStorage + published).initialize(to: region)
            count.store(published + 1, ordering: .releasing)
        }
    }

    /// Maps anonymous, zero-filled memory for each `(start, size)` range and builds guest
    /// memory from it. The layout is checked before anything is mapped.
    ///
    /// - Throws: `.noRegions`, `.emptyRegion`, `.addressOverflow`, `.overlappingRegions` for a
    ///   bad layout, `.mappingFailed` when `mmap` fails.
    public static func anonymous(
        _ ranges: [(start: GuestAddress, size: UInt64)],
        options: MemoryMapping.Options = [],
        dirtyTracking: Bool = false,
        spareRegions: Int = 0
    ) throws(GuestMemoryError) -> GuestMemory {
        try checkLayout(ranges.map { ($0.start, $0.size) })
        var regions: [GuestMemoryRegion] = []
        regions.reserveCapacity(ranges.count)
        for range in ranges {
            regions.append(try GuestMemoryRegion(start: range.start, size: range.size, options: options))
        }
        return try GuestMemory(regions: regions, dirtyTracking: dirtyTracking, spareRegions: spareRegions)
    }

    /// Refuses an empty layout, empty or overflowing regions, and overlaps.
    static func checkLayout(_ ranges: [(start: GuestAddress, size: UInt64)]) throws(GuestMemoryError) {
        guard !ranges.isEmpty else { throw .noRegions }
        for range in ranges { try GuestMemoryRegion.checkBounds(start: range.start, size: range.size) }
        let sorted = ranges.sorted { $0.start < $1.start }
        for (previous, next) in zip(sorted, sorted.dropFirst())
        where previous.start.rawValue + previous.size > next.start.rawValue {
            throw .overlappingRegions(previous.start, next.start)
        }
    }

    // MARK: - Layout

    /// The sum of all region sizes in bytes.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// The highest guest address backed by memory (the last byte of the last region).
    public var lastAddress: GuestAddress? { regions.last?.lastAddress }

    /// The first address after the last region (exclusive end of guest memory).
    public var endAddress: GuestAddress? { regions.last?.end }

    /// The region that holds `address`, found by binary search, or `nil` for a gap or an
    /// address outside guest memory.
    public func region(containing address: GuestAddress) -> GuestMemoryRegion? {
        regionIndex(containing: address).map { region(at: $0) }
    }

    /// The index in `regions` of the region that holds `address`, or `nil`.
    public func regionIndex(containing address: GuestAddress) -> Int? {
        guard let index = lastSpan(atOrBelow: address.rawValue), address.rawValue < spans[index].end else {
            return nil
        }
        return index
    }

    /// Whether an access of `length` bytes at `address` would succeed: every byte backed,
    /// crossing only between contiguous regions, no overflow. A zero length is valid at any
    /// address inside a region or at a region's end.
    public func isValidRange(_ address: GuestAddress, length: Int) -> Bool {
        (try? locate(address, length, writing: false)) != nil
    }

    /// Checks an access of `length` bytes at `address` without performing it, throwing the
    /// error the access would throw. With `writing`, read-only regions are refused too.
    public func checkRange(_ address: GuestAddress, length: Int, writing: Bool = false) throws(GuestMemoryError) {
        _ = try locate(address, length, writing: writing)
    }

    /// Index of the last span whose start is at or below `address`.
    @inline(__always)
    func lastSpan(atOrBelow address: UInt64) -> Int? {
        var low = 0
        var high = spans.count
        while low < high {
            let middle = (low + high) / 2
            if spans[middle].start <= address { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? nil : low - 1
    }

    /// Checks a whole access before any byte moves and says where it starts.
    @inline(__always)
    func locate(_ address: GuestAddress, _ length: Int, writing: Bool) throws(GuestMemoryError) -> Location {
        guard length >= 0 else { throw .invalidLength(address: address, length: length) }
        // Overflow means the last byte's address does not fit in 64 bits; a range may end
        // exactly at 2^64 (its last byte is UInt64.max), which is then simply not backed.
        let (lastByte, overflow) = address.rawValue.addingReportingOverflow(UInt64(max(length, 1) - 1))
        guard !overflow else { throw .addressOverflow(address: address, length: length) }
        guard let index = lastSpan(atOrBelow: address.rawValue) else {
            throw .outOfRange(address: address, length: length)
        }
        let span = spans[index]
        if length == 0 {
            // An empty range may sit anywhere inside a region or at its exclusive end.
            guard address.rawValue <= span.end else { throw .outOfRange(address: address, length: 0) }
            return Location(index: index, offset: Int(address.rawValue - span.start), length: 0)
        }
        guard address.rawValue < span.end else { throw .outOfRange(address: address, length: length) }
        let offset = Int(address.rawValue - span.start)
        if writing && !span.writable { throw .readOnlyRegion(address: address, length: length) }
        // Ranges that continue into following regions: each must start where the last ended.
        var covered = span.end
        var next = index + 1
        while covered <= lastByte {
            guard next < spans.count, spans[next].start == covered else {
                throw .outOfRange(address: address, length: length)
            }
            if writing && !spans[next].writable { throw .readOnlyRegion(address: address, length: length) }
            covered = spans[next].end
            next += 1
        }
        return Location(index: index, offset: offset, length: length)
    }

    /// Like `locate`, but the range must also lie inside one region.
    @inline(__always)
    func locateInOneRegion(_ address: GuestAddress, _ length: Int, writing: Bool) throws(GuestMemoryError) -> Location {
        let location = try locate(address, length, writing: writing)
        guard length <= spans[location.index].size - location.offset else {
            throw .crossesRegionBoundary(address: address, length: length)
        }
        return location
    }

    /// Calls `body(regionIndex, offsetInRegion, bytesDone, chunkLength)` for each per-region
    /// piece of a range that `locate` checked.
    @inline(__always)
    func forEachChunk(_ location: Location, _ body: (Int, Int, Int, Int) -> Void) {
        var index = location.index
        var offset = location.offset
        var done = 0
        while done < location.length {
            let chunk = min(location.length - done, spans[index].size - offset)
            body(index, offset, done, chunk)
            done += chunk
            index += 1
            offset = 0
        }
    }

    /// Copies a checked range out of guest memory into `destination`.
    @inline(__always)
    func copyOut(_ location: Location, to destination: UnsafeMutableRawPointer) {
        forEachChunk(location) { index, offset, done, chunk in
            // SAFETY: locate() proved [offset, offset + chunk) lies inside this live region's
            // mapping; the caller sized `destination` for location.length bytes.
            (destination + done).copyMemory(from: spans[index].host + offset, byteCount: chunk)
        }
    }

    /// Copies `source` into a checked range of guest memory (at most location.length bytes)
    /// and marks the pages dirty when tracking is on.
    @inline(__always)
    func copyIn(_ location: Location, from source: UnsafeRawBufferPointer) {
        let length = min(location.length, source.count)
        guard length > 0, let base = source.baseAddress else { return }
        let track = dirtyTracking
        forEachChunk(Location(index: location.index, offset: location.offset, length: length)) { index, offset, done, chunk in
            // SAFETY: locate() proved [offset, offset + chunk) lies inside this live, writable
            // region's mapping; done + chunk <= source.count.
            (spans[index].host + offset).copyMemory(from: base + done, byteCount: chunk)
            if track { region(at: index).markDirty(offset: UInt64(offset), length: UInt64(chunk)) }
        }
    }

    // MARK: - Byte access

    /// Copies `buffer.count` bytes of guest memory starting at `address` into `buffer`.
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`; on error `buffer` is untouched.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at address: GuestAddress) throws(GuestMemoryError) {
        let location = try locate(address, buffer.count, writing: false)
        guard let base = buffer.baseAddress else { return }
        // SAFETY: the caller's buffer holds buffer.count bytes, the length locate() checked.
        copyOut(location, to: base)
    }

    /// Returns `count` bytes of guest memory starting at `address`.
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`, `.invalidLength` for a negative count.
    public func readBytes(count: Int, at address: GuestAddress) throws(GuestMemoryError) -> [UInt8] {
        let location = try locate(address, count, writing: false)
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            // SAFETY: the new array has room for `count` bytes, the length locate() checked.
            if let base = buffer.baseAddress { copyOut(location, to: UnsafeMutableRawPointer(base)) }
            initialized = count
        }
    }

    /// Copies `bytes` into guest memory starting at `address`.
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`, `.readOnlyRegion`; on error nothing is written.
    public func write(_ bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws(GuestMemoryError) {
        copyIn(try locate(address, bytes.count, writing: true), from: bytes)
    }

    /// Copies a collection of bytes (an array, a slice, `Data`...) into guest memory at `address`.
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`, `.readOnlyRegion`; on error nothing is written.
    public func write(bytes: some Collection<UInt8>, at address: GuestAddress) throws(GuestMemoryError) {
        let location = try locate(address, bytes.count, writing: true)
        let copied: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            copyIn(location, from: UnsafeRawBufferPointer(buffer))
        }
        if copied == nil {
            Array(bytes).withUnsafeBytes { copyIn(location, from: $0) }
        }
    }

    /// Sets `count` bytes of guest memory starting at `address` to `byte`.
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`, `.readOnlyRegion`, `.invalidLength`;
    ///   on error nothing is written.
    public func fill(_ byte: UInt8, count: Int, at address: GuestAddress) throws(GuestMemoryError) {
        let location = try locate(address, count, writing: true)
        let track = dirtyTracking
        forEachChunk(location) { index, offset, _, chunk in
            // SAFETY: locate() proved [offset, offset + chunk) lies inside this live, writable region.
            _ = memset(spans[index].host + offset, Int32(byte), chunk)
            if track { region(at: index).markDirty(offset: UInt64(offset), length: UInt64(chunk)) }
        }
    }

    /// Copies `count` bytes from guest `source` to guest `destination` (the ranges may overlap).
    ///
    /// - Throws: the errors of a read at `source` and a write at `destination`; on error
    ///   nothing is written.
    public func copy(from source: GuestAddress, to destination: GuestAddress, count: Int) throws(GuestMemoryError) {
        let from = try locate(source, count, writing: false)
        let to = try locate(destination, count, writing: true)
        guard count > 0 else { return }
        // Staging through a buffer makes overlapping and region-spanning copies simple.
        let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        defer { staging.deallocate() }
        // SAFETY: staging holds exactly `count` bytes, the length both ranges were checked for.
        copyOut(from, to: staging.baseAddress!)
        copyIn(to, from: UnsafeRawBufferPointer(staging))
    }

    // MARK: - Integers

    /// Reads a little-endian integer of `type` at `address` (any alignment; it may span
    /// contiguous regions).
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`.
    @_specialize(exported: true, where T == UInt8)
    @_specialize(exported: true, where T == UInt16)
    @_specialize(exported: true, where T == UInt32)
    @_specialize(exported: true, where T == UInt64)
    public func read<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let location = try locate(address, MemoryLayout<T>.size, writing: false)
        let span = spans[location.index]
        if MemoryLayout<T>.size <= span.size - location.offset {
            // SAFETY: locate() proved the value's bytes lie inside this live region's mapping
            // (the usual case: one load, no call to memcpy).
            return T(littleEndian: (span.host + location.offset).loadUnaligned(as: T.self))
        }
        var value = T.zero
        withUnsafeMutableBytes(of: &value) { raw in
            // SAFETY: raw is exactly MemoryLayout<T>.size bytes, the length locate() checked.
            copyOut(location, to: raw.baseAddress!)
        }
        return T(littleEndian: value)
    }

    /// Writes `value` as a little-endian integer at `address` (any alignment; it may span
    /// contiguous regions).
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`, `.readOnlyRegion`; on error nothing is written.
    @_specialize(exported: true, where T == UInt8)
    @_specialize(exported: true, where T == UInt16)
    @_specialize(exported: true, where T == UInt32)
    @_specialize(exported: true, where T == UInt64)
    public func write<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let location = try locate(address, MemoryLayout<T>.size, writing: true)
        let span = spans[location.index]
        if MemoryLayout<T>.size <= span.size - location.offset {
            // SAFETY: locate() proved the value's bytes lie inside this live, writable region's
            // mapping (the usual case: one store, no call to memcpy).
            (span.host + location.offset).storeBytes(of: value.littleEndian, as: T.self)
            if dirtyTracking { region(at: location.index).markDirty(offset: UInt64(location.offset), length: UInt64(MemoryLayout<T>.size)) }
            return
        }
        var encoded = value.littleEndian
        withUnsafeBytes(of: &encoded) { copyIn(location, from: $0) }
    }

    // MARK: - Host pointers

    /// The host address behind `length` bytes at `address`, which must lie in one region.
    ///
    /// The pointer stays valid while this `GuestMemory` lives. Writing through it bypasses
    /// dirty tracking (call `markDirty(_:length:)` afterwards) and the read-only check (a
    /// read-only region's pages fault on write).
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`, `.invalidLength`, `.crossesRegionBoundary`.
    public func hostAddress(for address: GuestAddress, length: Int) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        let location = try locateInOneRegion(address, length, writing: false)
        // SAFETY: locate() proved offset <= size, so the pointer is inside (or one past) the mapping.
        return spans[location.index].host + location.offset
    }

    /// Checks an access as ``checkRange(_:length:writing:)`` does and, when the range lies in
    /// one region, gives its host address (nil for a range that crosses regions or is empty):
    /// a descriptor validated and mapped with one lookup.
    ///
    /// The pointer has the caveats of ``hostAddress(for:length:)``.
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`, `.invalidLength`, `.readOnlyRegion` (with `writing`).
    public func checkedHostAddress(_ address: GuestAddress, length: Int, writing: Bool) throws(GuestMemoryError) -> UnsafeMutableRawPointer? {
        let location = try locate(address, length, writing: writing)
        let span = spans[location.index]
        guard length > 0, length <= span.size - location.offset else { return nil }
        // SAFETY: locate() proved the range lies inside this live region's mapping.
        return span.host + location.offset
    }

    /// The host buffers behind `length` bytes at `address`, one per region the range
    /// crosses, in order: an iovec list for `readv`/`writev` straight into guest memory.
    ///
    /// The same caveats as `hostAddress(for:length:)` apply (valid while this object lives,
    /// no dirty tracking, no read-only check). A zero length gives an empty list.
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`, `.invalidLength`.
    public func hostBuffers(for address: GuestAddress, length: Int) throws(GuestMemoryError) -> [UnsafeMutableRawBufferPointer] {
        let location = try locate(address, length, writing: false)
        var buffers: [UnsafeMutableRawBufferPointer] = []
        forEachChunk(location) { index, offset, _, chunk in
            // SAFETY: locate() proved [offset, offset + chunk) lies inside this live region.
            buffers.append(UnsafeMutableRawBufferPointer(start: spans[index].host + offset, count: chunk))
        }
        return buffers
    }

    // MARK: - Dirty tracking

    /// Whether writes through this object (`write`, `fill`, `copy`, `storeRelease`) mark the
    /// pages they touch dirty in their region. Off by default; switching it costs one atomic
    /// store, and while it is off a write pays one relaxed load.
    public var dirtyTracking: Bool {
        get { tracking.load(ordering: .relaxed) }
        set { tracking.store(newValue, ordering: .sequentiallyConsistent) }
    }

    /// Turns dirty tracking on (for example when a live migration starts).
    public func enableDirtyTracking() { dirtyTracking = true }

    /// Turns dirty tracking off. Bits already set stay until taken or cleared.
    public func disableDirtyTracking() { dirtyTracking = false }

    /// Records a write of `length` bytes at `address` made behind this object's back (through
    /// `hostAddress(for:length:)`, by `readv` into `hostBuffers`), when dirty tracking is on.
    /// Parts of the range not backed by a region are ignored.
    public func markDirty(_ address: GuestAddress, length: Int) {
        guard dirtyTracking, length > 0 else { return }
        let first = address.rawValue
        let (sum, overflow) = first.addingReportingOverflow(UInt64(length))
        let rangeEnd = overflow ? UInt64.max : sum
        var index = lastSpan(atOrBelow: first) ?? 0
        while index < spans.count, spans[index].start < rangeEnd {
            let span = spans[index]
            let low = max(first, span.start)
            let high = min(rangeEnd, span.end)
            if low < high { region(at: index).markDirty(offset: low - span.start, length: high - low) }
            index += 1
        }
    }

    /// Takes and clears each region's dirty bitmap, in `regions` order.
    public func takeDirtyBitmaps() -> [[UInt64]] {
        regions.map { $0.takeDirtyBitmap() }
    }

    /// How many 4 KiB pages are marked dirty across all regions.
    public var dirtyPageCount: Int {
        regions.reduce(0) { $0 + $1.dirtyPageCount }
    }
}
