import CLinux
import Foundation
@testable import Hypervisor
import Synchronization
import Testing

/// The coalesced ring reader on a ring page built by hand, laid out as KVM writes it.
@Suite("Coalesced ring")
struct CoalescedRingTests {
    /// A page-sized ring: `first` and `last` (u32 each), then 24-byte entries.
    final class FakeRing: @unchecked Sendable {
        let size = 4096
        let page: UnsafeMutableRawPointer
        let lock = CoalescedRing.Lock()
        var capacity: UInt32 { clinux_coalesced_capacity(UInt32(size)) }

        init(first: UInt32 = 0) {
            page = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
            page.initializeMemory(as: UInt8.self, repeating: 0, count: size)
            page.storeBytes(of: first, toByteOffset: 0, as: UInt32.self)
            page.storeBytes(of: first, toByteOffset: 4, as: UInt32.self)
        }

        deinit { page.deallocate() }

        /// Appends a port write as KVM does: the entry, then `last` moved on.
        func push(port: UInt64, size: UInt32, value: UInt64) {
            let last = page.load(fromByteOffset: 4, as: UInt32.self)
            let entry = 8 + Int(last) * Int(clinux_coalesced_entry_size())
            page.storeBytes(of: port, toByteOffset: entry, as: UInt64.self)
            page.storeBytes(of: size, toByteOffset: entry + 8, as: UInt32.self)
            page.storeBytes(of: UInt32(1), toByteOffset: entry + 12, as: UInt32.self)
            page.storeBytes(of: value, toByteOffset: entry + 16, as: UInt64.self)
            page.storeBytes(of: (last + 1) % capacity, toByteOffset: 4, as: UInt32.self)
        }

        var reader: CoalescedRing { CoalescedRing(page: page, pageSize: size, lock: lock) }
    }

    @Test("Writes come out oldest first, across the ring's end, and only once")
    func order() {
        let ring = FakeRing(first: clinux_coalesced_capacity(4096) - 1)
        ring.push(port: 0xCF8, size: 4, value: 0x8000_0010)
        ring.push(port: 0xCF8, size: 4, value: 0x8000_0814)
        ring.push(port: 0xCF9, size: 1, value: 7)
        var writes: [CoalescedWrite] = []
        ring.reader.drain { writes.append($0) }
        #expect(writes == [
            CoalescedWrite(isPortIO: true, address: 0xCF8, size: 4, value: 0x8000_0010),
            CoalescedWrite(isPortIO: true, address: 0xCF8, size: 4, value: 0x8000_0814),
            CoalescedWrite(isPortIO: true, address: 0xCF9, size: 1, value: 7),
        ])
        var again = 0
        ring.reader.drain { _ in again += 1 }
        #expect(again == 0, "a drained ring is empty")
        #expect(ring.page.load(fromByteOffset: 0, as: UInt32.self) == 2, "first wrapped past the end")
    }

    @Test("A vCPU that drains while another hands a write over waits until that write has reached its device")
    func drainWaitsForAHandOverInProgress() throws {
        let ring = FakeRing()
        ring.push(port: 0xCF8, size: 4, value: 0x8000_0010)
        let inBody = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0), returned = DispatchSemaphore(value: 0)
        let applied = Atomic<Bool>(false), sawApplied = Atomic<Int>(-1), extra = Atomic<Int>(0)
        let first = Thread {
            ring.reader.drain { _ in
                inBody.signal()
                release.wait()
                applied.store(true, ordering: .releasing)
            }
        }
        first.start()
        inBody.wait()
        // The first vCPU holds the write (the device has not seen it yet): a second vCPU's
        // exit must not be handled before it has.
        let second = Thread {
            ring.reader.drain { _ in extra.add(1, ordering: .relaxed) }
            sawApplied.store(applied.load(ordering: .acquiring) ? 1 : 0, ordering: .releasing)
            returned.signal()
        }
        second.start()
        #expect(returned.wait(timeout: .now() + 0.3) == .timedOut, "the second drain returned while the write was still being handed over")
        release.signal()
        #expect(returned.wait(timeout: .now() + 10) == .success)
        #expect(sawApplied.load(ordering: .acquiring) == 1)
        #expect(extra.load(ordering: .relaxed) == 0, "the write was handed over once")
    }
}
