/// The MSI capability (id 0x05) as it is laid out in configuration space: 32- or 64-bit
/// message address, 16-bit message data, and optionally per-vector mask and pending bits.
///
/// The guest may write the enable bit, the multiple-message-enable field, the address,
/// the data and the mask bits; everything else is read-only. After a write for which
/// ``PCIConfigWriteResult/msiTouched`` is set, the device re-reads the state with
/// ``MSIState/init(configuration:)`` and re-routes its vectors.
public struct MSICapability: PCICapability, Equatable {
    /// How many vectors the function asks for: 1, 2, 4, 8, 16 or 32.
    public var vectors: Int
    /// Whether the message address has an upper dword.
    public var is64Bit: Bool
    /// Whether the capability has mask and pending bits.
    public var perVectorMasking: Bool

    /// Describes an MSI capability.
    ///
    /// - Throws: ``PCIError/invalidMSIVectorCount(_:)`` unless `vectors` is a power of two up to 32.
    public init(vectors: Int = 1, is64Bit: Bool = true, perVectorMasking: Bool = false) throws(PCIError) {
        guard [1, 2, 4, 8, 16, 32].contains(vectors) else { throw .invalidMSIVectorCount(vectors) }
        self.vectors = vectors
        self.is64Bit = is64Bit
        self.perVectorMasking = perVectorMasking
    }

    /// ``PCICapabilityID/msi``.
    public var id: UInt8 { PCICapabilityID.msi }

    /// Message control with the capability bits (multiple message capable, 64-bit,
    /// per-vector masking); enable and multiple message enable start at 0.
    public var messageControl: UInt16 {
        UInt16(vectors.trailingZeroBitCount) << 1 | (is64Bit ? 0x80 : 0) | (perVectorMasking ? 0x100 : 0)
    }

    /// The bytes after the id and next pointer, all zero except message control.
    public var body: [UInt8] {
        var bytes: [UInt8] = []
        append16(&bytes, messageControl)
        let rest = MSIState.capabilityLength(messageControl: messageControl) - 4
        bytes.append(contentsOf: [UInt8](repeating: 0, count: rest))
        return bytes
    }

    /// Enable and multiple message enable, address (dword aligned), data and mask bits.
    public var writableMask: [UInt8] {
        var mask: [UInt8] = [0x71, 0x00, 0xfc, 0xff, 0xff, 0xff]
        if is64Bit { mask += [0xff, 0xff, 0xff, 0xff] }
        mask += [0xff, 0xff]
        if perVectorMasking {
            let bits: UInt32 = vectors == 32 ? 0xffff_ffff : (1 << UInt32(vectors)) - 1
            mask += [0, 0]
            append32(&mask, bits)
            mask += [0, 0, 0, 0]
        }
        return mask
    }
}

/// The MSI state the guest programmed, decoded from a configuration space.
public struct MSIState: Sendable, Equatable, Codable {
    /// Whether the guest enabled MSI.
    public var enabled: Bool
    /// How many vectors the guest enabled (1 << multiple message enable).
    public var enabledVectors: Int
    /// The message address.
    public var address: UInt64
    /// The message data (the low bits select the vector when several are enabled).
    public var data: UInt16
    /// The per-vector mask bits (0 without per-vector masking).
    public var maskBits: UInt32
    /// Whether the capability has per-vector masking.
    public var perVectorMasking: Bool

    /// Decodes the MSI capability of `configuration`, or `nil` when it has none.
    public init?(configuration: PCIConfiguration) {
        guard let offset = configuration.msiCapabilityOffset else { return nil }
        let control = UInt16(configuration.read(offset: offset + 2, size: 2))
        let wide = control & 0x80 != 0
        perVectorMasking = control & 0x100 != 0
        enabled = control & 1 != 0
        enabledVectors = 1 << Int(min((control >> 4) & 0x7, 5))
        var address = UInt64(configuration.read(offset: offset + 4, size: 4))
        if wide { address |= UInt64(configuration.read(offset: offset + 8, size: 4)) << 32 }
        self.address = address
        let dataOffset = offset + (wide ? 0xc : 0x8)
        data = UInt16(configuration.read(offset: dataOffset, size: 2))
        maskBits = perVectorMasking ? configuration.read(offset: dataOffset + 4, size: 4) : 0
    }

    /// Whether `vector` is masked by its per-vector mask bit.
    public func isMasked(vector: Int) -> Bool {
        vector >= 0 && vector < 32 && maskBits & (1 << UInt32(vector)) != 0
    }

    /// The message data for `vector`: the programmed data with the vector number in its low bits.
    public func data(vector: Int) -> UInt16 {
        let low = UInt16(enabledVectors - 1)
        return (data & ~low) | (UInt16(truncatingIfNeeded: vector) & low)
    }

    /// The capability's length in bytes for a message control word.
    public static func capabilityLength(messageControl: UInt16) -> Int {
        let wide = messageControl & 0x80 != 0
        let masking = messageControl & 0x100 != 0
        switch (wide, masking) {
        case (false, false): return 10
        case (true, false): return 14
        case (false, true): return 20
        case (true, true): return 24
        }
    }
}
