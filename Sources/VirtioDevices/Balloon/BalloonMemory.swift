#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import GuestMemory

/// Where a virtio-balloon device sends the pages its guest gives up and takes back: the host
/// memory behind guest RAM. Injected so that a test can record the calls instead.
public protocol BalloonMemory: Sendable {
    /// The host's page size in bytes (a multiple of the balloon's 4 KiB pages): a host page
    /// is released once the guest has given up every 4 KiB page in it.
    var pageSize: UInt64 { get }
    /// Hands `length` bytes at `address` back to the host, clamped to the memory region
    /// holding `address`.
    ///
    /// - Throws: `GuestMemoryError` when no region holds `address` or the host refuses.
    func release(_ address: GuestAddress, length: UInt64, in memory: GuestMemory) throws(GuestMemoryError)
    /// Tells the host the `length` bytes at `address` will be used again soon.
    ///
    /// - Throws: `GuestMemoryError` when the range is not guest RAM or the host refuses.
    func willNeed(_ address: GuestAddress, length: UInt64, in memory: GuestMemory) throws(GuestMemoryError)
}

/// The host's memory, as Cloud Hypervisor's balloon treats it: a released range is punched
/// out of its memory file (`shared=on`) and dropped with `MADV_DONTNEED`; a range taken back
/// gets `MADV_WILLNEED` (``GuestMemory/discard(_:length:)``, ``GuestMemory/adviseWillNeed(_:length:)``).
public struct HostBalloonMemory: BalloonMemory {
    /// The host's page size (`sysconf(_SC_PAGESIZE)`).
    public let pageSize: UInt64

    /// Uses the host's page size.
    public init() {
        pageSize = UInt64(max(4096, sysconf(Int32(_SC_PAGESIZE))))
    }

    /// ``GuestMemory/discard(_:length:)``.
    public func release(_ address: GuestAddress, length: UInt64, in memory: GuestMemory) throws(GuestMemoryError) {
        try memory.discard(address, length: length)
    }

    /// ``GuestMemory/adviseWillNeed(_:length:)``.
    public func willNeed(_ address: GuestAddress, length: UInt64, in memory: GuestMemory) throws(GuestMemoryError) {
        try memory.adviseWillNeed(address, length: length)
    }
}

/// A host page larger than 4 KiB that the guest has given up in part (Cloud Hypervisor's
/// `PartiallyBalloonedPage`): its 4 KiB pages are collected until all are in, then the whole
/// host page is released. A page in another host page starts the collection over.
struct PartialHostPage: Sendable {
    /// The host page's guest address.
    var address: UInt64 = 0
    /// One bit per 4 KiB page in it.
    var given: [Bool]

    init(pageSize: UInt64) {
        given = Array(repeating: false, count: Int(pageSize / VirtioBalloon.pfnSize))
    }

    /// Records the 4 KiB page at `address`; returns the host page's address once it is complete
    /// (and starts over).
    mutating func add(_ address: UInt64, pageSize: UInt64) -> UInt64? {
        let base = address & ~(pageSize - 1)
        if base != self.address {
            self.address = base
            given = Array(repeating: false, count: given.count)
        }
        given[Int((address - base) / VirtioBalloon.pfnSize)] = true
        guard given.allSatisfy({ $0 }) else { return nil }
        given = Array(repeating: false, count: given.count)
        return base
    }
}
