import DeviceModel

/// A configuration space's state for snapshot and restore: every dword as the guest
/// reads it (command, status, interrupt line, BAR registers, MSI and other capabilities'
/// writable bytes) and the address each BAR was last moved to.
///
/// The read-only bits travel too, so that a restore can refuse a state saved from a
/// function of another kind (another device id, class, BAR layout or capability list).
public struct PCIConfigurationState: Codable, Equatable, Sendable {
    /// The space's dwords (64 for a conventional space, 1024 for PCI Express).
    public var registers: [UInt32]
    /// For BAR indices 0-5: the address the BAR decodes (`nil` where the function has no
    /// BAR, and for the upper half of a 64-bit BAR).
    public var barAddresses: [UInt64?]

    /// A state with every field given.
    public init(registers: [UInt32], barAddresses: [UInt64?]) {
        self.registers = registers
        self.barAddresses = barAddresses
    }

    /// The command register.
    public var command: UInt16 { registers.count > 1 ? UInt16(truncatingIfNeeded: registers[1]) : 0 }
    /// The status register.
    public var status: UInt16 { registers.count > 1 ? UInt16(truncatingIfNeeded: registers[1] >> 16) : 0 }
    /// The interrupt line byte.
    public var interruptLine: UInt8 { registers.count > 15 ? UInt8(truncatingIfNeeded: registers[15]) : 0 }
}

extension PCIConfiguration {
    /// The space's current state.
    public func saveState() -> PCIConfigurationState {
        PCIConfigurationState(registers: registers, barAddresses: barTable.map { $0?.address })
    }

    /// Replaces the guest-visible state with `state`, which must come from a space built
    /// the same way (same identity, BARs and capabilities). Nothing changes when it throws.
    ///
    /// - Throws: `DeviceStateError` naming the field: another number of registers, a
    ///   read-only bit that differs (another kind of function), a BAR present in one and
    ///   not the other, or a BAR address not aligned to its size or, for a 32-bit memory
    ///   or I/O BAR, not below 4 GiB.
    public mutating func restoreState(_ state: PCIConfigurationState) throws(DeviceStateError) {
        func refuse(_ reason: String) -> DeviceStateError { DeviceStateError(device: "PCI configuration space", reason: reason) }
        guard state.registers.count == registers.count else {
            throw refuse("registers: \(state.registers.count) dwords saved, this space has \(registers.count)")
        }
        let deviceSet = UInt32(Self.statusInterrupt) << 16
        for index in registers.indices {
            let readOnly = ~(writable[index] | writeOneToClear[index]) & (index == 1 ? ~deviceSet : UInt32.max)
            guard state.registers[index] & readOnly == registers[index] & readOnly else {
                throw refuse("registers[\(index)] (offset \(hex(UInt64(index * 4)))): read-only bits "
                    + "\(hex(UInt64(state.registers[index] & readOnly))) differ from this function's "
                    + "\(hex(UInt64(registers[index] & readOnly))); the state comes from another kind of function")
            }
        }
        guard state.barAddresses.count == Self.barCount else {
            throw refuse("barAddresses: \(state.barAddresses.count) entries saved, a type-0 header has \(Self.barCount)")
        }
        var table = barTable
        for index in 0..<Self.barCount {
            switch (barTable[index], state.barAddresses[index]) {
            case (nil, nil): continue
            case (nil, .some):
                throw refuse("barAddresses[\(index)]: an address is saved but this function has no BAR \(index)")
            case (.some, nil):
                throw refuse("barAddresses[\(index)]: no address is saved for this function's BAR \(index)")
            case (.some(let bar), .some(let address)):
                guard address & (bar.size - 1) == 0 else {
                    throw refuse("barAddresses[\(index)]: \(hex(address)) is not aligned to the BAR's size \(hex(bar.size))")
                }
                if bar.kind != .memory64 {
                    let (end, overflow) = address.addingReportingOverflow(bar.size)
                    guard !overflow, end <= 1 << 32 else {
                        throw refuse("barAddresses[\(index)]: \(hex(address)) does not fit the \(bar.kind) BAR below 4 GiB")
                    }
                }
                table[index]?.address = address
            }
        }
        registers = state.registers
        barTable = table
    }
}

/// The MSI-X state for snapshot and restore: the vector table, the pending bits and the
/// function's enable and mask bits.
public struct MSIXState: Codable, Equatable, Sendable {
    /// The table entries, one per vector.
    public var entries: [MSIXTableEntry]
    /// The pending bits, 64 vectors per element.
    public var pendingBits: [UInt64]
    /// Whether MSI-X was enabled.
    public var enabled: Bool
    /// Whether the function was masked.
    public var functionMasked: Bool

    /// A state with every field given.
    public init(entries: [MSIXTableEntry], pendingBits: [UInt64], enabled: Bool, functionMasked: Bool) {
        self.entries = entries
        self.pendingBits = pendingBits
        self.enabled = enabled
        self.functionMasked = functionMasked
    }
}

extension MSIXConfiguration {
    /// The current state.
    public func saveState() -> MSIXState {
        MSIXState(entries: entries, pendingBits: pendingBits, enabled: enabled, functionMasked: functionMasked)
    }

    /// Replaces the table, pending bits and function bits with `state` and tells the
    /// routing every vector's message and mask (so the VMM rebuilds its routes); pending
    /// vectors stay pending until the guest unmasks them. Nothing changes when it throws.
    ///
    /// - Throws: `DeviceStateError` naming the field: another number of vectors or
    ///   pending words, a vector control with bits other than the mask, or a pending bit
    ///   for a vector the table does not have.
    public mutating func restoreState(_ state: MSIXState) throws(DeviceStateError) {
        try checkState(state)
        entries = state.entries
        pendingBits = state.pendingBits
        enabled = state.enabled
        functionMasked = state.functionMasked
        for (vector, entry) in entries.enumerated() {
            routing.update(vector: vector, address: entry.address, data: entry.data, masked: isMasked(vector: vector))
        }
    }

    /// Checks that `state` would restore, changing nothing and calling no routing.
    ///
    /// - Throws: what ``restoreState(_:)`` would throw.
    public func checkState(_ state: MSIXState) throws(DeviceStateError) {
        func refuse(_ reason: String) -> DeviceStateError { DeviceStateError(device: "MSI-X", reason: reason) }
        guard state.entries.count == entries.count else {
            throw refuse("entries: \(state.entries.count) vectors saved, this table has \(entries.count)")
        }
        guard state.pendingBits.count == pendingBits.count else {
            throw refuse("pendingBits: \(state.pendingBits.count) words saved, this table needs \(pendingBits.count)")
        }
        for (vector, entry) in state.entries.enumerated() where entry.vectorControl & ~1 != 0 {
            throw refuse("entries[\(vector)].vectorControl: \(hex(UInt64(entry.vectorControl))) has bits besides the mask bit")
        }
        for (word, bits) in state.pendingBits.enumerated() {
            let first = word * 64
            let valid = entries.count - first >= 64 ? UInt64.max : (1 << UInt64(entries.count - first)) - 1
            guard bits & ~valid == 0 else {
                throw refuse("pendingBits[\(word)]: \(hex(bits)) marks vectors beyond the table's \(entries.count)")
            }
        }
    }
}
