// Handing guest pages back to the host and asking for them again: what a balloon does with
// the pages its guest gives up or takes back.
import CLinux
import HostSystem

extension GuestMemory {
    /// Returns up to `length` bytes from `address` to the host, clamped to the region that
    /// holds `address`: a shared file-backed region (`shared=on`, a memfd) has the range punched
    /// out of its file, and every region drops it with `MADV_DONTNEED`, so the host frees the
    /// memory and the guest reads zeros there next time. The range is marked dirty while dirty
    /// tracking is on (its contents changed to zeros). Returns the bytes discarded.
    ///
    /// `address` and the clamped length should be multiples of the host page size: the kernel
    /// refuses an unaligned start, and drops only whole pages.
    ///
    /// - Throws: `.outOfRange` when no region holds `address`, `.hostAdviceFailed` when the
    ///   host refuses (a huge-page region given a 4 KiB range, for example).
    @discardableResult
    public func discard(_ address: GuestAddress, length: UInt64) throws(GuestMemoryError) -> UInt64 {
        guard let index = regionIndex(containing: address) else { throw .outOfRange(address: address, length: Int(clamping: length)) }
        let region = regions[index]
        let offset = address.rawValue - region.start.rawValue
        let clamped = min(length, region.size - offset)
        guard clamped > 0 else { return 0 }
        do {
            try region.mapping.discard(offset: Int(offset), length: Int(clamped))
        } catch {
            throw .hostAdviceFailed(address: address, length: Int(clamped), error)
        }
        markDirty(address, length: Int(clamped))
        return clamped
    }

    /// Tells the host that the `length` bytes at `address` will be used soon
    /// (`madvise(MADV_WILLNEED)`), as a balloon does for the pages the guest takes back.
    ///
    /// - Throws: `.outOfRange` unless one region holds the whole range, `.hostAdviceFailed`
    ///   when the host refuses.
    public func adviseWillNeed(_ address: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        guard let index = regionIndex(containing: address),
              length <= regions[index].size - (address.rawValue - regions[index].start.rawValue) else {
            throw .outOfRange(address: address, length: Int(clamping: length))
        }
        let region = regions[index]
        do {
            try region.mapping.advise(offset: Int(address.rawValue - region.start.rawValue), length: Int(length), advice: MADV_WILLNEED)
        } catch {
            throw .hostAdviceFailed(address: address, length: Int(length), error)
        }
    }
}
