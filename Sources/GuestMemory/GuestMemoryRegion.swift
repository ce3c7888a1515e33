import CLinux
import HostSystem

/// One contiguous range of guest physical memory backed by one host mapping.
///
/// A region pairs a guest start address with a `MemoryMapping` (anonymous memory, a shared
/// memory file, a `memfd`...). It also keeps a dirty-page bitmap, one bit per 4 KiB guest
/// page, for live migration: writes through `GuestMemory` set bits when dirty tracking is
/// on, `mergeDirty(bitmap:)` folds in what KVM reports for vCPU writes, and
/// `takeDirtyBitmap()` hands the bits over and clears them.
///
/// The class is `@unchecked Sendable`: its stored properties never change after `init`,
/// and the dirty bitmap is only touched through atomic C helpers, because device threads
/// mark pages while the migration thread collects them.
public final class GuestMemoryRegion: @unchecked Sendable {
    /// The granularity of dirty tracking: 4 KiB, the page size `KVM_GET_DIRTY_LOG` reports in.
    public static let dirtyPageSize: UInt64 = 4096

    /// The guest physical address of the region's first byte.
    public let start: GuestAddress
    /// The region's length in bytes (the mapping's size).
    public let size: UInt64
    /// The host mapping behind the region; it lives as long as the region.
    public let mapping: MemoryMapping
    /// How many 4 KiB dirty-tracking pages the region covers (the last one may be partial).
    public let pageCount: Int
    /// How many 64-bit words the dirty bitmap has (bit `i` of word `w` is page `64 * w + i`).
    public let dirtyBitmapWordCount: Int

    // Raw, calloc'ed storage for the dirty bitmap, only accessed through the C atomics.
    private let dirtyWords: UnsafeMutableRawPointer

    /// Wraps `mapping` as guest memory starting at `start`.
    ///
    /// - Throws: `.emptyRegion` for a zero-sized mapping, `.addressOverflow` when the region
    ///   would end past `UInt64.max`, `.mappingFailed` when the dirty bitmap cannot be allocated.
    public init(start: GuestAddress, mapping: MemoryMapping) throws(GuestMemoryError) {
        let size = UInt64(mapping.size)
        try Self.checkBounds(start: start, size: size)
        let pages = Int((size + Self.dirtyPageSize - 1) / Self.dirtyPageSize)
        let words = (pages + 63) / 64
        // calloc hands back lazily zeroed pages, so a huge guest's bitmap costs nothing until used.
        guard let bitmap = calloc(words, MemoryLayout<UInt64>.size) else {
            throw .mappingFailed(SystemError(call: "calloc(dirty bitmap of \(words) words for region at \(start))", errno: ENOMEM))
        }
        self.start = start
        self.size = size
        self.mapping = mapping
        pageCount = pages
        dirtyBitmapWordCount = words
        dirtyWords = bitmap
    }

    /// Maps `size` bytes of fresh anonymous memory (zero-filled) as a region at `start`.
    ///
    /// - Throws: the errors of `init(start:mapping:)`, and `.mappingFailed` when `mmap` fails
    ///   or `size` does not fit the host's address space.
    public convenience init(start: GuestAddress, size: UInt64, options: MemoryMapping.Options = []) throws(GuestMemoryError) {
        try Self.checkBounds(start: start, size: size)
        guard let length = Int(exactly: size) else {
            throw .mappingFailed(SystemError(call: "mmap(0x\(String(size, radix: 16)) bytes for guest memory at \(start))", errno: ENOMEM))
        }
        let mapping: MemoryMapping
        do {
            mapping = try MemoryMapping(anonymous: length, options: options)
        } catch {
            throw .mappingFailed(error)
        }
        try self.init(start: start, mapping: mapping)
    }

    deinit {
        free(dirtyWords)
    }

    /// Refuses a size of 0 and a range whose exclusive end would not fit in 64 bits.
    static func checkBounds(start: GuestAddress, size: UInt64) throws(GuestMemoryError) {
        guard size > 0 else { throw .emptyRegion(start) }
        guard start.checkedAdd(size) != nil else {
            throw .addressOverflow(address: start, length: Int(clamping: size))
        }
    }

    /// The first guest address after the region (exclusive end).
    public var end: GuestAddress { GuestAddress(start.rawValue + size) }

    /// The guest address of the region's last byte.
    public var lastAddress: GuestAddress { GuestAddress(start.rawValue + size - 1) }

    /// The host address of the region's first byte.
    public var hostAddress: UnsafeMutableRawPointer { mapping.baseAddress }

    /// Whether the mapping is read-only (writes through `GuestMemory` are refused).
    public var isReadOnly: Bool { mapping.options.contains(.readOnly) }

    /// Whether `address` lies inside the region.
    public func contains(_ address: GuestAddress) -> Bool {
        address >= start && address.rawValue - start.rawValue < size
    }

    /// The offset of `address` from the region's start, or `nil` when it lies outside.
    public func offset(of address: GuestAddress) -> UInt64? {
        contains(address) ? address.rawValue - start.rawValue : nil
    }

    /// The host address behind guest `address`, or `nil` when it lies outside the region.
    public func hostAddress(for address: GuestAddress) -> UnsafeMutableRawPointer? {
        guard let offset = offset(of: address) else { return nil }
        // SAFETY: offset < size == mapping.size, so the pointer stays inside the mapping.
        return mapping.baseAddress + Int(offset)
    }

    // MARK: - Dirty tracking

    /// Records that `length` bytes from `offset` (relative to the region's start) were
    /// written: sets the bit of every 4 KiB page they touch. Bytes past the region's end
    /// are ignored; a zero length marks nothing. Safe to call from several threads.
    public func markDirty(offset: UInt64, length: UInt64) {
        guard length > 0, offset < size else { return }
        let endOffset = length > size - offset ? size : offset + length
        let first = Int(offset / Self.dirtyPageSize)
        let last = Int((endOffset - 1) / Self.dirtyPageSize)
        var word = first / 64
        let lastWord = last / 64
        while word <= lastWord {
            let low = word == first / 64 ? first % 64 : 0
            let high = word == lastWord ? last % 64 : 63
            let upper: UInt64 = high == 63 ? ~0 : (1 << UInt64(high + 1)) - 1
            let lower: UInt64 = (1 << UInt64(low)) - 1
            setBits(upper & ~lower, inWord: word)
            word += 1
        }
    }

    /// Whether page `page` (a 4 KiB page index from the region's start) is marked dirty.
    /// Pages outside the region are never dirty.
    public func isDirty(page: Int) -> Bool {
        guard page >= 0, page < pageCount else { return false }
        return loadWord(page / 64) & (1 << UInt64(page % 64)) != 0
    }

    /// How many pages are marked dirty right now.
    public var dirtyPageCount: Int {
        var count = 0
        for word in 0..<dirtyBitmapWordCount { count += loadWord(word).nonzeroBitCount }
        return count
    }

    /// Returns the dirty bitmap and clears it, word by word atomically, so a page marked
    /// concurrently lands either in the returned copy or in the next one, never nowhere.
    /// Layout: `dirtyBitmapWordCount` words, bit `i` of word `w` is page `64 * w + i`.
    public func takeDirtyBitmap() -> [UInt64] {
        [UInt64](unsafeUninitializedCapacity: dirtyBitmapWordCount) { buffer, initialized in
            for word in 0..<dirtyBitmapWordCount {
                // SAFETY: word < dirtyBitmapWordCount, inside the calloc'ed bitmap (8-byte aligned).
                buffer[word] = clinux_exchange_u64(dirtyWords + word * 8, 0)
            }
            initialized = dirtyBitmapWordCount
        }
    }

    /// Returns a copy of the dirty bitmap without clearing it.
    public func dirtyBitmap() -> [UInt64] {
        (0..<dirtyBitmapWordCount).map { loadWord($0) }
    }

    /// ORs `bitmap` into the dirty bitmap, for example the one `KVM_GET_DIRTY_LOG` returned
    /// for this region's memory slot (same layout: bit `i` is page `i`). Words past the
    /// region and bits past its last page are ignored.
    public func mergeDirty(bitmap: [UInt64]) {
        let words = min(bitmap.count, dirtyBitmapWordCount)
        for word in 0..<words {
            var bits = bitmap[word]
            let pagesInWord = pageCount - word * 64
            if pagesInWord < 64 { bits &= (1 << UInt64(pagesInWord)) - 1 }
            if bits != 0 { setBits(bits, inWord: word) }
        }
    }

    /// Clears every dirty bit.
    public func clearDirty() {
        for word in 0..<dirtyBitmapWordCount {
            // SAFETY: word < dirtyBitmapWordCount, inside the calloc'ed bitmap (8-byte aligned).
            _ = clinux_exchange_u64(dirtyWords + word * 8, 0)
        }
    }

    private func loadWord(_ word: Int) -> UInt64 {
        // SAFETY: callers pass word < dirtyBitmapWordCount, inside the calloc'ed bitmap (8-byte aligned).
        clinux_load_acquire_u64(dirtyWords + word * 8)
    }

    private func setBits(_ bits: UInt64, inWord word: Int) {
        // SAFETY: callers pass word < dirtyBitmapWordCount, inside the calloc'ed bitmap (8-byte aligned).
        let address = dirtyWords + word * 8
        // Skip the locked OR when the pages are already dirty (the common case for hot pages).
        if clinux_load_acquire_u64(address) & bits != bits {
            clinux_fetch_or_u64(address, bits)
        }
    }
}
