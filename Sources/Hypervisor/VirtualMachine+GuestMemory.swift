import GuestMemory

extension VirtualMachine {
    /// Registers every region of `memory` as a memory slot, numbered from `firstSlot` in
    /// address order, and returns the slots.
    ///
    /// With `.logDirtyPages` in `flags`, `collectDirtyPages(of:firstSlot:)` can later fold
    /// the pages the guest wrote into the regions' own dirty bitmaps.
    @discardableResult
    public func registerMemory(_ memory: GuestMemory, firstSlot: UInt32 = 0, flags: MemorySlot.Flags = []) throws(HypervisorError) -> [MemorySlot] {
        var slots: [MemorySlot] = []
        for (i, region) in memory.regions.enumerated() {
            let slot = MemorySlot(slot: firstSlot + UInt32(i), guestAddress: region.start.rawValue, size: region.size,
                                  hostAddress: region.hostAddress, flags: region.isReadOnly ? flags.union(.readOnly) : flags)
            try setMemorySlot(slot)
            slots.append(slot)
        }
        return slots
    }

    /// Reads (and resets) the hypervisor's dirty log of each region registered by
    /// `registerMemory(_:firstSlot:flags:)` and ORs it into the region's dirty bitmap, so that
    /// pages written by the guest and pages written by the VMM are found in one place.
    public func collectDirtyPages(of memory: GuestMemory, firstSlot: UInt32 = 0) throws(HypervisorError) {
        for (i, region) in memory.regions.enumerated() {
            region.mergeDirty(bitmap: try dirtyLog(slot: firstSlot + UInt32(i)))
        }
    }
}
