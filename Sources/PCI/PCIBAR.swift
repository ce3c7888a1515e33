/// What a base address register decodes.
public enum PCIBARKind: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// A memory BAR decoded below 4 GiB (one register).
    case memory32
    /// A memory BAR decoded anywhere in the 64-bit space (two registers: this index and the next).
    case memory64
    /// A port I/O BAR.
    case io

    /// A short lowercase name for messages.
    public var description: String {
        switch self {
        case .memory32: return "32-bit memory"
        case .memory64: return "64-bit memory"
        case .io: return "I/O"
        }
    }
}

/// One base address register: where the device's registers or memory sit and how large
/// the window is.
public struct PCIBAR: Sendable, Equatable, Hashable {
    /// The register index, `0...5` (for a 64-bit BAR, the index of its lower half).
    public var index: Int
    /// What the BAR decodes.
    public var kind: PCIBARKind
    /// The window's size in bytes: a power of two, at least 16 for memory and 4 for I/O.
    public var size: UInt64
    /// The window's guest address (memory) or port (I/O); a multiple of `size`.
    public var address: UInt64
    /// Whether the memory window is prefetchable (reads have no side effects); ignored for I/O.
    public var prefetchable: Bool

    /// Describes a BAR.
    ///
    /// - Parameters:
    ///   - index: the register index (`0...5`; at most 4 for a 64-bit BAR).
    ///   - kind: 32-bit memory, 64-bit memory or I/O.
    ///   - size: the window size, a power of two.
    ///   - address: where the VMM placed the window.
    ///   - prefetchable: whether the memory window is prefetchable.
    public init(index: Int, kind: PCIBARKind, size: UInt64, address: UInt64, prefetchable: Bool = false) {
        self.index = index
        self.kind = kind
        self.size = size
        self.address = address
        self.prefetchable = prefetchable && kind != .io
    }

    /// The registers the BAR occupies (two for a 64-bit BAR).
    public var registerIndices: ClosedRange<Int> {
        kind == .memory64 ? index...(index + 1) : index...index
    }

    /// The read-only flag bits in the low dword: bit 0 set for I/O; type `10b` in bits 1-2
    /// for 64-bit memory and bit 3 for prefetchable memory.
    var flags: UInt32 {
        switch kind {
        case .io: return 0x1
        case .memory32: return prefetchable ? 0x8 : 0x0
        case .memory64: return 0x4 | (prefetchable ? 0x8 : 0x0)
        }
    }

    /// The writable address bits of the lower register.
    var lowWritableMask: UInt32 {
        let addressBits: UInt32 = kind == .io ? 0xffff_fffc : 0xffff_fff0
        return UInt32(truncatingIfNeeded: ~(size &- 1)) & addressBits
    }

    /// The writable address bits of the upper register of a 64-bit BAR.
    var highWritableMask: UInt32 {
        UInt32(truncatingIfNeeded: ~(size &- 1) >> 32)
    }
}

/// A guest move of a BAR, reported when the guest writes a new address into a BAR
/// register (not when it sizes the BAR). The VMM moves the device's MMIO or port range
/// from ``oldAddress`` to ``newAddress``.
public struct BARReprogram: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The BAR's register index (the lower half for a 64-bit BAR).
    public var index: Int
    /// What the BAR decodes.
    public var kind: PCIBARKind
    /// Where the window was.
    public var oldAddress: UInt64
    /// Where the guest put it.
    public var newAddress: UInt64
    /// The window's size in bytes.
    public var size: UInt64

    /// Describes a move.
    public init(index: Int, kind: PCIBARKind, oldAddress: UInt64, newAddress: UInt64, size: UInt64) {
        self.index = index
        self.kind = kind
        self.oldAddress = oldAddress
        self.newAddress = newAddress
        self.size = size
    }

    /// One line naming the BAR and both addresses.
    public var description: String {
        "\(kind) BAR \(index) (size \(hex(size))) moved from \(hex(oldAddress)) to \(hex(newAddress))"
    }
}
