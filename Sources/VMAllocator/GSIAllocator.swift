/// Hands out x86 global system interrupts (GSIs): legacy IRQs wired to IOAPIC pins, and
/// GSIs for MSI/MSI-X routes above them.
///
/// The two ranges are separate pools: ``allocateLegacyIRQ()`` never returns an MSI GSI
/// and ``allocateGSI()`` never returns an IOAPIC pin. Each returns the lowest free
/// number, so freed numbers are reused first.
public struct GSIAllocator: Sendable {
    /// The pool name used in errors about legacy IRQs.
    public static let legacyPoolName = "legacy IRQs"
    /// The pool name used in errors about MSI GSIs.
    public static let msiPoolName = "MSI GSIs"

    /// The IOAPIC pins (legacy IRQ numbers) this allocator manages.
    public let legacyIRQs: Range<UInt32>
    /// The GSIs available for MSI routing.
    public let msiGSIs: Range<UInt32>

    private var legacy: IDAllocator
    private var msi: IDAllocator

    /// Creates an allocator with every IRQ and GSI free.
    ///
    /// The defaults match a KVM IOAPIC (24 pins) and KVM's x86 limit of 4096 routes.
    /// Both ranges must be non-empty and must not overlap (a programming error traps).
    public init(legacyIRQs: Range<UInt32> = 0..<24, msiGSIs: Range<UInt32> = 24..<4096) {
        precondition(!legacyIRQs.isEmpty, "GSIAllocator: the legacy IRQ range \(legacyIRQs) is empty")
        precondition(!msiGSIs.isEmpty, "GSIAllocator: the MSI GSI range \(msiGSIs) is empty")
        precondition(
            !legacyIRQs.overlaps(msiGSIs),
            "GSIAllocator: the legacy IRQ range \(legacyIRQs) overlaps the MSI GSI range \(msiGSIs)")
        self.legacyIRQs = legacyIRQs
        self.msiGSIs = msiGSIs
        legacy = IDAllocator(name: Self.legacyPoolName, range: legacyIRQs.lowerBound...(legacyIRQs.upperBound - 1))
        msi = IDAllocator(name: Self.msiPoolName, range: msiGSIs.lowerBound...(msiGSIs.upperBound - 1))
    }

    /// Allocates the lowest free legacy IRQ (IOAPIC pin), skipping reserved ones.
    ///
    /// - Throws: ``AllocatorError/idsExhausted(pool:range:)`` when every pin is taken.
    public mutating func allocateLegacyIRQ() throws(AllocatorError) -> UInt32 {
        try legacy.allocate()
    }

    /// Marks the legacy IRQ `irq` as taken, for a device with a fixed line (4 for COM1).
    ///
    /// - Throws: ``AllocatorError/idOutOfRange(_:pool:range:)`` when `irq` is not a
    ///   legacy IRQ, or ``AllocatorError/alreadyAllocated(_:pool:)``.
    public mutating func reserveLegacyIRQ(_ irq: UInt32) throws(AllocatorError) {
        try legacy.allocate(irq)
    }

    /// Allocates the lowest free MSI GSI.
    ///
    /// - Throws: ``AllocatorError/idsExhausted(pool:range:)`` when every MSI GSI is taken.
    public mutating func allocateGSI() throws(AllocatorError) -> UInt32 {
        try msi.allocate()
    }

    /// Marks the MSI GSI `gsi` as taken (for example when restoring a snapshot).
    ///
    /// - Throws: ``AllocatorError/idOutOfRange(_:pool:range:)`` when `gsi` is not an
    ///   MSI GSI, or ``AllocatorError/alreadyAllocated(_:pool:)``.
    public mutating func reserveGSI(_ gsi: UInt32) throws(AllocatorError) {
        try msi.allocate(gsi)
    }

    /// Releases a legacy IRQ or an MSI GSI, whichever range `gsi` belongs to.
    ///
    /// - Throws: ``AllocatorError/idNotAllocated(_:pool:)`` when it is not taken, or
    ///   ``AllocatorError/idOutOfRange(_:pool:range:)`` when it is in neither range
    ///   (reported against the nearer of the two).
    public mutating func free(_ gsi: UInt32) throws(AllocatorError) {
        if legacyIRQs.contains(gsi) {
            try legacy.free(gsi)
        } else if msiGSIs.contains(gsi) {
            try msi.free(gsi)
        } else if Self.distance(from: gsi, to: legacyIRQs) < Self.distance(from: gsi, to: msiGSIs) {
            throw .idOutOfRange(gsi, pool: legacy.name, range: legacy.range)
        } else {
            throw .idOutOfRange(gsi, pool: msi.name, range: msi.range)
        }
    }

    /// Whether `gsi` is taken, in either range.
    public func isAllocated(_ gsi: UInt32) -> Bool {
        legacy.isAllocated(gsi) || msi.isAllocated(gsi)
    }

    /// How far `value` lies outside the non-empty `range`.
    private static func distance(from value: UInt32, to range: Range<UInt32>) -> UInt32 {
        value < range.lowerBound ? range.lowerBound - value : value - (range.upperBound - 1)
    }
}
