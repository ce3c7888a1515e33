import GuestMemory
import HostSystem

/// Guest RAM into and out of the snapshot's `memory-ranges` file, through `GuestMemory`'s
/// sparse snapshot writer, its copy-mode reader and its on-demand (userfaultfd) restorer.
enum MemorySnapshotIO {
    /// The memory manager's section of `state.json`: Cloud Hypervisor's `MemoryRangeTable`.
    typealias Table = MemoryRangeTable

    /// What saving wrote.
    struct Saved {
        /// The ranges, in file order.
        var table: Table
        /// The file's size.
        var fileSize: UInt64
    }

    /// What a restore leaves running: nothing for a copy, the fault handler for on-demand.
    final class Restoration: Sendable {
        let lazy: LazyMemoryRestorer?
        init(lazy: LazyMemoryRestorer?) { self.lazy = lazy }
        /// Stops the fault handler (after the vCPUs stopped).
        func stop() { lazy?.stop() }
    }

    /// Writes every region into `file` (sparse: zero pages stay holes) and makes it durable.
    static func save(_ memory: GuestMemory, to file: OwnedFileDescriptor, path: String) throws(SnapshotError) -> Saved {
        do {
            let table = try memory.saveSnapshot(to: file)
            try file.synchronize()
            return Saved(table: table, fileSize: UInt64(try file.size()))
        } catch {
            throw .io("cannot write the guest memory to \(path): \(error)")
        }
    }

    /// Brings `file` into `memory`: read now (`onDemand == false`, `prefault` then also
    /// touches every page), or served page by page on first touch through userfaultfd (with
    /// `prefault`, the rest is read in the background).
    static func restore(_ memory: GuestMemory, table: Table, from file: OwnedFileDescriptor, onDemand: Bool,
                        prefault: Bool) throws(SnapshotError) -> Restoration {
        do {
            if onDemand {
                let lazy = try LazyMemoryRestorer(memory: memory, file: file, table: table)
                if prefault { lazy.prefaultRemaining() }
                return Restoration(lazy: lazy)
            }
            try memory.restoreSnapshot(from: file, table: table, prefault: prefault)
            return Restoration(lazy: nil)
        } catch {
            throw .damaged("memory-ranges cannot be restored: \(error)")
        }
    }
}
