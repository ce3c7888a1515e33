/// Where the VMM takes MSI-X vectors: it maps each table entry to a KVM GSI route
/// (`KVM_SET_GSI_ROUTING` with an MSI entry) and delivers vectors through irqfds.
///
/// ``MSIXConfiguration`` calls these from inside guest register writes (and from
/// ``MSIXConfiguration/trigger(vector:)``), usually while the device holds its lock:
/// implementations must be quick, must not call back into the device, and report their
/// own failures (logging them), because a guest write has nobody to throw to.
public protocol MSIXRouting: Sendable {
    /// The guest changed vector `vector`'s message, or its effective mask changed.
    ///
    /// - Parameters:
    ///   - vector: the table index.
    ///   - address: the 64-bit message address (for x86, 0xfeeX_XXXX with the APIC id).
    ///   - data: the message data (vector number and delivery mode).
    ///   - masked: whether the vector may not fire now (entry mask, function mask, or MSI-X disabled).
    func update(vector: Int, address: UInt64, data: UInt32, masked: Bool)

    /// Sends vector `vector`'s message to the guest now (for KVM: signal its irqfd).
    func deliver(vector: Int)
}

/// One MSI-X table entry (16 bytes in the table BAR).
public struct MSIXTableEntry: Sendable, Equatable, Hashable, Codable {
    /// Message address, lower 32 bits (entry offset 0).
    public var addressLow: UInt32 = 0
    /// Message address, upper 32 bits (entry offset 4).
    public var addressHigh: UInt32 = 0
    /// Message data (entry offset 8).
    public var data: UInt32 = 0
    /// Vector control (entry offset 12); bit 0 masks the vector, and is set at reset.
    public var vectorControl: UInt32 = 1

    /// A reset entry: zero message, masked.
    public init() {}

    /// The 64-bit message address.
    public var address: UInt64 { UInt64(addressHigh) << 32 | UInt64(addressLow) }
    /// Whether the entry's own mask bit is set.
    public var masked: Bool { vectorControl & 1 != 0 }
}

/// What ``MSIXConfiguration/trigger(vector:)`` did with a vector.
public enum MSIXTriggerOutcome: Sendable, Equatable {
    /// The message went to the guest.
    case delivered
    /// The vector or the function is masked: its pending bit is set and it is sent on unmask.
    case pending
    /// MSI-X is disabled or the vector does not exist: nothing happened.
    case dropped
}

/// The MSI-X capability in configuration space (12 bytes): table size, the function
/// mask and enable bits (the only guest-writable bits), and the BAR and offset of the
/// table and the pending-bit array.
public struct MSIXCapability: PCICapability, Equatable {
    /// Message control: table size minus one in bits 0-10, function mask bit 14, enable bit 15.
    public var messageControl: UInt16
    /// The table's BAR index (0-5).
    public var tableBAR: UInt8
    /// The table's offset inside the BAR (8-byte aligned).
    public var tableOffset: UInt32
    /// The pending-bit array's BAR index (0-5).
    public var pbaBAR: UInt8
    /// The pending-bit array's offset inside the BAR (8-byte aligned).
    public var pbaOffset: UInt32

    /// Describes a capability for `vectors` vectors (1...2048), disabled and unmasked.
    public init(vectors: Int, tableBAR: UInt8, tableOffset: UInt32, pbaBAR: UInt8, pbaOffset: UInt32) {
        messageControl = UInt16(max(1, min(vectors, MSIXConfiguration.maxVectors)) - 1)
        self.tableBAR = tableBAR & 0x7
        self.tableOffset = tableOffset & ~0x7
        self.pbaBAR = pbaBAR & 0x7
        self.pbaOffset = pbaOffset & ~0x7
    }

    /// ``PCICapabilityID/msix``.
    public var id: UInt8 { PCICapabilityID.msix }

    /// Message control, table offset/BIR and PBA offset/BIR, little-endian.
    public var body: [UInt8] {
        var bytes: [UInt8] = []
        append16(&bytes, messageControl)
        append32(&bytes, tableOffset | UInt32(tableBAR))
        append32(&bytes, pbaOffset | UInt32(pbaBAR))
        return bytes
    }

    /// Only the function mask and enable bits are writable.
    public var writableMask: [UInt8] { [0x00, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0] }
}

/// The state behind an MSI-X capability: the vector table, the pending-bit array and
/// the function-level mask and enable, as Cloud Hypervisor's `MsixConfig`.
///
/// A passive value kept behind the owning device's lock. The device forwards table and
/// PBA MMIO accesses (``readTable(offset:size:)``, ``writeTable(offset:size:value:)``,
/// ``readPBA(offset:size:)``), hands message control writes from
/// ``PCIConfigWriteResult/msixMessageControl`` to ``setMessageControl(_:)``, and calls
/// ``trigger(vector:)`` to signal. The routing learns of every message or mask change.
///
/// A vector fires only when MSI-X is enabled and neither the function nor the vector is
/// masked; a trigger while masked sets the vector's pending bit instead, and unmasking a
/// pending vector delivers it and clears the bit.
public struct MSIXConfiguration: Sendable {
    /// The largest table MSI-X allows.
    public static let maxVectors = 2048
    /// The size of one table entry in bytes.
    public static let entrySize = 16

    /// The vector table.
    public internal(set) var entries: [MSIXTableEntry]
    /// The pending bits, 64 vectors per element.
    public internal(set) var pendingBits: [UInt64]
    /// Whether the guest enabled MSI-X (message control bit 15).
    public internal(set) var enabled = false
    /// Whether the guest masked every vector (message control bit 14).
    public internal(set) var functionMasked = false
    /// Where messages and mask changes go.
    public let routing: any MSIXRouting

    /// Creates a table of `vectors` masked, empty entries.
    ///
    /// - Throws: ``PCIError/invalidMSIXVectorCount(_:)`` unless `vectors` is in `1...2048`.
    public init(vectors: Int, routing: any MSIXRouting) throws(PCIError) {
        guard (1...Self.maxVectors).contains(vectors) else { throw .invalidMSIXVectorCount(vectors) }
        entries = Array(repeating: MSIXTableEntry(), count: vectors)
        pendingBits = Array(repeating: 0, count: (vectors + 63) / 64)
        self.routing = routing
    }

    /// The number of vectors.
    public var vectorCount: Int { entries.count }
    /// The table's size in bytes.
    public var tableSize: Int { entries.count * Self.entrySize }
    /// The pending-bit array's size in bytes (whole qwords).
    public var pbaSize: Int { pendingBits.count * 8 }

    /// The capability describing this table at the given BARs and offsets.
    public func capability(tableBAR: UInt8, tableOffset: UInt32, pbaBAR: UInt8, pbaOffset: UInt32) -> MSIXCapability {
        MSIXCapability(vectors: vectorCount, tableBAR: tableBAR, tableOffset: tableOffset, pbaBAR: pbaBAR, pbaOffset: pbaOffset)
    }

    /// Whether `vector` may not fire now: MSI-X disabled, function masked or entry masked.
    public func isMasked(vector: Int) -> Bool {
        !enabled || functionMasked || entries[vector].masked
    }

    /// Whether `vector`'s pending bit is set.
    public func isPending(vector: Int) -> Bool {
        guard entries.indices.contains(vector) else { return false }
        return pendingBits[vector / 64] & (1 << UInt64(vector % 64)) != 0
    }

    // MARK: - Message control

    /// Applies a message control word the guest wrote (only bits 14 and 15 count).
    ///
    /// When the effective masks change, every vector's route is updated; vectors that
    /// became deliverable and are pending are delivered and their pending bits cleared.
    public mutating func setMessageControl(_ value: UInt16) {
        let newEnabled = value & 0x8000 != 0
        let newMasked = value & 0x4000 != 0
        guard newEnabled != enabled || newMasked != functionMasked else { return }
        let wasBlocked = !enabled || functionMasked
        enabled = newEnabled
        functionMasked = newMasked
        let blocked = !enabled || functionMasked
        guard wasBlocked != blocked else { return }
        for vector in entries.indices {
            let entry = entries[vector]
            routing.update(vector: vector, address: entry.address, data: entry.data, masked: isMasked(vector: vector))
        }
        if !blocked {
            for vector in entries.indices where !entries[vector].masked && isPending(vector: vector) {
                clearPending(vector)
                routing.deliver(vector: vector)
            }
        }
    }

    // MARK: - Table and PBA MMIO

    /// Reads the table: 4 bytes at a dword-aligned offset or 8 bytes at a qword-aligned
    /// one. Other widths, misaligned or out-of-range accesses read 0.
    public func readTable(offset: UInt64, size: Int) -> UInt64 {
        guard let (vector, field) = tableSlot(offset: offset, size: size) else { return 0 }
        let entry = entries[vector]
        let fields = [entry.addressLow, entry.addressHigh, entry.data, entry.vectorControl]
        if size == 8 {
            return UInt64(fields[field]) | UInt64(fields[field + 1]) << 32
        }
        return UInt64(fields[field])
    }

    /// Writes the table (4 or 8 bytes, aligned). Only bit 0 of vector control is writable.
    ///
    /// A changed entry is re-routed while MSI-X is enabled; clearing the mask bit of a
    /// pending, deliverable vector delivers it and clears its pending bit.
    public mutating func writeTable(offset: UInt64, size: Int, value: UInt64) {
        guard let (vector, field) = tableSlot(offset: offset, size: size) else { return }
        let old = entries[vector]
        var entry = old
        let words = size == 8 ? [UInt32(truncatingIfNeeded: value), UInt32(truncatingIfNeeded: value >> 32)]
            : [UInt32(truncatingIfNeeded: value)]
        for (i, word) in words.enumerated() {
            switch field + i {
            case 0: entry.addressLow = word
            case 1: entry.addressHigh = word
            case 2: entry.data = word
            default: entry.vectorControl = (entry.vectorControl & ~1) | (word & 1)
            }
        }
        guard entry != old else { return }
        entries[vector] = entry
        if enabled {
            routing.update(vector: vector, address: entry.address, data: entry.data, masked: isMasked(vector: vector))
        }
        if old.masked, !entry.masked, !isMasked(vector: vector), isPending(vector: vector) {
            clearPending(vector)
            routing.deliver(vector: vector)
        }
    }

    /// Reads the pending-bit array: 4 bytes at a dword-aligned offset or 8 at a
    /// qword-aligned one; anything else reads 0.
    public func readPBA(offset: UInt64, size: Int) -> UInt64 {
        guard size == 4 || size == 8, offset % UInt64(size) == 0, offset < UInt64(pbaSize) else { return 0 }
        let qword = pendingBits[Int(offset / 8)]
        if size == 8 { return qword }
        return offset % 8 == 0 ? qword & 0xffff_ffff : qword >> 32
    }

    /// Writes to the pending-bit array are ignored: it is read-only.
    public func writePBA(offset: UInt64, size: Int, value: UInt64) {}

    /// Decodes a table access into (vector, first field), or `nil` when invalid.
    private func tableSlot(offset: UInt64, size: Int) -> (Int, Int)? {
        guard size == 4 || size == 8, offset % UInt64(size) == 0, offset < UInt64(tableSize) else { return nil }
        return (Int(offset / 16), Int(offset % 16) / 4)
    }

    // MARK: - Signalling

    /// Signals `vector`: delivers it when deliverable, otherwise sets its pending bit if
    /// MSI-X is enabled (a disabled function or a bad vector drops the signal).
    @discardableResult
    public mutating func trigger(vector: Int) -> MSIXTriggerOutcome {
        guard entries.indices.contains(vector), enabled else { return .dropped }
        if functionMasked || entries[vector].masked {
            pendingBits[vector / 64] |= 1 << UInt64(vector % 64)
            return .pending
        }
        routing.deliver(vector: vector)
        return .delivered
    }

    /// Clears `vector`'s pending bit.
    private mutating func clearPending(_ vector: Int) {
        pendingBits[vector / 64] &= ~(1 << UInt64(vector % 64))
    }
}

/// Appends `value` little-endian.
func append16(_ bytes: inout [UInt8], _ value: UInt16) {
    bytes.append(UInt8(truncatingIfNeeded: value))
    bytes.append(UInt8(truncatingIfNeeded: value >> 8))
}

/// Appends `value` little-endian.
func append32(_ bytes: inout [UInt8], _ value: UInt32) {
    for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
}
