// A running VM's memory as a live migration reads it: dirty-page logging on and off (KVM's log
// for the pages the guest writes, GuestMemory's bitmaps for the pages devices write), the pages
// written since the last round, and the payload of a `Memory` request.
import GuestMemory
import Hypervisor

/// Dirty-page logging and range transfer of one VM's memory.
enum MigrationMemory {
    /// Turns logging on: every memory slot gets `KVM_MEM_LOG_DIRTY_PAGES` and device writes
    /// mark GuestMemory's bitmaps; both logs start empty.
    static func startDirtyLog(_ built: BuiltVM) throws(MigrationError) {
        do {
            for slot in built.vm.memorySlots where !slot.flags.contains(.logDirtyPages) {
                var logged = slot
                logged.flags.insert(.logDirtyPages)
                try built.vm.setMemorySlot(logged)
            }
            for slot in built.vm.memorySlots { _ = try built.vm.dirtyLog(slot: slot.slot) }
        } catch {
            throw MigrationError("cannot start dirty-page logging: \(error)")
        }
        built.memory.enableDirtyTracking()
        for region in built.memory.regions { region.clearDirty() }
    }

    /// Turns logging off again (after a failed migration, so the VM runs at full speed).
    static func stopDirtyLog(_ built: BuiltVM) {
        built.memory.disableDirtyTracking()
        for slot in built.vm.memorySlots where slot.flags.contains(.logDirtyPages) {
            var plain = slot
            plain.flags.remove(.logDirtyPages)
            try? built.vm.setMemorySlot(plain)
        }
    }

    /// The pages written since the last call, by the guest or by a device. Each region's KVM
    /// log is found by its address: a hot-added region's slot comes after the devices' (pmem).
    static func dirtyRanges(_ built: BuiltVM) throws(MigrationError) -> MemoryRangeTable {
        let slots = built.vm.memorySlots
        do {
            for region in built.memory.regions {
                guard let slot = slots.first(where: { $0.guestAddress == region.start.rawValue && $0.size == region.size }) else {
                    throw MigrationError("guest memory at \(region.start) has no KVM memory slot")
                }
                region.mergeDirty(bitmap: try built.vm.dirtyLog(slot: slot.slot))
            }
        } catch let error as MigrationError {
            throw error
        } catch {
            throw MigrationError("cannot read the dirty-page log: \(error)")
        }
        return built.memory.takeDirtyRanges()
    }

    /// Sends one `Memory` request: the table, then each range's bytes straight from guest
    /// memory; waits for the destination's OK. An empty table sends nothing.
    static func send(_ table: MemoryRangeTable, of memory: GuestMemory, over channel: MigrationChannel) throws(MigrationError) {
        guard !table.ranges.isEmpty else { return }
        let encoded = MigrationRangeCodec.encode(table)
        try channel.send(MigrationRequest(.memory, length: UInt64(encoded.count)), payload: encoded)
        for range in table.ranges {
            let buffer: UnsafeMutableRawBufferPointer
            do { buffer = try memory.hostBuffer(for: range) } catch { throw MigrationError("memory range \(range) is not guest memory: \(error)") }
            try channel.writeFully(UnsafeRawBufferPointer(buffer))
        }
        try channel.expectOK(after: "a memory round")
    }

    /// Receives the body of a `Memory` request of `length` table bytes into `memory`: every
    /// range must lie inside one region of it.
    static func receive(tableLength: UInt64, into memory: GuestMemory, over channel: MigrationChannel) throws(MigrationError) {
        guard tableLength <= maxTableBytes else {
            throw MigrationError("a memory range table of \(tableLength) bytes is larger than the \(maxTableBytes) allowed")
        }
        let table = try MigrationRangeCodec.decode(channel.read(Int(tableLength)))
        for range in table.ranges {
            let buffer: UnsafeMutableRawBufferPointer
            do { buffer = try memory.hostBuffer(for: range) } catch {
                throw MigrationError("memory range \(range) is not inside the guest's memory: \(error)")
            }
            try channel.readFully(into: buffer)
        }
    }

    /// The largest range table accepted: 4 Mi ranges (a 64 GiB guest dirty in every other page).
    static let maxTableBytes: UInt64 = 64 << 20
}
