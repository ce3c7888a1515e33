import CLinux

// Acquire loads and release stores of naturally aligned little-endian integers, for
// indices shared with the guest (virtqueue `idx` and event fields): the guest's writes
// before it publishes an index are visible once the index is read with acquire, and a
// device's writes to a buffer are visible to the guest before the index stored with release.
extension GuestMemory {
    /// Checks an atomic access of `width` bytes and returns its host pointer and location.
    @inline(__always)
    func atomicPointer(_ address: GuestAddress, width: Int, writing: Bool) throws(GuestMemoryError)
        -> (pointer: UnsafeMutableRawPointer, location: Location)
    {
        guard address.rawValue % UInt64(width) == 0 else {
            throw .misaligned(address: address, alignment: width)
        }
        let location = try locateInOneRegion(address, width, writing: writing)
        // SAFETY: locate() proved [offset, offset + width) lies inside this live region.
        let pointer = spans[location.index].host + location.offset
        // A region whose guest start is not width-aligned would misalign the host side.
        guard Int(bitPattern: pointer) % width == 0 else {
            throw .misaligned(address: address, alignment: width)
        }
        return (pointer, location)
    }

    /// Marks the page of a completed atomic store dirty when tracking is on.
    @inline(__always)
    func recordStore(_ location: Location) {
        if dirtyTracking {
            region(at: location.index).markDirty(offset: UInt64(location.offset), length: UInt64(location.length))
        }
    }

    /// Loads a byte at `address` with acquire ordering.
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`.
    public func loadAcquire(_ type: UInt8.Type, at address: GuestAddress) throws(GuestMemoryError) -> UInt8 {
        let target = try atomicPointer(address, width: 1, writing: false)
        // SAFETY: atomicPointer checked the byte lies inside one live region.
        return clinux_load_acquire_u8(target.pointer)
    }

    /// Loads a little-endian `UInt16` at `address` with acquire ordering.
    ///
    /// - Throws: `.misaligned` unless 2-byte aligned, `.outOfRange`, `.crossesRegionBoundary`.
    public func loadAcquire(_ type: UInt16.Type, at address: GuestAddress) throws(GuestMemoryError) -> UInt16 {
        let target = try atomicPointer(address, width: 2, writing: false)
        // SAFETY: atomicPointer checked alignment and that the value lies inside one live region.
        return UInt16(littleEndian: clinux_load_acquire_u16(target.pointer))
    }

    /// Loads a little-endian `UInt32` at `address` with acquire ordering.
    ///
    /// - Throws: `.misaligned` unless 4-byte aligned, `.outOfRange`, `.crossesRegionBoundary`.
    public func loadAcquire(_ type: UInt32.Type, at address: GuestAddress) throws(GuestMemoryError) -> UInt32 {
        let target = try atomicPointer(address, width: 4, writing: false)
        // SAFETY: atomicPointer checked alignment and that the value lies inside one live region.
        return UInt32(littleEndian: clinux_load_acquire_u32(target.pointer))
    }

    /// Loads a little-endian `UInt64` at `address` with acquire ordering.
    ///
    /// - Throws: `.misaligned` unless 8-byte aligned, `.outOfRange`, `.crossesRegionBoundary`.
    public func loadAcquire(_ type: UInt64.Type, at address: GuestAddress) throws(GuestMemoryError) -> UInt64 {
        let target = try atomicPointer(address, width: 8, writing: false)
        // SAFETY: atomicPointer checked alignment and that the value lies inside one live region.
        return UInt64(littleEndian: clinux_load_acquire_u64(target.pointer))
    }

    /// Stores a byte at `address` with release ordering.
    ///
    /// - Throws: `.outOfRange`, `.addressOverflow`, `.readOnlyRegion`.
    public func storeRelease(_ value: UInt8, at address: GuestAddress) throws(GuestMemoryError) {
        let target = try atomicPointer(address, width: 1, writing: true)
        // SAFETY: atomicPointer checked the byte lies inside one live, writable region.
        clinux_store_release_u8(target.pointer, value)
        recordStore(target.location)
    }

    /// Stores `value` as a little-endian `UInt16` at `address` with release ordering.
    ///
    /// - Throws: `.misaligned` unless 2-byte aligned, `.outOfRange`, `.crossesRegionBoundary`,
    ///   `.readOnlyRegion`.
    public func storeRelease(_ value: UInt16, at address: GuestAddress) throws(GuestMemoryError) {
        let target = try atomicPointer(address, width: 2, writing: true)
        // SAFETY: atomicPointer checked alignment and that the value lies inside one live, writable region.
        clinux_store_release_u16(target.pointer, value.littleEndian)
        recordStore(target.location)
    }

    /// Stores `value` as a little-endian `UInt32` at `address` with release ordering.
    ///
    /// - Throws: `.misaligned` unless 4-byte aligned, `.outOfRange`, `.crossesRegionBoundary`,
    ///   `.readOnlyRegion`.
    public func storeRelease(_ value: UInt32, at address: GuestAddress) throws(GuestMemoryError) {
        let target = try atomicPointer(address, width: 4, writing: true)
        // SAFETY: atomicPointer checked alignment and that the value lies inside one live, writable region.
        clinux_store_release_u32(target.pointer, value.littleEndian)
        recordStore(target.location)
    }

    /// Stores `value` as a little-endian `UInt64` at `address` with release ordering.
    ///
    /// - Throws: `.misaligned` unless 8-byte aligned, `.outOfRange`, `.crossesRegionBoundary`,
    ///   `.readOnlyRegion`.
    public func storeRelease(_ value: UInt64, at address: GuestAddress) throws(GuestMemoryError) {
        let target = try atomicPointer(address, width: 8, writing: true)
        // SAFETY: atomicPointer checked alignment and that the value lies inside one live, writable region.
        clinux_store_release_u64(target.pointer, value.littleEndian)
        recordStore(target.location)
    }
}
