/// A function's class: base class, subclass and programming interface (configuration
/// bytes 0x0b, 0x0a and 0x09).
public struct PCIClassCode: Sendable, Equatable, Hashable {
    /// The base class (byte 0x0b), for example 0x06 for bridges.
    public var baseClass: UInt8
    /// The subclass (byte 0x0a), for example 0x00 for a host bridge.
    public var subclass: UInt8
    /// The programming interface (byte 0x09).
    public var programmingInterface: UInt8

    /// Creates a class code.
    public init(baseClass: UInt8, subclass: UInt8, programmingInterface: UInt8 = 0) {
        self.baseClass = baseClass
        self.subclass = subclass
        self.programmingInterface = programmingInterface
    }

    /// Bridge device, host bridge (0x06/0x00).
    public static let hostBridge = PCIClassCode(baseClass: 0x06, subclass: 0x00)
    /// Mass storage, other (0x01/0x80).
    public static let otherMassStorage = PCIClassCode(baseClass: 0x01, subclass: 0x80)
    /// Network controller, Ethernet (0x02/0x00).
    public static let ethernet = PCIClassCode(baseClass: 0x02, subclass: 0x00)
    /// Unclassified device (0xff/0x00).
    public static let other = PCIClassCode(baseClass: 0xff, subclass: 0x00)
}

/// What a configuration write changed besides plain register bits, for the device that
/// owns the configuration space to act upon.
public struct PCIConfigWriteResult: Sendable, Equatable {
    /// The BAR the guest moved, if the write completed a BAR move.
    public var barReprogram: BARReprogram?
    /// The new MSI-X message control word, if the write touched it.
    public var msixMessageControl: UInt16?
    /// Whether the write touched the MSI capability (re-read it with ``MSIState/init(configuration:)``).
    public var msiTouched: Bool

    /// A result reporting nothing.
    public init(barReprogram: BARReprogram? = nil, msixMessageControl: UInt16? = nil, msiTouched: Bool = false) {
        self.barReprogram = barReprogram
        self.msixMessageControl = msixMessageControl
        self.msiTouched = msiTouched
    }
}

/// A type-0 PCI configuration space: the 64-byte header, the capability list and, for
/// PCI Express functions, the extended space up to 4 KiB.
///
/// A passive value: the owning device keeps it behind its lock, feeds it the guest's
/// configuration reads and writes (1, 2 or 4 bytes inside one dword, as ECAM and the
/// 0xCF8/0xCFC ports deliver them) and acts on the ``PCIConfigWriteResult`` of each write.
///
/// Every dword has a mask of guest-writable bits and a mask of write-1-to-clear bits
/// (the error bits of the status register); all other bits are read-only to the guest,
/// so identity registers (vendor, device, class, revision, subsystem, header type,
/// interrupt pin, capability pointer) can never be changed by the guest.
///
/// BARs follow the sizing protocol: the writable bits of a BAR are its address bits, so
/// writing all ones reads back the size mask with the read-only type flags. A write that
/// places a new address in a BAR (for a 64-bit BAR: the write of its upper half) is
/// reported as a ``BARReprogram``; a sizing write and a rewrite of the current address
/// are not.
public struct PCIConfiguration: Sendable {
    /// The size of the conventional configuration space.
    public static let standardSize = 256
    /// The size of the PCI Express configuration space.
    public static let extendedSize = 4096
    /// The configuration offset of the first BAR.
    public static let barOffset = 0x10
    /// The number of BAR registers in a type-0 header.
    public static let barCount = 6
    /// Command bits a virtual function implements: I/O space, memory space, bus master,
    /// parity error response, SERR# enable and interrupt disable.
    public static let commandWritableBits: UInt16 = 0x0547
    /// Status bits cleared by writing 1: master data parity error, signaled/received
    /// target abort, received master abort, signaled system error, detected parity error.
    public static let statusWriteOneToClearBits: UInt16 = 0xf900
    /// Status bit 4: the function has a capability list.
    public static let statusCapabilityList: UInt16 = 0x0010
    /// Status bit 3: the function's INTx is asserted.
    public static let statusInterrupt: UInt16 = 0x0008
    /// The first offset handed out to capabilities (just after the header).
    public static let firstCapabilityOffset = 0x40
    /// The offset of the first extended capability.
    public static let firstExtendedCapabilityOffset = 0x100

    var registers: [UInt32]
    var writable: [UInt32]
    var writeOneToClear: [UInt32]
    var barTable: [PCIBAR?] = Array(repeating: nil, count: PCIConfiguration.barCount)
    private var lastCapabilityOffset: Int?
    private var nextCapabilityOffset = PCIConfiguration.firstCapabilityOffset
    private var lastExtendedCapabilityOffset: Int?
    private var nextExtendedCapabilityOffset = PCIConfiguration.firstExtendedCapabilityOffset

    /// The offset of the MSI-X capability, once added.
    public private(set) var msixCapabilityOffset: Int?
    /// The offset of the MSI capability, once added.
    public private(set) var msiCapabilityOffset: Int?

    /// Creates a type-0 configuration space.
    ///
    /// - Parameters:
    ///   - vendorID: the vendor id (offset 0x00).
    ///   - deviceID: the device id (offset 0x02).
    ///   - revision: the revision id (offset 0x08).
    ///   - classCode: the class code (offsets 0x09-0x0b).
    ///   - subsystemVendorID: the subsystem vendor id (offset 0x2c).
    ///   - subsystemID: the subsystem id (offset 0x2e).
    ///   - interruptPin: 0 for no INTx, 1-4 for INTA#-INTD# (offset 0x3d).
    ///   - multiFunction: sets bit 7 of the header type.
    ///   - extendedSpace: whether the space is 4 KiB (PCI Express) rather than 256 bytes.
    public init(
        vendorID: UInt16, deviceID: UInt16, revision: UInt8 = 0, classCode: PCIClassCode,
        subsystemVendorID: UInt16 = 0, subsystemID: UInt16 = 0, interruptPin: UInt8 = 0,
        multiFunction: Bool = false, extendedSpace: Bool = false
    ) {
        let dwords = (extendedSpace ? Self.extendedSize : Self.standardSize) / 4
        registers = Array(repeating: 0, count: dwords)
        writable = Array(repeating: 0, count: dwords)
        writeOneToClear = Array(repeating: 0, count: dwords)

        registers[0] = UInt32(deviceID) << 16 | UInt32(vendorID)
        writable[1] = UInt32(Self.commandWritableBits)
        writeOneToClear[1] = UInt32(Self.statusWriteOneToClearBits) << 16
        registers[2] = UInt32(classCode.baseClass) << 24 | UInt32(classCode.subclass) << 16
            | UInt32(classCode.programmingInterface) << 8 | UInt32(revision)
        // Cache line size (byte 0x0c) is read/write; header type 0 at byte 0x0e.
        registers[3] = (multiFunction ? 0x80 : 0x00) << 16
        writable[3] = 0x0000_00ff
        registers[11] = UInt32(subsystemID) << 16 | UInt32(subsystemVendorID)
        // Interrupt line (byte 0x3c) is scratch for the guest; the pin is fixed.
        registers[15] = UInt32(interruptPin) << 8
        writable[15] = 0x0000_00ff
    }

    /// The size of the space in bytes (256 or 4096).
    public var size: Int { registers.count * 4 }

    /// The vendor id.
    public var vendorID: UInt16 { UInt16(truncatingIfNeeded: registers[0]) }
    /// The device id.
    public var deviceID: UInt16 { UInt16(truncatingIfNeeded: registers[0] >> 16) }
    /// The revision id.
    public var revision: UInt8 { UInt8(truncatingIfNeeded: registers[2]) }
    /// The class code.
    public var classCode: PCIClassCode {
        PCIClassCode(
            baseClass: UInt8(truncatingIfNeeded: registers[2] >> 24),
            subclass: UInt8(truncatingIfNeeded: registers[2] >> 16),
            programmingInterface: UInt8(truncatingIfNeeded: registers[2] >> 8))
    }
    /// The subsystem vendor id.
    public var subsystemVendorID: UInt16 { UInt16(truncatingIfNeeded: registers[11]) }
    /// The subsystem id.
    public var subsystemID: UInt16 { UInt16(truncatingIfNeeded: registers[11] >> 16) }
    /// The header type byte (0x00, or 0x80 for a multi-function device).
    public var headerType: UInt8 { UInt8(truncatingIfNeeded: registers[3] >> 16) }
    /// The command register as the guest last wrote it.
    public var command: UInt16 { UInt16(truncatingIfNeeded: registers[1]) }
    /// The status register.
    public var status: UInt16 { UInt16(truncatingIfNeeded: registers[1] >> 16) }
    /// The interrupt line the guest wrote (firmware scratch, no effect on delivery).
    public var interruptLine: UInt8 { UInt8(truncatingIfNeeded: registers[15]) }
    /// The interrupt pin (0: none, 1-4: INTA#-INTD#).
    public var interruptPin: UInt8 { UInt8(truncatingIfNeeded: registers[15] >> 8) }
    /// Whether the guest enabled memory space decoding (command bit 1).
    public var memorySpaceEnabled: Bool { command & 0x2 != 0 }
    /// Whether the guest enabled I/O space decoding (command bit 0).
    public var ioSpaceEnabled: Bool { command & 0x1 != 0 }
    /// Whether the guest let the function master the bus, that is do DMA and send MSIs (command bit 2).
    public var busMasterEnabled: Bool { command & 0x4 != 0 }
    /// Whether the guest disabled INTx (command bit 10).
    public var intxDisabled: Bool { command & 0x400 != 0 }

    // MARK: - Guest access

    /// Reads the dword at `index` (offset `index * 4`); all ones beyond the space.
    public func readRegister(_ index: Int) -> UInt32 {
        guard registers.indices.contains(index) else { return 0xffff_ffff }
        return registers[index]
    }

    /// Reads `size` bytes (1, 2 or 4) at byte `offset`, as a configuration cycle does.
    ///
    /// - Returns: the value in the low `size` bytes, or all ones of that size when the
    ///   access leaves the space, crosses a dword boundary or has another width.
    public func read(offset: Int, size: Int) -> UInt32 {
        guard let (index, shift, mask) = Self.decode(offset: offset, size: size, limit: self.size) else {
            return Self.allOnes(size: size)
        }
        return (registers[index] >> shift) & mask
    }

    /// Writes the low `size` bytes (1, 2 or 4) of `value` at byte `offset`, as a guest
    /// configuration cycle does: only writable bits change, and 1s written to
    /// write-1-to-clear bits clear them. Accesses leaving the space, crossing a dword
    /// boundary or of another width are ignored.
    ///
    /// - Returns: the BAR move, MSI-X message control or MSI change the write caused.
    @discardableResult
    public mutating func write(offset: Int, size: Int, value: UInt32) -> PCIConfigWriteResult {
        guard let (index, shift, mask) = Self.decode(offset: offset, size: size, limit: self.size) else {
            return PCIConfigWriteResult()
        }
        let bytes = mask << shift
        let data = (value & mask) << shift
        let old = registers[index]
        var new = (old & ~(writable[index] & bytes)) | (data & writable[index])
        new &= ~(data & writeOneToClear[index])
        registers[index] = new

        var result = PCIConfigWriteResult()
        let barRange = (Self.barOffset / 4)..<(Self.barOffset / 4 + Self.barCount)
        if barRange.contains(index) {
            result.barReprogram = detectBARMove(register: index - barRange.lowerBound)
        }
        if let msix = msixCapabilityOffset, index == msix / 4, bytes & 0xffff_0000 != 0 {
            result.msixMessageControl = UInt16(truncatingIfNeeded: new >> 16)
        }
        if let msi = msiCapabilityOffset {
            let length = MSIState.capabilityLength(messageControl: UInt16(truncatingIfNeeded: registers[msi / 4] >> 16))
            if (msi / 4)..<((msi + length + 3) / 4) ~= index { result.msiTouched = true }
        }
        return result
    }

    /// Splits an access into dword index, bit shift and value mask, or `nil` when invalid.
    private static func decode(offset: Int, size: Int, limit: Int) -> (Int, UInt32, UInt32)? {
        guard size == 1 || size == 2 || size == 4, offset >= 0, offset < limit,
            (offset & 3) + size <= 4
        else { return nil }
        let mask: UInt32 = size == 4 ? 0xffff_ffff : (1 << (UInt32(size) * 8)) - 1
        return (offset / 4, UInt32(offset & 3) * 8, mask)
    }

    /// All ones in the low `size` bytes (clamped to 0...4).
    static func allOnes(size: Int) -> UInt32 {
        size >= 4 ? 0xffff_ffff : size <= 0 ? 0 : (1 << (UInt32(size) * 8)) - 1
    }

    // MARK: - Device-side access

    /// Sets the dword at `index` from the device side, ignoring the guest masks.
    /// Out-of-range indices are ignored.
    public mutating func setRegister(_ index: Int, value: UInt32) {
        guard registers.indices.contains(index) else { return }
        registers[index] = value
    }

    /// Sets which bits of the dword at `index` the guest may write (device side).
    public mutating func setWritableMask(_ index: Int, mask: UInt32) {
        guard writable.indices.contains(index) else { return }
        writable[index] = mask
    }

    /// The guest-writable bits of the dword at `index` (0 beyond the space).
    public func writableMask(_ index: Int) -> UInt32 {
        writable.indices.contains(index) ? writable[index] : 0
    }

    /// Sets which bits of the dword at `index` the guest clears by writing 1 (device side).
    public mutating func setWriteOneToClearMask(_ index: Int, mask: UInt32) {
        guard writeOneToClear.indices.contains(index) else { return }
        writeOneToClear[index] = mask
    }

    /// Raises status bits from the device side (for example an error bit the guest later clears).
    public mutating func setStatusBits(_ bits: UInt16) {
        registers[1] |= UInt32(bits) << 16
    }

    /// Reflects the INTx level in status bit 3, as the device asserts or deasserts its pin.
    public mutating func setInterruptStatus(_ asserted: Bool) {
        let bit = UInt32(Self.statusInterrupt) << 16
        registers[1] = asserted ? registers[1] | bit : registers[1] & ~bit
    }

    // MARK: - BARs

    /// The BARs, in index order.
    public var bars: [PCIBAR] { barTable.compactMap { $0 } }

    /// The BAR whose lower register is `index`, if any, with its current address.
    public func bar(_ index: Int) -> PCIBAR? {
        barTable.indices.contains(index) ? barTable[index] : nil
    }

    /// Adds a BAR at its index and writes its address and flags into the registers.
    ///
    /// - Throws: ``PCIError`` when the index is out of range or in use, the size is not
    ///   a power of two of at least 16 bytes (4 for I/O), the address is not aligned to
    ///   the size, or a 32-bit or I/O BAR does not fit below 4 GiB.
    public mutating func addBAR(_ bar: PCIBAR) throws(PCIError) {
        guard (0..<Self.barCount).contains(bar.index) else { throw .barIndexOutOfRange(index: bar.index) }
        if bar.kind == .memory64, bar.index == Self.barCount - 1 { throw .bar64AtLastIndex }
        for index in bar.registerIndices where isRegisterUsed(index) {
            throw .barIndexInUse(index: index)
        }
        let minimum: UInt64 = bar.kind == .io ? 4 : 16
        guard bar.size >= minimum, bar.size & (bar.size - 1) == 0 else {
            throw .invalidBARSize(index: bar.index, size: bar.size, minimum: minimum)
        }
        guard bar.address & (bar.size - 1) == 0 else {
            throw .misalignedBAR(index: bar.index, address: bar.address, size: bar.size)
        }
        if bar.kind != .memory64 {
            let (end, overflow) = bar.address.addingReportingOverflow(bar.size)
            guard !overflow, end <= 1 << 32 else {
                throw .barAbove4GiB(index: bar.index, address: bar.address, size: bar.size)
            }
        }
        barTable[bar.index] = bar
        let low = Self.barOffset / 4 + bar.index
        registers[low] = UInt32(truncatingIfNeeded: bar.address) & bar.lowWritableMask | bar.flags
        writable[low] = bar.lowWritableMask
        if bar.kind == .memory64 {
            registers[low + 1] = UInt32(truncatingIfNeeded: bar.address >> 32) & bar.highWritableMask
            writable[low + 1] = bar.highWritableMask
        }
    }

    /// Whether BAR register `index` belongs to a BAR (as its lower or upper half).
    private func isRegisterUsed(_ index: Int) -> Bool {
        if barTable[index] != nil { return true }
        return index > 0 && barTable[index - 1]?.kind == .memory64
    }

    /// The address currently programmed in the BAR registers of `bar`.
    private func programmedAddress(of bar: PCIBAR) -> UInt64 {
        let low = Self.barOffset / 4 + bar.index
        var address = UInt64(registers[low] & bar.lowWritableMask)
        if bar.kind == .memory64 {
            address |= UInt64(registers[low + 1] & bar.highWritableMask) << 32
        }
        return address
    }

    /// Checks a write to BAR register `register` for a move, and records the new address.
    private mutating func detectBARMove(register: Int) -> BARReprogram? {
        let bar: PCIBAR
        let reg = Self.barOffset / 4 + register
        if let owner = barTable[register] {
            // The lower half of a 64-bit BAR moves nothing until the upper half is written.
            guard owner.kind != .memory64 else { return nil }
            bar = owner
        } else if register > 0, let owner = barTable[register - 1], owner.kind == .memory64 {
            bar = owner
        } else {
            return nil
        }
        // All address bits set: the guest is sizing the BAR, not moving it.
        if registers[reg] & writable[reg] == writable[reg] { return nil }
        let newAddress = programmedAddress(of: bar)
        guard newAddress != bar.address else { return nil }
        barTable[bar.index]?.address = newAddress
        return BARReprogram(index: bar.index, kind: bar.kind, oldAddress: bar.address, newAddress: newAddress, size: bar.size)
    }

    // MARK: - Capabilities

    /// Appends a capability to the standard list at the next free dword-aligned offset,
    /// links it from the previous capability (or from the capabilities pointer at 0x34)
    /// and sets the status capability-list bit.
    ///
    /// - Returns: the capability's offset.
    /// - Throws: ``PCIError/capabilitySpaceExhausted(length:available:)`` when it does not
    ///   fit below 0x100, ``PCIError/capabilityMaskLengthMismatch(bodyLength:maskLength:)``
    ///   for a bad mask, or ``PCIError/duplicateCapability(id:)`` for a second MSI or MSI-X.
    @discardableResult
    public mutating func addCapability(_ capability: some PCICapability) throws(PCIError) -> Int {
        let body = capability.body
        let mask = capability.writableMask
        guard body.count == mask.count else {
            throw .capabilityMaskLengthMismatch(bodyLength: body.count, maskLength: mask.count)
        }
        if capability.id == PCICapabilityID.msix, msixCapabilityOffset != nil { throw .duplicateCapability(id: capability.id) }
        if capability.id == PCICapabilityID.msi, msiCapabilityOffset != nil { throw .duplicateCapability(id: capability.id) }
        let length = 2 + body.count
        let offset = nextCapabilityOffset
        guard offset + length <= Self.standardSize else {
            throw .capabilitySpaceExhausted(length: length, available: Self.standardSize - offset)
        }
        setByte(offset, capability.id, writable: 0)
        setByte(offset + 1, 0, writable: 0)
        for (i, byte) in body.enumerated() {
            setByte(offset + 2 + i, byte, writable: mask[i])
        }
        if let last = lastCapabilityOffset {
            setByte(last + 1, UInt8(offset), writable: 0)
        } else {
            setByte(0x34, UInt8(offset), writable: 0)
            setStatusBits(Self.statusCapabilityList)
        }
        lastCapabilityOffset = offset
        nextCapabilityOffset = (offset + length + 3) & ~3
        if capability.id == PCICapabilityID.msix { msixCapabilityOffset = offset }
        if capability.id == PCICapabilityID.msi { msiCapabilityOffset = offset }
        return offset
    }

    /// Appends a PCI Express extended capability at the next free dword-aligned offset
    /// from 0x100 and links it from the previous one.
    ///
    /// - Returns: the capability's offset.
    /// - Throws: ``PCIError/noExtendedConfigurationSpace`` for a 256-byte space, or the
    ///   space and mask errors of ``addCapability(_:)``.
    @discardableResult
    public mutating func addExtendedCapability(_ capability: PCIExtendedCapability) throws(PCIError) -> Int {
        guard size == Self.extendedSize else { throw .noExtendedConfigurationSpace }
        guard capability.body.count == capability.writableMask.count else {
            throw .capabilityMaskLengthMismatch(bodyLength: capability.body.count, maskLength: capability.writableMask.count)
        }
        let length = 4 + capability.body.count
        let offset = nextExtendedCapabilityOffset
        guard offset + length <= Self.extendedSize else {
            throw .capabilitySpaceExhausted(length: length, available: Self.extendedSize - offset)
        }
        registers[offset / 4] = UInt32(capability.version & 0xf) << 16 | UInt32(capability.id)
        writable[offset / 4] = 0
        for (i, byte) in capability.body.enumerated() {
            setByte(offset + 4 + i, byte, writable: capability.writableMask[i])
        }
        if let last = lastExtendedCapabilityOffset {
            registers[last / 4] = registers[last / 4] & 0x000f_ffff | UInt32(offset) << 20
        }
        lastExtendedCapabilityOffset = offset
        nextExtendedCapabilityOffset = (offset + length + 3) & ~3
        return offset
    }

    /// The offsets of the standard capabilities, walking the list from 0x34 as a guest
    /// does (stops on a loop or an offset outside the list area).
    public var capabilityOffsets: [Int] {
        var offsets: [Int] = []
        var next = Int(read(offset: 0x34, size: 1)) & ~3
        while next >= Self.firstCapabilityOffset, next < Self.standardSize, !offsets.contains(next) {
            offsets.append(next)
            next = Int(read(offset: next + 1, size: 1)) & ~3
        }
        return offsets
    }

    /// The offset of the first standard capability with `id`, if any.
    public func capabilityOffset(id: UInt8) -> Int? {
        capabilityOffsets.first { read(offset: $0, size: 1) == UInt32(id) }
    }

    /// Writes one byte and its writable mask from the device side.
    private mutating func setByte(_ offset: Int, _ value: UInt8, writable bits: UInt8) {
        let index = offset / 4
        let shift = UInt32(offset & 3) * 8
        registers[index] = registers[index] & ~(0xff << shift) | UInt32(value) << shift
        writable[index] = writable[index] & ~(0xff << shift) | UInt32(bits) << shift
    }
}
