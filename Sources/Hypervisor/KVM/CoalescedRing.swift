import CLinux
import Synchronization

/// A reader of KVM's coalesced MMIO/PIO ring: the page of writes KVM queued instead of
/// exiting (`KVM_REGISTER_COALESCED_MMIO`), shared by every vCPU of a VM.
///
/// Each vCPU drains it after every `KVM_RUN`, before it handles its own exit, so a device
/// sees the queued writes before any access that exited after them. A write leaves the ring
/// only once it has been handed over: a vCPU that finds the ring empty may rely on every
/// write in it having reached its device, even when another vCPU drained it.
struct CoalescedRing: @unchecked Sendable {
    // SAFETY: `page` is a mapped ring page of `pageSize` bytes (the vCPU mapping's coalesced
    // page, or a test's) that outlives this value; `first` is advanced only under `lock`.
    private let page: UnsafeMutableRawPointer
    private let pageSize: UInt32
    /// The VM's lock: one vCPU at a time hands writes over, in ring order.
    private let lock: CoalescedRing.Lock

    /// The lock every reader of one VM's ring shares.
    final class Lock: Sendable {
        let mutex = Mutex<Void>(())
    }

    /// A reader of the ring at `page` (`pageSize` bytes), serialised by `lock`, which every
    /// vCPU of the VM shares.
    init(page: UnsafeMutableRawPointer, pageSize: Int, lock: CoalescedRing.Lock) {
        self.page = page
        self.pageSize = UInt32(pageSize)
        self.lock = lock
    }

    /// Hands every queued write to `body`, oldest first. Returns at once when the ring is
    /// empty; otherwise waits for a vCPU that is handing writes over to finish.
    func drain(_ body: (CoalescedWrite) -> Void) {
        guard clinux_coalesced_pending(page) != 0 else { return }
        lock.mutex.withLock { _ in
            var write = clinux_coalesced_write()
            while clinux_coalesced_peek(page, pageSize, &write) == 1 {
                body(CoalescedWrite(isPortIO: write.pio != 0, address: write.address, size: Int(write.length), value: write.data))
                clinux_coalesced_advance(page, pageSize)
            }
        }
    }
}
